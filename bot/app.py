"""The bot's composition root: build the python-telegram-bot ``Application``, run it, keep the token out of logs."""

from __future__ import annotations

import argparse
import hashlib
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from telegram import BotCommand, Update
from telegram.error import InvalidToken, TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot import texts
from bot.edits import KeyboardEdits
from bot.handlers import Handlers
from bot.ratelimit import FloodLimiter
from core.config import Settings
from core.errors import ConfigError
from core.events import CollectionEvents
from core.explorer import Explorer
from core.service import CommandServer
from core.state import State
from core.store import VectorStore

if TYPE_CHECKING:  # importing the encoder module pulls in torch
    from core.encoder import ClipEncoder

log = logging.getLogger(__name__)

COMMANDS = [
    BotCommand("find", "start a session: /find a house by the lake"),
    BotCommand("more", "next round (🔁 Refine)"),
    BotCommand("results", "best images so far (⭐ Results)"),
    BotCommand("stats", "rounds, labels and voters"),
    BotCommand("export", "labels as CSV, classifier as JSON"),
    BotCommand("reset", "end the session"),
    BotCommand("help", "how it works"),
]
UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]  # all the bot handles: Telegram sends nothing else
RATE_LIMIT_RETRIES = 3  # RetryAfter answers retried (after the wait Telegram asks for) before giving up


class _RedactToken:
    """A log record factory that replaces bot tokens in messages and tracebacks.

    A record factory (rather than a filter) sees every record of every logger, including the
    request URLs httpx logs and exception texts that quote the token, whatever handlers exist.
    """

    def __init__(self, base: Any) -> None:
        self.base = base
        self.tokens: set[str] = set()

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.base(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: logging reports it itself
            return record
        if any(t in message for t in self.tokens):
            record.msg, record.args = self.redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if any(t in text for t in self.tokens):
                record.exc_text = self.redact(text)
        return record

    def redact(self, text: str) -> str:
        for t in self.tokens:
            text = text.replace(t, "<TELEGRAM_BOT_TOKEN>")
        return text


def redact_token_in_logs(token: str) -> None:
    """Keep ``token`` out of every log record from now on (idempotent)."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _RedactToken):
        factory = _RedactToken(factory)
        logging.setLogRecordFactory(factory)
    factory.tokens.add(token)
    # httpx logs each request URL (which holds the token) at INFO
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _file_url(api_url: str) -> str:
    """The file download base of a Bot API base URL: ``…/bot`` -> ``…/file/bot`` (as Telegram serves it)."""
    base = api_url.rstrip("/")
    return base[: -len("/bot")] + "/file/bot" if base.endswith("/bot") else base


def build_application(
    settings: Settings,
    *,
    store: VectorStore,
    encoder: ClipEncoder,
    state: State | None = None,
    api_url: str | None = None,
    events: CollectionEvents | None = None,
) -> Application:
    """The bot with everything injected; ``state`` is opened at start-up when not given.

    ``events`` (also at ``app.bot_data["events"]``) carries an :class:`~core.events.ImagesIngested`
    for every batch that an ingest run through this bot stores; subscribe to it for alerts.
    """
    token = settings.telegram_token
    if not token:
        raise ConfigError(texts.MISSING_TOKEN)
    redact_token_in_logs(token)
    # Telegram's flood limits, with a round's messages ahead of keyboard edits (bot/ratelimit.py)
    limiter = FloodLimiter(max_retries=RATE_LIMIT_RETRIES)
    edits = KeyboardEdits(ready=limiter.until_free)
    handlers = Handlers(settings, Explorer(store, encoder), state, edits=edits)

    async def post_init(app: Application) -> None:
        await handlers.open()
        try:
            await app.bot.set_my_commands(COMMANDS)
        except TelegramError as e:  # only the command menu is missing; the bot works
            log.warning("could not set the bot's command menu: %s", e)

    async def post_shutdown(app: Application) -> None:
        await handlers.close()

    builder = (
        Application.builder()
        .token(token)
        .rate_limiter(limiter)
        # Updates run concurrently so a slow round never delays another chat's button answers;
        # Handlers keeps each chat's own session changes in order with a lock.
        .concurrent_updates(True)
        # Generous timeouts: a send that times out is not repeated (it may have arrived).
        .connect_timeout(10)
        .read_timeout(30)
        .write_timeout(30)
        .media_write_timeout(120)
        .pool_timeout(30)
        .post_init(post_init)
        .post_shutdown(post_shutdown)
    )
    url = api_url or settings.telegram_api_url
    if url:
        builder = builder.base_url(url).base_file_url(_file_url(url))
    app = builder.build()
    app.bot_data["events"] = events if events is not None else CollectionEvents()
    _register(app, handlers)
    return app


def _register(app: Application, h: Handlers) -> None:
    new = filters.UpdateType.MESSAGE  # not edits: editing a concept must not start another session
    app.add_handler(TypeHandler(Update, h.guard), group=-1)
    app.add_handlers(
        [
            CommandHandler(["start", "help"], h.help, filters=new),
            CommandHandler("find", h.find, filters=new),
            CommandHandler("more", h.more, filters=new),
            CommandHandler("results", h.results, filters=new),
            CommandHandler("reset", h.reset, filters=new),
            CommandHandler("stats", h.stats, filters=new),
            CommandHandler("export", h.export, filters=new),
            MessageHandler(new & filters.COMMAND, h.unknown),
            MessageHandler(
                new & filters.PHOTO & (filters.ChatType.PRIVATE | filters.CaptionRegex(r"^/find")), h.photo
            ),
            MessageHandler(new & filters.TEXT & ~filters.COMMAND & filters.ChatType.PRIVATE, h.text),
            CallbackQueryHandler(h.button),
        ]
    )
    app.add_error_handler(h.on_error)


async def _initialize(app: Application) -> None:
    try:
        await app.initialize()
    except InvalidToken:
        await app.bot.shutdown()  # its HTTP clients were opened before getMe failed
        # PTB's own message quotes the token: replace it, and drop the chained exception
        raise ConfigError(texts.REJECTED_TOKEN) from None


@asynccontextmanager
async def running(app: Application) -> AsyncIterator[Application]:
    """Run ``app`` (polling) inside an ``async with``: for tests and benchmarks."""
    await _initialize(app)
    try:
        if app.post_init:
            await app.post_init(app)  # initialize()/start() skip post_init: open what it opens
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0.0, timeout=1, allowed_updates=UPDATES)
        try:
            yield app
        finally:
            if app.updater.running:
                await app.updater.stop()
            if app.running:
                await app.stop()
    finally:
        await app.shutdown()
        if app.post_shutdown:
            await app.post_shutdown(app)


def run_bot(
    settings: Settings,
    *,
    api_url: str | None = None,
    webhook_url: str | None = None,
    listen: str = "0.0.0.0",
    port: int = 8443,
) -> None:
    """``vdx bot``: build the store and encoder from ``settings`` and serve until interrupted."""
    if not settings.telegram_token:
        raise ConfigError(texts.MISSING_TOKEN)
    from core.encoder import ClipEncoder
    from core.ingest import check_model
    from core.store import open_store

    encoder = ClipEncoder.from_settings(settings)
    store = open_store(settings, dim=encoder.dim)
    server = None
    try:
        check_model(store, encoder)  # a different model would answer every concept with noise
        store.ensure_schema()  # an empty database answers "no images yet" instead of failing
        encoder.embed_texts(["warm up"])  # load the model now, not on the first person's concept
        events = CollectionEvents()
        app = build_application(settings, store=store, encoder=encoder, api_url=api_url, events=events)
        if store.backend == "chdb":
            server = serve_commands(settings, store, encoder, events)
        try:
            if webhook_url:
                app.run_webhook(
                    listen=listen,
                    port=port,
                    url_path=urlsplit(webhook_url).path.lstrip("/"),
                    webhook_url=webhook_url,
                    # Telegram echoes this header, so forged webhook calls are refused
                    secret_token=hashlib.sha256(settings.telegram_token.encode()).hexdigest()[:64],
                    allowed_updates=UPDATES,
                )
            else:
                app.run_polling(allowed_updates=UPDATES)
        except InvalidToken:
            raise ConfigError(texts.REJECTED_TOKEN) from None
    finally:
        if server is not None:
            server.close()
        store.close()
        encoder.close()


def serve_commands(
    settings: Settings, store: VectorStore, encoder: ClipEncoder, events: CollectionEvents
) -> CommandServer:
    """Serve ``vdx ingest/search/info/index`` from other terminals with the bot's own store and
    encoder (the embedded database opens in one process only); see ``core.service``."""
    from core.cli import Runtime, run_command

    ingest_lock = threading.Lock()

    def run(command: str, args: argparse.Namespace, out: TextIO, err: TextIO, stop: threading.Event) -> int:
        rt = Runtime(
            settings,
            out=out,
            err=err,
            store=store,
            encoder=encoder,
            events=events,
            stop=stop,
            progress=False,
            ingest_lock=ingest_lock,
        )
        return run_command(command, args, rt)

    server = CommandServer(settings, run)
    try:
        server.start()
    except OSError as e:  # the bot works; only other terminals cannot use the database meanwhile
        log.warning("cannot serve vdx commands on %s: %s", server.path, e)
    return server
