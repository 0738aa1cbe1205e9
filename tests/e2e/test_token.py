"""A missing or rejected bot token is explained, and the token never reaches the logs."""

from __future__ import annotations

import asyncio
import logging
import traceback
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from core.errors import VdxError
from tests.e2e.bot_process import START_TIMEOUT, bot_process
from tests.e2e.conftest import BotFactory, Dataset, jpeg, next_round, reply_text
from tests.e2e.fake_bot_api import BOT_ID, FakeBotApi

CHAT = 606


async def test_missing_token_names_the_variable_and_botfather(start_bot: BotFactory) -> None:
    with pytest.raises(VdxError) as e:
        async with start_bot(telegram_token=""):
            pass
    assert "TELEGRAM_BOT_TOKEN" in str(e.value) and "@BotFather" in str(e.value)


async def test_rejected_token_is_explained_without_showing_it(
    start_bot: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "1000:this-token-was-revoked-SECRET"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(VdxError) as e:
        async with start_bot(telegram_token=secret):
            pass
    assert "TELEGRAM_BOT_TOKEN" in str(e.value) and "@BotFather" in str(e.value)
    shown = "".join(traceback.format_exception(e.value))  # what a person sees if it goes uncaught
    assert "SECRET" not in shown and "SECRET" not in caplog.text


async def test_working_bot_keeps_its_token_out_of_debug_logs(
    fake: FakeBotApi, bot: Any, dataset: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    since = fake.mark()
    fake.user_message(7, 7, "a lantern")
    await next_round(fake, dataset, 7, since=since)
    assert fake.token not in caplog.text
    assert fake.token.split(":")[1] not in caplog.text


# A token whose secret has capitals: PTB lower-cases most of a 400's description, and percent-encodes
# the ":" in file URLs, so both forms differ from the literal token.
MIXED_TOKEN = f"{BOT_ID}:AAHsecretMIXEDcase-Token_42"
MIXED_SECRET = MIXED_TOKEN.split(":")[1]


def _leaks(text: str) -> bool:
    """Whether ``text`` holds the token's secret in any case (percent-encoding leaves it as it is)."""
    return MIXED_SECRET.lower() in text.lower()


async def test_the_token_echoed_in_a_download_error_and_a_lowercased_400_never_reaches_the_log(
    fake: FakeBotApi, start_bot: BotFactory, dataset: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    fake.tokens.add(MIXED_TOKEN)
    caplog.set_level(logging.DEBUG)
    async with start_bot(telegram_token=MIXED_TOKEN):
        # the file server's error page quotes the percent-encoded URL it was asked for
        fake.fail_next("download", status=502, description="Bad Gateway: upstream failed for {path}")
        since = fake.mark()
        fake.user_photo(CHAT, CHAT, jpeg(3))
        await reply_text(fake, CHAT, "could not read that photo", since=since)
        assert any("%3A" in r.getMessage() or "TOKEN>" in r.getMessage() for r in caplog.records)

        # a 400 whose description quotes the request path: PTB lower-cases it
        fake.fail_next("sendMessage", status=400, description="Bad Request: chat not found for {path}")
        since = fake.mark()
        fake.user_message(CHAT, CHAT, "/help")
        await fake.settle(quiet=1.0)
    assert "<TELEGRAM_BOT_TOKEN>" in caplog.text  # the errors were logged, redacted
    assert not _leaks(caplog.text)
    for call in fake.calls:  # nor did the bot say it in a chat
        assert not _leaks(str(call.params.get("text", ""))), call.method


async def test_a_start_up_error_echoing_the_token_is_one_line_without_it(
    fake: FakeBotApi, dataset: Dataset, store: Any, bot_settings: Settings, tmp_path: Path
) -> None:
    store.close()
    fake.tokens.add(MIXED_TOKEN)
    # PTB's start-up (deleteWebhook before polling) fails with a description that quotes the path
    fake.fail_next("deleteWebhook", status=400, description="Bad Request: webhook is wrong for {path}")
    output = tmp_path / "bot.log"
    with bot_process(bot_settings, fake.base_url, MIXED_TOKEN, output) as proc:
        for _ in range(int(START_TIMEOUT * 10)):
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
    text = output.read_text()
    assert proc.returncode == 2, text
    assert not _leaks(text), text  # PTB logs its own traceback: redacted like every log record
    errors = [line for line in text.splitlines() if line.startswith("vdx: error:")]
    assert len(errors) == 1 and text.splitlines()[-1] == errors[0], text
    assert "Bot API" in errors[0] and "<TELEGRAM_BOT_TOKEN>" in errors[0] and len(errors[0]) <= 320


async def test_an_unreadable_state_database_at_start_up_is_one_error_line(
    fake: FakeBotApi, bot_settings: Settings, tmp_path: Path
) -> None:
    bot_settings.state_path.parent.mkdir(parents=True, exist_ok=True)
    bot_settings.state_path.write_bytes(b"this is not a SQLite database, it is garbage " * 100)
    output = tmp_path / "bot.log"
    with bot_process(bot_settings, fake.base_url, fake.token, output) as proc:
        for _ in range(int(START_TIMEOUT * 10)):
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
    text = output.read_text()
    assert proc.returncode == 2, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines == [lines[-1]] and lines[-1].startswith("vdx: error: cannot open the state database"), text
    assert "not a database" in lines[-1]
