"""Real weights, when this machine has them: ``VDX_TEST_CLIP_MODEL`` (any supported dual encoder) and
``VDX_TEST_TEXT_MODEL`` (an M-CLIP tower for it) name local directories; otherwise these tests skip.

They rank the labelled photos in ``../shared/photos`` (or ``VDX_TEST_PHOTOS``) by a concept and expect
the concept's own class on top, in English with the model's own text tower and in German, Russian
and Chinese with the multilingual tower.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.encoder import ClipEncoder
from core.query import compose, parse

PHOTOS = Path(os.environ.get("VDX_TEST_PHOTOS", Path(__file__).resolve().parents[2] / "../shared/photos"))
CLASSES = {
    "fish": {
        "en": "a photo of a fish",
        "de": "ein Foto von einem Fisch",
        "ru": "фотография рыбы",
        "zh": "鱼的照片",
    },
    "monument": {
        "en": "a photo of a famous monument",
        "de": "ein Foto von einem berühmten Denkmal",
        "ru": "фотография знаменитого памятника",
        "zh": "著名纪念碑的照片",
    },
    "tool": {
        "en": "a photo of a tool",
        "de": "ein Foto von einem Werkzeug",
        "ru": "фотография инструмента",
        "zh": "工具的照片",
    },
    "bird": {
        "en": "a photo of a bird",
        "de": "ein Foto von einem Vogel",
        "ru": "фотография птицы",
        "zh": "鸟的照片",
    },
}
PER_CLASS = 6


def _local(name: str) -> Path:
    value = os.environ.get(name, "")
    if not value or not Path(value).is_dir():
        pytest.skip(f"{name} does not name a local model directory")
    return Path(value)


@pytest.fixture(scope="module")
def labelled() -> tuple[list[Image.Image], list[str]]:
    if not (PHOTOS / "labels.csv").is_file():
        pytest.skip(f"no labelled photos at {PHOTOS}")
    with open(PHOTOS / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["coarse_label"] in CLASSES]
    chosen: dict[str, list[str]] = {}
    for r in rows:
        if len(chosen.setdefault(r["coarse_label"], [])) < PER_CLASS:
            chosen[r["coarse_label"]].append(r["path"])
    images, labels = [], []
    for cls, paths in chosen.items():
        for p in paths:
            with Image.open(PHOTOS / p) as im:
                images.append(im.convert("RGB"))
            labels.append(cls)
    return images, labels


def _precision(encoder: ClipEncoder, images: list[Image.Image], labels: list[str], lang: str) -> float:
    X = encoder.embed_images(images)
    hits = []
    for cls, words in CLASSES.items():
        q = compose(parse(words[lang]), encoder.embed_texts)
        top = np.argsort(-(X @ q))[:PER_CLASS]
        hits.append(np.mean([labels[i] == cls for i in top]))
    return float(np.mean(hits))


def test_real_model_ranks_a_concepts_photos_first(labelled: tuple[list[Image.Image], list[str]]) -> None:
    encoder = ClipEncoder(str(_local("VDX_TEST_CLIP_MODEL")), device="cpu")
    images, labels = labelled
    assert _precision(encoder, images, labels, "en") >= 0.6  # chance is 0.25
    # minus a class pushes that class out of a broad concept's top
    X = encoder.embed_images(images)
    broad, minus = (compose(parse(t), encoder.embed_texts) for t in ("an animal", "an animal -fish"))
    fish = [lab == "fish" for lab in labels]
    top = PER_CLASS * 2
    assert sum(fish[i] for i in np.argsort(-(X @ minus))[:top]) <= sum(
        fish[i] for i in np.argsort(-(X @ broad))[:top]
    )


@pytest.mark.parametrize("lang", ["de", "ru", "zh"])
def test_real_text_tower_understands_other_languages(
    labelled: tuple[list[Image.Image], list[str]], lang: str
) -> None:
    encoder = ClipEncoder(
        str(_local("VDX_TEST_CLIP_MODEL")), device="cpu", text_model=str(_local("VDX_TEST_TEXT_MODEL"))
    )
    images, labels = labelled
    assert _precision(encoder, images, labels, lang) >= 0.6
