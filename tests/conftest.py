"""Shared fixtures: isolated data dir, single-threaded torch, a tiny CLIP model on disk."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

from pathlib import Path

import pytest
import torch

from core.config import Settings
from tests.tiny_clip import build_clip_dir

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 16-d CLIP saved with tokenizer and processor, loadable with ``from_pretrained(dir)``."""
    return build_clip_dir(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every test at its own data dir; no test sees the developer's environment."""
    for name in list(os.environ):
        if name.startswith("VDX_") and not name.startswith("VDX_TEST_") or name == "TELEGRAM_BOT_TOKEN":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VDX_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def settings(tmp_path: Path, tiny_clip_dir: Path) -> Settings:
    """Settings for an embedded database under ``tmp_path`` and the tiny model, one torch thread."""
    return Settings(data_dir=tmp_path / "data", clip_model=str(tiny_clip_dir), device="cpu", torch_threads=1)
