"""Keep the bot token out of everything the bot prints, logs or says.

The token reaches text in more shapes than the one in ``TELEGRAM_BOT_TOKEN``: python-telegram-bot
puts it percent-encoded into file URLs (``/file/bot123%3AAAH…``), and lower-cases most of a 400
error's description (``telegram.error.TelegramError`` capitalizes the message it strips of "Bad
Request: "), so an echoed URL comes back as ``/bot123:aah…``. The secret half of a token is
letters, digits, ``_`` and ``-``, which percent-encoding leaves alone: matching it in any letter
case, with the bot id and a ``:`` or ``%3A`` before it, covers every form.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from types import TracebackType
from typing import Any
from urllib.parse import quote

PLACEHOLDER = "<TELEGRAM_BOT_TOKEN>"


class TokenRedactor:
    """Replaces bot tokens in text, in every form they take (see the module docstring)."""

    def __init__(self, *tokens: str) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for token in tokens:
            self.add(token)

    def add(self, token: str) -> None:
        """Redact ``token`` from now on (an empty token is ignored)."""
        if token and token not in self._secrets:
            self._secrets.add(token)
            self._pattern = re.compile("|".join(_forms(t) for t in sorted(self._secrets)), re.IGNORECASE)

    def __call__(self, text: str) -> str:
        """``text`` with every form of every token replaced by :data:`PLACEHOLDER`."""
        return self._pattern.sub(PLACEHOLDER, text) if self._pattern is not None else text

    def found_in(self, text: str) -> bool:
        """Whether ``text`` holds a token in any form."""
        return self._pattern is not None and self._pattern.search(text) is not None


def _forms(token: str) -> str:
    bot_id, colon, secret = token.partition(":")
    if not colon or not secret:  # not shaped like a token: match it (and its encoding) as it is
        return "|".join(re.escape(t) for t in {token, quote(token, safe="")})
    secrets = "|".join(re.escape(s) for s in {secret, quote(secret, safe="")})
    return rf"(?:{re.escape(bot_id)}(?::|%3A))?(?:{secrets})"


class _RedactingRecords:
    """A log record factory that redacts messages, tracebacks and stack info of every record.

    A record factory (rather than a filter) sees every record of every logger, including the
    request URLs httpx logs and exception texts that quote the token, whatever handlers exist.
    """

    def __init__(self, base: Any, redact: TokenRedactor) -> None:
        self.base = base
        self.redact = redact

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.base(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: logging reports it itself
            return record
        if self.redact.found_in(message):
            record.msg, record.args = self.redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if self.redact.found_in(text):
                record.exc_text = self.redact(text)
        if record.stack_info and self.redact.found_in(record.stack_info):
            record.stack_info = self.redact(record.stack_info)
        return record


def install(token: str) -> TokenRedactor:
    """Keep ``token`` out of log records and of tracebacks that reach the interpreter's excepthooks
    (the main thread's and other threads'), from now on; idempotent. Returns the redactor."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _RedactingRecords):
        factory = _RedactingRecords(factory, TokenRedactor())
        logging.setLogRecordFactory(factory)
    factory.redact.add(token)
    redact = factory.redact
    if not getattr(sys.excepthook, "redacts_token", False):
        sys.excepthook = _excepthook(redact)
    if not getattr(threading.excepthook, "redacts_token", False):
        threading.excepthook = _thread_excepthook(redact)
    # httpx logs each request URL (which holds the token) at INFO
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return redact


def _excepthook(redact: TokenRedactor) -> Any:
    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))

    hook.redacts_token = True  # type: ignore[attr-defined]
    return hook


def _thread_excepthook(redact: TokenRedactor) -> Any:
    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "a thread"
        text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
        sys.stderr.write(redact(f"Exception in thread {name}:\n{text}"))

    hook.redacts_token = True  # type: ignore[attr-defined]
    return hook
