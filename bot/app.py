"""The bot's composition root: build the python-telegram-bot ``Application``, run it, keep the token out of logs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO
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

from bot import redaction, texts
from bot.edits import KeyboardEdits
from bot.handlers import Handlers
from bot.health import keep_heartbeat
from bot.ratelimit import FloodLimiter
from bot.redaction import TokenRedactor
from bot.startup import TELEGRAM_API_URL, check_bot_api, ready_line
from core.config import Settings
from core.errors import ConfigError, VdxError
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
    BotCommand("export", "labels and matches as CSV, classifier as JSON (/export N: session N)"),
    BotCommand("sessions", "this chat's sessions, by number"),
    BotCommand("save", "keep this classifier: /save NAME"),
    BotCommand("concepts", "the saved concepts"),
    BotCommand("forget", "delete a saved concept: /forget NAME"),
    BotCommand("watch", "post new images a saved concept accepts: /watch NAME"),
    BotCommand("unwatch", "stop those alerts: /unwatch NAME"),
    BotCommand("reset", "end the session"),
    BotCommand("help", "how it works"),
]
UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]  # all the bot handles: Telegram sends nothing else
RATE_LIMIT_RETRIES = 3  # RetryAfter answers retried (after the wait Telegram asks for) before giving up
POLL_TIMEOUT_S = 10  # getUpdates long-poll length in production (PTB's run_polling default)


def redact_token_in_logs(token: str) -> TokenRedactor:
    """Keep ``token`` out of every log record and uncaught traceback from now on (idempotent)."""
    return redaction.install(token)


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
        handlers.start_alerts(app.bot)
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
    # An ingest run through this bot wakes the alerts at once instead of at the next look.
    app.bot_data["events"].subscribe(handlers.images_ingested)
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
            CommandHandler("sessions", h.sessions, filters=new),
            CommandHandler("save", h.save, filters=new),
            CommandHandler("concepts", h.concepts, filters=new),
            CommandHandler("forget", h.forget, filters=new),
            CommandHandler("watch", h.watch, filters=new),
            CommandHandler("unwatch", h.unwatch, filters=new),
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


@dataclass(frozen=True)
class Webhook:
    """Where the webhook server listens and the public URL Telegram posts to."""

    url: str
    listen: str = "127.0.0.1"
    port: int = 8443
    secret_token: str | None = None


@asynccontextmanager
async def running(
    app: Application, *, webhook: Webhook | None = None, poll_timeout: int = 1
) -> AsyncIterator[Application]:
    """Run ``app`` inside an ``async with``: long polling (``poll_timeout`` s per request), or ``webhook``."""
    await _initialize(app)
    try:
        if app.post_init:
            await app.post_init(app)  # initialize()/start() skip post_init: open what it opens
        assert app.updater is not None
        if webhook is None:
            await app.updater.start_polling(poll_interval=0.0, timeout=poll_timeout, allowed_updates=UPDATES)
        else:
            try:
                await app.updater.start_webhook(
                    listen=webhook.listen,
                    port=webhook.port,
                    url_path=urlsplit(webhook.url).path.lstrip("/"),
                    webhook_url=webhook.url,
                    secret_token=webhook.secret_token,
                    allowed_updates=UPDATES,
                )
            except TelegramError as e:  # e.g. "Bad webhook: an HTTPS URL must be provided for webhook"
                raise ConfigError(f"Telegram refused the webhook URL {webhook.url}: {e.message}") from e
            except OSError as e:  # the port is taken, or the address is not this machine's
                raise ConfigError(
                    f"cannot listen for the webhook on {webhook.listen}:{webhook.port}: {e.strerror or e}"
                ) from e
        await app.start()
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
    on_ready: Callable[[str], None] | None = None,
    check: bool = False,
) -> None:
    """``vdx bot``: check the Bot API, build the store and encoder, serve until SIGINT or SIGTERM.

    ``on_ready`` receives the one line that says the bot serves updates (who, what, where).
    ``check``: only check the token and load the model, then return (``vdx bot --check``).
    """
    token = settings.telegram_token
    if not token:
        raise ConfigError(texts.MISSING_TOKEN)
    redact = redact_token_in_logs(token)  # before the first request: httpx logs URLs, which hold the token
    url = api_url or settings.telegram_api_url or TELEGRAM_API_URL
    webhook = None
    if webhook_url:
        # Telegram echoes this header, so forged webhook calls are refused
        secret = hashlib.sha256(token.encode()).hexdigest()[:64]
        webhook = Webhook(webhook_url, listen=listen, port=port, secret_token=secret)
    try:
        asyncio.run(_check(settings, url, on_ready) if check else _serve(settings, url, webhook, on_ready))
    except (VdxError, KeyboardInterrupt):
        raise
    except TelegramError as e:  # PTB's start-up requests (deleteWebhook, setMyCommands, …) failed for good
        log.info("the Bot API server failed the bot", exc_info=True)
        raise VdxError(texts.bot_api_failed(redact(str(e)))) from None
    except Exception as e:  # no traceback leaves `vdx bot`: the log has it (redacted), the person a line
        log.critical("the bot stopped on an unexpected error", exc_info=True)
        raise VdxError(texts.bot_crashed(redact(f"{type(e).__name__}: {e}"))) from None


async def _check(settings: Settings, api_url: str, on_ready: Callable[[str], None] | None) -> None:
    from core.encoder import ClipEncoder

    me = await check_bot_api(api_url, settings.telegram_token)
    encoder = ClipEncoder.from_settings(settings)
    try:
        await encoder.aembed_texts(["warm up"])
    finally:
        encoder.close()
    if on_ready is not None:
        on_ready(f"vdx bot @{me.username}: the token works and the model {encoder.model_name} loads")


async def _serve(
    settings: Settings, api_url: str, webhook: Webhook | None, on_ready: Callable[[str], None] | None
) -> None:
    from core.encoder import ClipEncoder
    from core.ingest import check_model
    from core.store import open_store

    # Telegram first: a wrong token or URL is told in seconds, before the model loads.
    me = await check_bot_api(api_url, settings.telegram_token)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # then the state database: an unreadable one is told before the model loads
    state: State | None = await State.open(settings.state_path)
    encoder = ClipEncoder.from_settings(settings)
    store = open_store(settings, dim=encoder.dim)
    server = None
    try:
        check_model(store, encoder)  # a different model would answer every concept with noise
        store.ensure_schema()  # an empty database answers "no images yet" instead of failing
        await encoder.aembed_texts(["warm up"])  # load the model now, not on the first person's concept
        if stop.is_set():  # interrupted while the model loaded
            return
        events = CollectionEvents()
        app = build_application(
            settings, store=store, encoder=encoder, state=state, api_url=api_url, events=events
        )
        state = None  # the application closes it at shutdown
        if store.backend == "chdb":
            server = serve_commands(settings, store, encoder, events)
        async with running(app, webhook=webhook, poll_timeout=POLL_TIMEOUT_S):
            if on_ready is not None:
                mode = (
                    f"webhook {webhook.url} (listening on {webhook.listen}:{webhook.port})"
                    if webhook
                    else "long polling"
                )
                on_ready(
                    ready_line(
                        me, images=store.count(), model=encoder.model_name, database=store.url, mode=mode
                    )
                )
            heartbeat = asyncio.create_task(keep_heartbeat(app.bot, settings.heartbeat_path))
            try:
                await stop.wait()
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if state is not None:
            await state.close()
        if server is not None:
            server.close()
        store.close()
        encoder.close()


def serve_commands(
    settings: Settings,
    store: VectorStore,
    encoder: ClipEncoder,
    events: CollectionEvents,
    *,
    ingest_in_child: bool = True,
) -> CommandServer:
    """Serve ``vdx ingest/search/info/index`` from other terminals with the bot's own store and
    encoder (the embedded database opens in one process only); see ``core.service``. An ingest
    reads and embeds in a child process (``ingest_in_child``), so that chats keep their answers."""
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
            ingest_in_child=ingest_in_child,
        )
        return run_command(command, args, rt)

    server = CommandServer(settings, run)
    try:
        server.start()
    except OSError as e:  # the bot works; only other terminals cannot use the database meanwhile
        log.warning("cannot serve vdx commands on %s: %s", server.path, e)
    return server
