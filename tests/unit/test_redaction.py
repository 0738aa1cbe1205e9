"""The bot token is redacted in every form it takes: plain, percent-encoded, any letter case."""

from __future__ import annotations

import logging
import sys
import threading

import pytest

from bot import redaction
from bot.redaction import PLACEHOLDER, TokenRedactor

TOKEN = "123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
SECRET = TOKEN.split(":")[1]


@pytest.mark.parametrize(
    "text",
    [
        f"https://api.telegram.org/bot{TOKEN}/getMe",
        f"https://api.telegram.org/file/bot{TOKEN.replace(':', '%3A')}/photos/file_1.jpg",
        f"https://api.telegram.org/file/bot{TOKEN.replace(':', '%3a')}/photos/file_1.jpg",
        f"Url /bot{TOKEN.lower()}/sendmessage not found",
        f"/BOT{TOKEN.upper()}/GETME",
        f"the secret alone: {SECRET}",
    ],
)
def test_every_form_of_the_token_is_replaced(text: str) -> None:
    redact = TokenRedactor(TOKEN)
    out = redact(text)
    assert SECRET.lower() not in out.lower() and PLACEHOLDER in out
    assert redact.found_in(text) and not redact.found_in(out)


def test_text_without_the_token_is_left_alone_and_no_token_redacts_nothing() -> None:
    assert TokenRedactor(TOKEN)("123456 is the bot's public id") == "123456 is the bot's public id"
    assert TokenRedactor()("anything") == "anything"


def test_log_records_and_uncaught_tracebacks_are_redacted(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    old_factory, old_hook, old_thread_hook = (
        logging.getLogRecordFactory(),
        sys.excepthook,
        threading.excepthook,
    )
    try:
        redaction.install(TOKEN)
        redaction.install(TOKEN)  # idempotent
        caplog.set_level(logging.INFO)
        try:
            raise RuntimeError(f"failed: /file/bot{TOKEN.replace(':', '%3A')}/x")
        except RuntimeError as e:
            logging.getLogger("vdx.test").exception("download of %s failed", TOKEN.lower())
            sys.excepthook(type(e), e, e.__traceback__)
        thread = threading.Thread(target=lambda: (_ for _ in ()).throw(ValueError(f"/bot{TOKEN}/getMe")))
        thread.start()
        thread.join()
        shown = capsys.readouterr().err + caplog.text
        assert "RuntimeError" in shown and "ValueError" in shown and PLACEHOLDER in shown
        assert SECRET.lower() not in shown.lower()
    finally:
        logging.setLogRecordFactory(old_factory)
        sys.excepthook, threading.excepthook = old_hook, old_thread_hook
