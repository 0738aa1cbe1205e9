"""``vdx bot`` as a person starts it: one ready line, or one error line and exit 2 within 30 s.

Each test runs the real command in a subprocess against a loopback server: the fake Bot API, a
closed port, a host that accepts connections and never answers, and an HTTP server that is not a
Bot API server (404 for everything).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.fake_bot_api import BOT_USERNAME, DEFAULT_TOKEN, FakeBotApi

REPO = Path(__file__).resolve().parents[2]
GIVE_UP_S = 30  # the most a person should wait to learn that Telegram cannot be reached
SECRET_TOKEN = "4242:startup-test-SECRET-token"


def _env(tmp_path: Path, tiny_clip_dir: Path, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VDX_")}
    env.update(
        TELEGRAM_BOT_TOKEN=token,
        VDX_DATA_DIR=str(tmp_path / "data"),
        VDX_CLIP_MODEL=str(tiny_clip_dir),
        VDX_DEVICE="cpu",
        VDX_TORCH_THREADS="1",
        PYTHONPATH=str(REPO),
    )
    return env


def _vdx_bot(
    tmp_path: Path, tiny_clip_dir: Path, api_url: str, token: str = SECRET_TOKEN, *options: str
) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "core.cli", *options, "bot", "--api-url", api_url],
        cwd=REPO,
        env=_env(tmp_path, tiny_clip_dir, token),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def _assert_one_error_line(code: int, output: str, elapsed: float, *needles: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("vdx: error:")]
    assert code == 2, output
    assert len(errors) == 1, output
    assert "Traceback" not in output and "SECRET" not in output
    assert len(errors[0]) <= 320
    assert elapsed < GIVE_UP_S, f"gave up after {elapsed:.1f} s"
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound once to find it free, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(32)
        yield int(s.getsockname()[1])


@pytest.fixture
def not_found_port() -> Iterator[int]:
    """An HTTP server that answers every request with an HTML 404 page (a web server, not Telegram)."""

    class NotFound(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b"<html><body><h1>404 Not Found</h1></body></html>"
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_closed_port_gives_up_with_one_line(tmp_path: Path, tiny_clip_dir: Path, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/bot"
    code, output, elapsed = _vdx_bot(tmp_path, tiny_clip_dir, url)
    _assert_one_error_line(code, output, elapsed, f"cannot reach the Telegram Bot API at {url}", "refused")
    retries = [line for line in output.splitlines() if "retrying in" in line]
    assert len(retries) >= 2  # each retry is announced on its own line


def test_silent_host_gives_up_within_30_seconds(
    tmp_path: Path, tiny_clip_dir: Path, silent_port: int
) -> None:
    url = f"http://127.0.0.1:{silent_port}/bot"
    code, output, elapsed = _vdx_bot(tmp_path, tiny_clip_dir, url)
    _assert_one_error_line(code, output, elapsed, f"cannot reach the Telegram Bot API at {url}", "no answer")


def test_web_server_answering_404_is_not_a_bot_api_server(
    tmp_path: Path, tiny_clip_dir: Path, not_found_port: int
) -> None:
    url = f"http://127.0.0.1:{not_found_port}/bot"
    code, output, elapsed = _vdx_bot(tmp_path, tiny_clip_dir, url)
    line = _assert_one_error_line(code, output, elapsed, "not a Bot API server")
    assert "Unauthorized" not in line and "rejected" not in line  # (the port may contain 401)


async def test_rejected_token_is_the_token_message_and_never_logged(
    tmp_path: Path, tiny_clip_dir: Path
) -> None:
    async with FakeBotApi() as fake:  # knows only its own token: ours gets 401 Unauthorized
        code, output, elapsed = await asyncio.to_thread(
            _vdx_bot, tmp_path, tiny_clip_dir, fake.base_url, SECRET_TOKEN, "-v"
        )
    errors = [line for line in output.splitlines() if line.startswith("vdx: error:")]
    assert code == 2 and len(errors) == 1 and elapsed < GIVE_UP_S, output
    assert "TELEGRAM_BOT_TOKEN" in errors[0] and "@BotFather" in errors[0]
    assert "SECRET" not in output  # -v logs every request URL: the token is replaced in them


async def test_ready_line_then_clean_stop_on_sigterm(tmp_path: Path, tiny_clip_dir: Path) -> None:
    async with FakeBotApi() as fake:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "core.cli",
            "bot",
            "--api-url",
            fake.base_url,
            cwd=REPO,
            env=_env(tmp_path, tiny_clip_dir, DEFAULT_TOKEN),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode().strip()
            # ready means serving: the bot is already long-polling the fake server
            for _ in range(100):
                if any(c.method == "getUpdates" for c in fake.calls):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("ready, but no getUpdates long poll arrived")
            heartbeat = tmp_path / "data" / "bot.heartbeat"  # what the container's HEALTHCHECK reads
            for _ in range(100):
                if heartbeat.exists():
                    break
                await asyncio.sleep(0.1)
            healthy = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "bot.health"],
                cwd=REPO,
                env=_env(tmp_path, tiny_clip_dir, DEFAULT_TOKEN),
                timeout=60,
            )
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 30)
            err = (await proc.stderr.read()).decode()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert f"@{BOT_USERNAME}" in line and "ready" in line, err
    assert "0 images" in line and str(tiny_clip_dir) in line and "chdb://" in line and "polling" in line
    assert code == 0, err
    assert "Traceback" not in err
    assert healthy.returncode == 0, "python -m bot.health: the running bot's heartbeat is missing or stale"


async def test_webhook_mode_registers_the_url_and_serves_a_posted_update(
    tmp_path: Path, tiny_clip_dir: Path, closed_port: int
) -> None:
    import aiohttp

    hook = f"http://127.0.0.1:{closed_port}/vdx-hook"  # a free port for the bot's webhook server
    async with FakeBotApi() as fake:
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "core.cli", "bot", "--api-url", fake.base_url],
            *["--webhook-url", hook, "--listen", "127.0.0.1", "--port", str(closed_port)],
            cwd=REPO,
            env=_env(tmp_path, tiny_clip_dir, DEFAULT_TOKEN),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode().strip()
            assert "ready" in line and f"webhook {hook}" in line, line
            registered = fake.find("setWebhook")
            assert registered and registered[-1].params["url"] == hook
            secret = str(registered[-1].params["secret_token"])
            update = {
                "update_id": 1,
                "message": {
                    "message_id": 1,
                    "date": 0,
                    "chat": fake.chat(7),
                    "from": fake.user(7),
                    "text": "/help",
                    "entities": [{"type": "bot_command", "offset": 0, "length": 5}],
                },
            }
            async with aiohttp.ClientSession() as http:
                forged = await http.post(hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "x"})
                assert forged.status == 403  # without Telegram's secret header nothing is handled
                sent = await http.post(hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": secret})
                assert sent.status == 200
            await fake.wait_for("sendMessage", lambda c: c.chat_id == 7, 30)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert code == 0
    assert len(fake.find("sendMessage", lambda c: c.chat_id == 7)) == 1  # the forged update was dropped
