"""``scripts/run.sh`` on a copy of the project: it installs once, then starts without the package index.

The copy gets its own ``.venv`` whose only packages come from the running environment (a ``.pth``
line), so the real ``scripts/install.sh`` runs (``pip install -e .`` of the copy) without
downloading anything. The second start is made with pip pointed at nothing: it must not need it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.e2e.fake_bot_api import DEFAULT_TOKEN, FakeBotApi
from tests.imageserver import make_photos

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the project whose ``.venv`` sees this environment's packages and has none of its own."""
    root = tmp_path / "vdx"
    root.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, root / name)
    for name in ("core", "bot", "scripts"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / ".venv")], check=True)
    venv_site = subprocess.run(
        [
            str(root / ".venv" / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(venv_site, "shared.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


def _env(tmp_path: Path, tiny_clip_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VDX_") and k not in ("TELEGRAM_BOT_TOKEN", "PYTHONPATH")
    }
    env.update(
        VDX_DATA_DIR=str(tmp_path / "data"),
        VDX_CLIP_MODEL=str(tiny_clip_dir),
        VDX_DEVICE="cpu",
        VDX_TORCH_THREADS="1",
        PYTHON=sys.executable,
        **extra,
    )
    return env


async def test_run_twice_installs_once_and_checks_the_token_before_ingest(
    checkout: Path, tmp_path: Path, tiny_clip_dir: Path
) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 3)
    run_sh = ["bash", str(checkout / "scripts" / "run.sh"), str(photos)]

    # First start: installs, then stops at the missing token, before any photo is ingested.
    first = await asyncio.to_thread(
        subprocess.run, run_sh, env=_env(tmp_path, tiny_clip_dir), capture_output=True, text=True, timeout=600
    )
    assert first.returncode == 2, first.stdout + first.stderr
    assert "TELEGRAM_BOT_TOKEN is not set" in first.stderr
    assert "up to date" not in first.stdout
    stamp = checkout / ".venv" / ".vdx-installed"
    assert stamp.exists() and (checkout / ".venv" / "bin" / "vdx").exists()
    assert not (tmp_path / "data" / "chdb").exists(), "ingested before the token was checked"
    installed = sorted(p.name for p in Path(stamp.parent, "lib").rglob("*.dist-info"))

    # Second start, with pip unable to reach any package source: no install, check, ingest, ready.
    async with FakeBotApi() as fake:
        offline = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path / "no-wheels")}
        env = _env(
            tmp_path, tiny_clip_dir, TELEGRAM_BOT_TOKEN=DEFAULT_TOKEN, VDX_TELEGRAM_API_URL=fake.base_url
        )
        proc = await asyncio.create_subprocess_exec(
            *run_sh, env={**env, **offline}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out: list[str] = []
        try:
            assert proc.stdout is not None and proc.stderr is not None
            while not any(" ready: " in line for line in out):
                line = (await asyncio.wait_for(proc.stdout.readline(), 300)).decode()
                assert line, "run.sh ended before the bot was ready: " + "".join(out)
                out.append(line)
            proc.send_signal(signal.SIGTERM)  # run.sh exec'd the bot: the signal reaches it
            code = await asyncio.wait_for(proc.wait(), 60)
            err = (await proc.stderr.read()).decode()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    text = "".join(out)
    assert "up to date" in text, text + err
    assert "the token works" in text and "3 new" in text, text + err
    assert text.index("the token works") < text.index("3 new") < text.index(" ready: ")
    assert code == 0, err
    assert sorted(p.name for p in Path(stamp.parent, "lib").rglob("*.dist-info")) == installed
