"""The container's health check: a fresh heartbeat passes, a stale or missing one fails with one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bot.health import STALE_AFTER_S, healthy

REPO = Path(__file__).resolve().parents[2]


def test_fresh_heartbeat_is_healthy_and_a_stale_or_missing_one_is_not(tmp_path: Path) -> None:
    beat = tmp_path / "bot.heartbeat"
    assert not healthy(beat)
    beat.touch()
    assert healthy(beat)
    old = time.time() - STALE_AFTER_S - 1
    os.utime(beat, (old, old))
    assert not healthy(beat)


def test_health_command_reads_the_data_dir(tmp_path: Path) -> None:
    env = {**os.environ, "VDX_DATA_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "bot.health"]
    missing = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "heartbeat" in missing.stderr
    (tmp_path / "bot.heartbeat").touch()
    assert subprocess.run(command, env=env, timeout=60).returncode == 0
