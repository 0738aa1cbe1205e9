"""A hub model on a machine that cannot reach the Hugging Face hub: told in seconds, or the cached copy used.

The hub is simulated on loopback through ``HF_ENDPOINT`` (read by huggingface_hub itself): a closed
port and a port that accepts connections and never answers. Each test runs ``vdx ingest folder``
in a subprocess, because huggingface_hub reads its environment once, at import.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.imageserver import make_photos

REPO = Path(__file__).resolve().parents[2]
MESSAGE_WITHIN_S = 15
HUB_MODEL = "vdx-tests/tiny-clip"


@pytest.fixture(params=["closed", "silent"])
def hub_endpoint(request: pytest.FixtureRequest) -> Iterator[str]:
    """A loopback "hub" that refuses connections, or accepts them and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        if request.param == "silent":
            s.listen(64)
            yield f"http://127.0.0.1:{port}"
            return
    yield f"http://127.0.0.1:{port}"


def _ingest(tmp_path: Path, endpoint: str, model: str) -> tuple[int, str, float]:
    make_photos(tmp_path / "photos", 3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VDX_", "HF_", "TRANSFORMERS_"))}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(tmp_path / "hf"),
        VDX_DATA_DIR=str(tmp_path / "data"),
        VDX_CLIP_MODEL=model,
        VDX_DEVICE="cpu",
        VDX_TORCH_THREADS="1",
        PYTHONPATH=str(REPO),
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "core.cli", "ingest", "folder", str(tmp_path / "photos")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def test_unreachable_hub_is_told_within_15_seconds(tmp_path: Path, hub_endpoint: str) -> None:
    code, output, elapsed = _ingest(tmp_path, hub_endpoint, HUB_MODEL)
    errors = [line for line in output.splitlines() if line.startswith("vdx: error:")]
    assert code == 2 and len(errors) == 1, output
    assert elapsed < MESSAGE_WITHIN_S, f"the model message came after {elapsed:.1f} s"
    assert "hub is unreachable" in errors[0] and hub_endpoint in errors[0]
    assert "VDX_CLIP_MODEL" in errors[0] and "local model directory" in errors[0]
    assert "Retrying" not in output and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1, output


def test_unreachable_hub_uses_the_cached_model(
    tmp_path: Path, hub_endpoint: str, tiny_clip_dir: Path
) -> None:
    # the layout huggingface_hub's cache keeps: refs/main names a snapshot holding the files
    repo = tmp_path / "hf" / "hub" / f"models--{HUB_MODEL.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_clip_dir, repo / "snapshots" / commit)
    code, output, elapsed = _ingest(tmp_path, hub_endpoint, HUB_MODEL)
    assert code == 0 and "3 new" in output, output
    warnings = [line for line in output.splitlines() if "hub is unreachable" in line]
    assert len(warnings) == 1 and "HF_HUB_OFFLINE=1" in warnings[0], output
    assert "Retrying" not in output
