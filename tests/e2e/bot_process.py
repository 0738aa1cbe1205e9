"""``vdx bot`` as a separate process against the fake Bot API: for kill -9, start-up output and memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 180.0  # importing torch and loading the model on a shared, loaded machine


def bot_env(settings: Settings, api_url: str, token: str) -> dict[str, str]:
    """The environment ``vdx bot`` reads: the test's data dir and model, the fake server's URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VDX_") and k != "TELEGRAM_BOT_TOKEN"}
    env.update(
        {
            "VDX_DATA_DIR": str(settings.data_dir),
            "VDX_CLIP_MODEL": settings.clip_model,
            "VDX_DEVICE": "cpu",
            "VDX_TORCH_THREADS": "1",
            "VDX_ALBUM_SIZE": str(settings.album_size),
            "TELEGRAM_BOT_TOKEN": token,
            "VDX_TELEGRAM_API_URL": api_url,
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONPATH": str(ROOT),
        }
    )
    if settings.allowed_chats:
        env["VDX_ALLOWED_CHATS"] = ",".join(str(c) for c in settings.allowed_chats)
    return env


@contextmanager
def bot_process(
    settings: Settings, api_url: str, token: str, output: Path, *args: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m core.cli [args] bot``, stdout and stderr appended to ``output``; killed at exit."""
    with output.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "core.cli", *args, "bot"],
            env=bot_env(settings, api_url, token),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)


def kill_9(proc: subprocess.Popen[bytes]) -> None:
    """``kill -9``: no shutdown, no final ``getUpdates`` confirming what was handled."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
