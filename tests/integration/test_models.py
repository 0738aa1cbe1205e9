"""Every supported model family, and the M-CLIP text tower, built tiny and random and loaded the product's way.

Each model is saved with ``save_pretrained`` (with its processor) and loaded by ``ClipEncoder`` through
``AutoModel`` / ``AutoProcessor``; then a folder of photos is ingested into the real embedded chDB and
searched with ``vdx search`` (plain and composite concepts, a photo plus words).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cli import main
from core.encoder import ClipEncoder
from core.errors import ModelLoadError, TextModelMismatch
from core.query import compose, parse
from core.store import open_store
from tests.imageserver import make_photos
from tests.tiny_clip import build_clip_dir
from tests.tiny_models import (
    build_altclip_dir,
    build_chinese_clip_dir,
    build_mclip_dir,
    build_siglip2_dir,
    build_siglip_dir,
)

# family -> (builder, the name ClipEncoder.family reports, embedding size, tokens read)
FAMILIES: dict[str, tuple[Callable[[Path], Path], str, int, int]] = {
    "clip": (build_clip_dir, "CLIP", 16, 77),
    "siglip": (build_siglip_dir, "SigLIP", 32, 64),
    "siglip2": (build_siglip2_dir, "SigLIP 2", 32, 64),
    "chinese_clip": (build_chinese_clip_dir, "ChineseCLIP", 16, 512),
    "altclip": (build_altclip_dir, "AltCLIP", 16, 512),
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {name: build(root / name) for name, (build, *_) in FAMILIES.items()}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request: pytest.FixtureRequest, model_dirs: dict[str, Path]) -> Iterator[tuple[str, ClipEncoder]]:
    enc = ClipEncoder(str(model_dirs[request.param]), device="cpu", torch_threads=1, batch_size=4)
    yield request.param, enc
    enc.close()


def test_each_family_loads_with_its_own_rules(family: tuple[str, ClipEncoder]) -> None:
    name, enc = family
    _, label, dim, max_tokens = FAMILIES[name]
    assert enc.dim == dim  # from the config, before any weights load
    assert enc.family == label
    texts = ["a red car", "ein rotes Auto", "красная машина", "红色的汽车", "a cat wearing a hat " * 3]
    v = enc.embed_texts(texts)
    assert v.shape == (5, dim) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # A concept's vector does not depend on the other texts in its batch (SigLIP: max_length padding).
    np.testing.assert_allclose(v[0], enc.embed_texts(["a red car"])[0], atol=1e-5)
    assert enc.text_truncated("a cat " * (max_tokens + 5)) and not enc.text_truncated("a cat")
    images = [Image.new("RGB", (90, 40), (200, 20, 20)), Image.new("L", (50, 120), 90)]
    iv = enc.embed_images(images)
    assert iv.shape == (2, dim)
    np.testing.assert_allclose(iv[1], enc.embed_images(images[1:])[0], atol=1e-5)


def test_siglip_needs_its_padding_rule(model_dirs: dict[str, Path]) -> None:
    """Padding to the batch's longest text (CLIP's way) would make a SigLIP vector depend on its batch."""
    import torch
    from transformers import AutoModel, AutoProcessor

    path = model_dirs["siglip"]
    model, processor = AutoModel.from_pretrained(path), AutoProcessor.from_pretrained(path)

    def by_batch_padding(texts: list[str]) -> np.ndarray:
        tokens = processor.tokenizer(texts, padding=True, return_tensors="pt")
        with torch.inference_mode():
            out = model.get_text_features(**tokens)
        return torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1).numpy()

    alone, batched = by_batch_padding(["a cat"])[0], by_batch_padding(["a cat", "a red car on the street"])[0]
    assert not np.allclose(alone, batched, atol=1e-3)
    enc = ClipEncoder(str(path), device="cpu", torch_threads=1)
    np.testing.assert_allclose(
        enc.embed_texts(["a cat"])[0], enc.embed_texts(["a cat", "a red car on the street"])[0], atol=1e-5
    )


def _vdx(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_each_family_ingests_and_searches(
    family: tuple[str, ClipEncoder], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, enc = family
    photos = tmp_path / "photos"
    make_photos(photos, 6)
    common = [
        "--data-dir",
        str(tmp_path / "data"),
        "--model",
        enc.model_name,
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    code, out, err = _vdx(capsys, *common, "ingest", "folder", str(photos), "--batch-size", "4")
    assert code == 0, err
    code, out, err = _vdx(capsys, *common, "info", "--json")
    info = json.loads(out)
    assert (info["rows"], info["dim"], info["model"]) == (6, enc.dim, enc.model_name)

    code, out, err = _vdx(capsys, *common, "search", "a red car -truck", "-k", "6", "--json")
    assert code == 0, err
    hits = json.loads(out)
    assert len(hits) == 6
    # the ranking is the exact cosine ranking of the stored vectors to the composite vector
    store = open_store(_settings(tmp_path, enc))
    try:
        ids, X = store.vectors([h["id"] for h in hits])
    finally:
        store.close()
    q = compose(parse("a red car -truck"), enc.embed_texts)
    scores = dict(zip(ids, X @ q, strict=True))
    assert [h["id"] for h in hits] == sorted(scores, key=lambda i: -scores[i])

    photo = next(p for p in photos.rglob("*") if p.suffix == ".png")
    code, out, err = _vdx(capsys, *common, "search", "at night", "--image", str(photo), "-k", "3", "--json")
    assert code == 0 and len(json.loads(out)) == 3, err


def _settings(tmp_path: Path, enc: ClipEncoder):  # type: ignore[no-untyped-def]
    from core.config import Settings

    return Settings(data_dir=tmp_path / "data", clip_model=enc.model_name, device="cpu", torch_threads=1)


def test_bad_search_input_is_one_line(
    tiny_clip_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--data-dir", str(tmp_path / "data"), "--model", str(tiny_clip_dir), "--device", "cpu"]
    code, _, err = _vdx(capsys, *common, "search", "-truck -bus")
    assert code == 2 and err.count("\n") == 1 and "what to look for" in err
    code, _, err = _vdx(capsys, *common, "search", "x", "--image", str(tmp_path / "missing.jpg"))
    assert code == 2 and err.count("\n") == 1 and "no such image" in err
    (tmp_path / "notes.jpg").write_text("not a photo")
    code, _, err = _vdx(capsys, *common, "search", "x", "--image", str(tmp_path / "notes.jpg"))
    assert code == 2 and err.count("\n") == 1 and "cannot read" in err


# --- the M-CLIP text tower ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP saved under the hub model's own name, as a local copy usually is."""
    return build_clip_dir(tmp_path_factory.mktemp("hub") / "clip-vit-base-patch32")


@pytest.fixture(scope="module")
def mclip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny M-CLIP tower named like the published one, whose table says it pairs with ViT-B/32."""
    return build_mclip_dir(tmp_path_factory.mktemp("mclip") / "XLM-Roberta-Large-Vit-B-32", image_model=None)


def _by_hand(path: Path, texts: list[str]) -> np.ndarray:
    """M-CLIP's forward pass written out: XLM-R, mean over the attention mask, the linear layer."""
    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    config = json.loads((path / "config.json").read_text())
    state = torch.load(path / "pytorch_model.bin", weights_only=True)
    xlmr = XLMRobertaModel(XLMRobertaConfig.from_pretrained(path / config["modelBase"]))
    xlmr.load_state_dict({k[12:]: v for k, v in state.items() if k.startswith("transformer.")})
    tokens = AutoTokenizer.from_pretrained(path)(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = xlmr.eval()(**tokens)[0]
        mask = tokens["attention_mask"].unsqueeze(2)
        mean = (hidden * mask).sum(1) / mask.sum(1)
        out = mean @ state["LinearTransformation.weight"].T + state["LinearTransformation.bias"]
    return torch.nn.functional.normalize(out, dim=-1).numpy()


def test_mclip_tower_embeds_concepts_and_images_stay_with_the_image_model(
    clip_dir: Path, mclip_dir: Path
) -> None:
    plain = ClipEncoder(str(clip_dir), device="cpu", torch_threads=1)
    paired = ClipEncoder(str(clip_dir), device="cpu", torch_threads=1, text_model=str(mclip_dir))
    texts = ["ein Hund im Schnee", "собака на снегу", "一只猫", "a dog in the snow"]
    v = paired.embed_texts(texts)
    np.testing.assert_allclose(v, _by_hand(mclip_dir, texts), atol=1e-5)
    assert not np.allclose(v[3], plain.embed_texts(texts[3:])[0], atol=1e-3)  # not CLIP's own text tower
    image = Image.new("RGB", (50, 40), (10, 120, 200))
    np.testing.assert_allclose(paired.embed_images([image]), plain.embed_images([image]), atol=1e-6)
    assert paired.text_tower is not None and paired.text_tower.trained_for == "openai/clip-vit-base-patch32"
    assert paired.text_truncated("Hund " * 600) and not paired.text_truncated("ein Hund")


def test_cli_searches_an_existing_collection_with_the_tower(
    clip_dir: Path, mclip_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 5)
    common = ["--data-dir", str(tmp_path / "data"), "--model", str(clip_dir), "--device", "cpu"]
    assert _vdx(capsys, *common, "ingest", "folder", str(photos))[0] == 0
    code, out, err = _vdx(
        capsys, *common, "--text-model", str(mclip_dir), "search", "eine Katze -Hund", "--json"
    )
    assert code == 0, err
    assert len(json.loads(out)) == 5
    code, out, _ = _vdx(capsys, *common, "--text-model", str(mclip_dir), "info")
    assert str(mclip_dir) in out and str(clip_dir) in out


def test_a_tower_for_another_image_model_is_refused(
    clip_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = build_mclip_dir(tmp_path / "XLM-Roberta-Large-Vit-L-14", image_model=None)
    enc = ClipEncoder(str(clip_dir), device="cpu", text_model=str(other))
    with pytest.raises(TextModelMismatch) as err:
        enc.embed_texts(["ein Hund"])
    message = str(err.value)
    assert (
        "openai/clip-vit-large-patch14" in message
        and str(clip_dir) in message
        and "VDX_TEXT_MODEL" in message
    )
    # from the command line: one line, exit 2, nothing embedded
    photos = tmp_path / "photos"
    make_photos(photos, 2)
    common = ["--data-dir", str(tmp_path / "data"), "--model", str(clip_dir), "--device", "cpu"]
    assert _vdx(capsys, *common, "ingest", "folder", str(photos))[0] == 0
    code, _, err_text = _vdx(capsys, *common, "--text-model", str(other), "search", "ein Hund")
    assert code == 2 and err_text.count("\n") == 1 and "trained for" in err_text


def test_a_tower_that_names_no_image_model_is_refused(clip_dir: Path, tmp_path: Path) -> None:
    unknown = build_mclip_dir(tmp_path / "my-tower", image_model=None)
    with pytest.raises(TextModelMismatch, match="does not say which image model"):
        ClipEncoder(str(clip_dir), device="cpu", text_model=str(unknown)).embed_texts(["x"])


def test_a_tower_of_another_size_is_refused(clip_dir: Path, tmp_path: Path) -> None:
    wide = build_mclip_dir(tmp_path / "wide", num_dims=24, image_model=str(clip_dir))
    with pytest.raises(ModelLoadError, match="24-d"):
        ClipEncoder(str(clip_dir), device="cpu", text_model=str(wide)).embed_texts(["x"])


def test_a_text_model_that_is_not_mclip_names_the_setting(clip_dir: Path, tiny_clip_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="VDX_TEXT_MODEL") as err:
        ClipEncoder(str(clip_dir), device="cpu", text_model=str(tiny_clip_dir)).embed_texts(["x"])
    assert "M-CLIP" in str(err.value)
    with pytest.raises(ModelLoadError, match="VDX_TEXT_MODEL"):
        ClipEncoder(str(clip_dir), device="cpu", text_model="/no/such/tower").embed_texts(["x"])
