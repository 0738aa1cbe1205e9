"""The CLIP encoder on a tiny random model loaded through the product's ``from_pretrained(dir)`` path."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.config import Settings
from core.encoder import ClipEncoder
from core.errors import ModelLoadError


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> Iterator[ClipEncoder]:
    enc = ClipEncoder(str(tiny_clip_dir), device="cpu", torch_threads=1, batch_size=4)
    yield enc
    enc.close()


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)),
        Image.new("L", (33, 50), 90),  # grey: converted to RGB
        Image.new("RGBA", (300, 120), (200, 10, 10, 128)),  # alpha: converted to RGB
        Image.new("P", (64, 64)),
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)),
    ]


def test_texts_give_unit_float32_rows_of_model_dim(encoder: ClipEncoder) -> None:
    v = encoder.embed_texts(["a house by the lake", "a dog", "🐶 كلب", "'; DROP TABLE images; --", "x", "y"])
    assert encoder.dim == 16
    assert v.shape == (6, 16) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_embeddings_are_deterministic_and_batch_independent(encoder: ClipEncoder) -> None:
    texts = ["a red car", "a mountain at dusk", "two cats", "a bowl of soup", "a bicycle"]
    a = encoder.embed_texts(texts)
    b = encoder.embed_texts(texts[::-1])[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a[1], encoder.embed_texts(["a mountain at dusk"])[0], atol=1e-5)
    assert not np.allclose(a[0], a[1])


def test_images_of_any_mode_give_unit_rows(encoder: ClipEncoder) -> None:
    imgs = _images()
    v = encoder.embed_images(imgs)
    assert v.shape == (5, 16) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(v[0], encoder.embed_images(imgs[:1])[0], atol=1e-5)


def test_long_text_is_truncated_not_rejected(encoder: ClipEncoder) -> None:
    long = "a very long description of a sunny beach with palm trees " * 60  # ~600 tokens
    assert encoder.text_truncated(long)
    assert not encoder.text_truncated("a sunny beach")
    v = encoder.embed_texts([long, "a sunny beach"])
    assert v.shape == (2, 16) and np.isfinite(v).all()
    # Only the first 77 tokens count: more text past the cut changes nothing.
    np.testing.assert_allclose(v[0], encoder.embed_texts([long + " and a volcano"])[0], atol=1e-5)


def test_empty_inputs_give_empty_arrays(encoder: ClipEncoder) -> None:
    assert encoder.embed_texts([]).shape == (0, 16)
    assert encoder.embed_images([]).shape == (0, 16)


async def test_async_wrappers_match_sync(encoder: ClipEncoder) -> None:
    np.testing.assert_allclose(
        await encoder.aembed_texts(["a dog"]), encoder.embed_texts(["a dog"]), atol=1e-6
    )
    imgs = _images()[:2]
    np.testing.assert_allclose(await encoder.aembed_images(imgs), encoder.embed_images(imgs), atol=1e-6)


def test_from_settings_uses_model_device_and_threads(tiny_clip_dir: Path) -> None:
    enc = ClipEncoder.from_settings(Settings(clip_model=str(tiny_clip_dir), device="cpu", torch_threads=1))
    assert (enc.model_name, enc.requested_device, enc.torch_threads) == (str(tiny_clip_dir), "cpu", 1)
    assert enc.dim == 16  # from the config, before the weights load
    assert enc.device == "cpu"


@pytest.mark.parametrize("name", ["openai/clip-vit-base-patch32", "/no/such/model/dir"])
def test_unloadable_model_names_the_setting_and_the_offline_fix(name: str) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"  # conftest sets it; the hub name must fail fast, not hang
    enc = ClipEncoder(name, device="cpu")
    with pytest.raises(ModelLoadError) as err:
        enc.embed_texts(["a dog"])
    message = str(err.value)
    assert "VDX_CLIP_MODEL" in message and "local model directory" in message and name in message


def test_directory_without_weights_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="VDX_CLIP_MODEL"):
        ClipEncoder(str(tmp_path), device="cpu").embed_images([Image.new("RGB", (8, 8))])
