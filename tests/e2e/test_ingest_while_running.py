"""``vdx ingest/search/info/index`` from another terminal while ``vdx bot`` holds the embedded database."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from core.config import Settings
from core.service import socket_path
from tests.e2e.fake_bot_api import DEFAULT_TOKEN, FakeBotApi
from tests.imageserver import make_photos

REPO = Path(__file__).resolve().parents[2]
CHAT = 4242


async def _vdx(env: dict[str, str], cwd: Path, *argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "core.cli",
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_commands_run_in_the_bot_and_new_images_reach_the_next_round(
    fake: FakeBotApi, tmp_path: Path, tiny_clip_dir: Path
) -> None:
    data = tmp_path / "data"
    photos = tmp_path / "photos"
    make_photos(photos, 12)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "VDX_DATA_DIR": str(data),
        "VDX_CLIP_MODEL": str(tiny_clip_dir),
        "VDX_DEVICE": "cpu",
        "VDX_TORCH_THREADS": "1",
        "TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN,
    }
    bot = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "core.cli",
        "bot",
        "--api-url",
        fake.base_url,
        cwd=REPO,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        sock = socket_path(Settings(data_dir=data))
        for _ in range(2400):
            if sock.exists() or bot.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert sock.exists(), "the bot did not start serving commands"

        fake.user_message(CHAT, CHAT, "a photo of a dog")
        await fake.wait_for_reply(CHAT, lambda t: "no images yet" in t, timeout=60)

        # From another directory, with a relative path, while the bot runs:
        code, out, err = await _vdx(env, tmp_path, "ingest", "folder", "photos", "--batch-size", "4")
        assert code == 0, err
        assert "12 new" in out and "Code: 76" not in err and "Cannot lock" not in err
        assert f"folder {photos.resolve()}" in out

        code, out, err = await _vdx(env, tmp_path, "search", "a dog", "-k", "3")
        assert code == 0 and len(out.strip().splitlines()) == 4, err
        code, out, err = await _vdx(env, tmp_path, "info")
        assert code == 0 and "rows:        12" in out and f"model:       {tiny_clip_dir}" in out, err
        code, out, err = await _vdx(env, tmp_path, "index", "status")
        assert code == 0 and out.strip() == "index: none", err
        code, out, err = await _vdx(env, tmp_path, "ingest", "folder", "photos")
        assert code == 0 and "12 unchanged" in out, err
        code, out, err = await _vdx(env, tmp_path, "ingest", "folder", "nowhere")
        assert code == 2 and err.strip().endswith(f"no such directory: {(tmp_path / 'nowhere').resolve()}")

        # The running bot's next round draws from the new images: no restart. (Random-noise photos
        # embedded by a random model are near-duplicates of each other, so the round may hold one.)
        since = fake.mark()
        fake.user_message(CHAT, CHAT, "a photo of a dog")
        await fake.wait_for_reply(CHAT, lambda t: True, timeout=60, since=since)
        sent = [
            c
            for m in ("sendMediaGroup", "sendPhoto")
            for c in fake.find(m, lambda c: c.chat_id == CHAT, since=since)
        ]
        assert sent, "the bot sent no images from the new collection"
        assert not fake.find(
            "sendMessage", lambda c: "no images yet" in str(c.params.get("text")), since=since
        )
    finally:
        if bot.returncode is None:
            bot.send_signal(signal.SIGINT)
        _, err_bytes = await asyncio.wait_for(bot.communicate(), 60)
    assert "Traceback" not in err_bytes.decode()
    assert not sock.exists()  # the socket goes with the bot


async def test_the_bot_refuses_a_collection_of_another_model_at_start_up(
    fake: FakeBotApi, tmp_path: Path, tiny_clip_dir: Path
) -> None:
    from tests.tiny_clip import build_clip_dir

    data = tmp_path / "data"
    make_photos(tmp_path / "photos", 3)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "VDX_DATA_DIR": str(data),
        "VDX_DEVICE": "cpu",
        "VDX_TORCH_THREADS": "1",
        "TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN,
    }
    code, _, err = await _vdx(env, tmp_path, "ingest", "folder", "photos", "--model", str(tiny_clip_dir))
    assert code == 0, err
    other = build_clip_dir(tmp_path / "other", seed=3)  # the same size, other weights
    code, out, err = await _vdx(env, tmp_path, "bot", "--api-url", fake.base_url, "--model", str(other))
    assert code == 2 and "the collection was embedded with" in err, out + err
    assert str(tiny_clip_dir) in err and str(other) in err and "Traceback" not in err
