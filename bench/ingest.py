"""Ingest benchmark: ``vdx ingest folder`` images/s against encoder-only images/s, same model and batch size.

Run ``python -m bench.ingest`` (full: ViT-B/32 architecture with random weights, 192 photos from
``../shared/photos``, 4 alternating rounds) or ``python -m bench.ingest --quick`` (tiny model, smoke run).
Random weights cost exactly what trained ones do: the same layers and matrix sizes.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from bench import publish
from core.config import Settings
from core.encoder import ClipEncoder
from core.ingest import ingest_folder, read_folder
from core.store import open_store
from tests.tiny_clip import VIT_B32, build_clip_dir

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "photos"
CACHE = Path(tempfile.gettempdir()) / "vdx-bench"


def model_dir(quick: bool) -> Path:
    """A saved random CLIP: ViT-B/32-shaped for the full run, tiny for the smoke run (built once, reused)."""
    out = CACHE / ("tiny-clip" if quick else "vit-b32-random")
    if not (out / "config.json").exists():
        build_clip_dir(out, **({} if quick else VIT_B32))
    return out


def _decoded(paths: list[Path]) -> list[Image.Image]:
    """The photos decoded to RGB and fitted to 1280 px, as ingest hands them to the model."""
    images = []
    for p in paths:
        with Image.open(p) as im:
            rgb = im.convert("RGB")
            rgb.thumbnail((1280, 1280), Image.Resampling.BICUBIC)
            images.append(rgb)
    return images


def _encoder_only(encoder: ClipEncoder, images: list[Image.Image], batch: int) -> tuple[float, float]:
    """(images/s of ``embed_images`` on decoded images, images/s of the model on ready pixel tensors)."""
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        encoder.embed_images(images[i : i + batch])
    with_preprocess = len(images) / (time.perf_counter() - start)
    pixels = [encoder.preprocess_images(images[i : i + batch]) for i in range(0, len(images), batch)]
    start = time.perf_counter()
    for p in pixels:
        encoder.embed_pixels(p)
    model_only = len(images) / (time.perf_counter() - start)
    return with_preprocess, model_only


def run(quick: bool = False) -> str:
    """Measure side by side, print the markdown section and write it to ``bench/results/ingest.md``."""
    n_images = 24 if quick else 192
    rounds = 1 if quick else 4
    batch = 32
    workers = 2
    encoder = ClipEncoder(str(model_dir(quick)), device="cpu", batch_size=batch)
    paths = [Path(im.location) for im in read_folder(PHOTOS, limit=n_images)]
    images = _decoded(paths)
    encoder.embed_images(images[:batch])  # load and warm up outside the timings

    enc_rates: list[float] = []
    model_rates: list[float] = []
    ingest_rates: list[float] = []
    rerun_seconds: list[float] = []
    with tempfile.TemporaryDirectory(prefix="vdx-bench-ingest-") as tmp:
        for r in range(rounds):

            def encoder_round() -> None:
                with_pre, model_only = _encoder_only(encoder, images, batch)
                enc_rates.append(with_pre)
                model_rates.append(model_only)

            def ingest_round(r: int = r) -> None:
                settings = Settings(
                    data_dir=Path(tmp) / f"round{r}", clip_model=encoder.model_name, device="cpu"
                )
                store = open_store(settings)
                try:
                    report = ingest_folder(
                        PHOTOS,
                        store,
                        encoder,
                        settings,
                        limit=n_images,
                        workers=workers,
                        batch_size=batch,
                        progress=False,
                    )
                    assert report.stored == n_images, report.summary()
                    ingest_rates.append(report.images_per_second)
                    again = ingest_folder(PHOTOS, store, encoder, settings, limit=n_images, progress=False)
                    assert again.stored == 0 and again.skipped_existing == n_images
                    rerun_seconds.append(again.seconds)
                finally:
                    store.close()

            # Alternate the order so that a burst of load from other work does not favour one side.
            for step in (encoder_round, ingest_round) if r % 2 == 0 else (ingest_round, encoder_round):
                step()

    enc, model, ing = (statistics.median(x) for x in (enc_rates, model_rates, ingest_rates))
    ratio_enc = statistics.median(i / e for i, e in zip(ingest_rates, enc_rates, strict=True))
    ratio_model = statistics.median(i / m for i, m in zip(ingest_rates, model_rates, strict=True))
    model_name = (
        "tiny random CLIP (16-d, smoke run)" if quick else "ViT-B/32 architecture, random weights (512-d)"
    )
    text = f"""## Ingest throughput

`vdx ingest folder` (read, decode, EXIF-transpose, write the ≤1280 px JPEG thumbnail and preprocess in
{workers} worker threads at nice 10; embed and insert batches of {
        batch
    } into embedded chDB in the main thread) against
the encoder alone on the same {n_images} photos from `shared/photos`, already decoded in memory, at the same
batch size: `embed_images` (CLIP preprocessing + model) and the model alone on ready pixel tensors.
Model: {model_name}, CPU, torch {torch.__version__} with {torch.get_num_threads()} threads.
Machine: {os.cpu_count()}-core x86-64 CPU, shared with other work, no GPU; Python {platform.python_version()}.
{rounds} round(s) in one run, alternating which side goes first; each ingest starts from an empty database.

| measurement | images/s (median) | ingest ÷ this (median of per-round ratios) |
| --- | ---: | ---: |
| encoder only: `embed_images` (preprocess + model) | {enc:.1f} | {ratio_enc:.2f} |
| encoder only: model on ready pixel tensors | {model:.1f} | {ratio_model:.2f} |
| **`vdx ingest folder`** (end to end, into chDB) | **{ing:.1f}** | 1.00 |

Second run over the same folder (every id already stored, the model untouched): median
{statistics.median(rerun_seconds):.2f} s for {n_images} photos. Goal: ingest ≥ 0.9 × encoder-only.
Per round (encoder `embed_images` / model only / ingest, images/s): {
        "; ".join(
            f"{e:.1f} / {m:.1f} / {i:.1f}"
            for e, m, i in zip(enc_rates, model_rates, ingest_rates, strict=True)
        )
    }.
"""
    return publish("ingest", text, quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny model, 24 photos, one round")
    run(quick=parser.parse_args().quick)
