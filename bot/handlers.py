"""Telegram handlers: read the update, make one call into core, reply; domain errors become replies.

Updates are processed concurrently (a slow round in one chat must not delay button answers in
another); a per-chat lock keeps a chat's own session changes (new concept, refine, results, stop)
in order. Model and vector-database work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from telegram import Bot, CallbackQuery, Chat, InputFile, Message, Update
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import BadRequest, TelegramError
from telegram.ext import ApplicationHandlerStop, ContextTypes

from bot import keyboards, texts
from bot.albums import AlbumSender
from bot.edits import KeyboardEdits
from bot.redaction import TokenRedactor
from core import export as exports
from core.alerts import Alert, Alerts
from core.config import Settings
from core.errors import (
    BadConcept,
    EmptyDataset,
    OnlyNegativeTerms,
    StoreUnavailable,
    TooManyTerms,
    UnreadableImage,
    VdxError,
)
from core.explorer import Explorer, ExplorerSession, MatchEstimate
from core.images import load_rgb
from core.ingest import ingested_folders, shared_url
from core.query import parse
from core.records import Hit, MatchPage, Scored
from core.state import MatchView, NoSession, Round, RoundItem, SavedConcept, Session, StaleRound, State, Tally

log = logging.getLogger(__name__)

Context = ContextTypes.DEFAULT_TYPE
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[None]])
GROUPS = (ChatType.GROUP, ChatType.SUPERGROUP)
ADMINS = (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER)
# getFile serves files up to 20 MB (https://core.telegram.org/bots/api#getfile); a self-hosted Bot
# API server serves originals of any size, which are refused before they are downloaded.
MAX_PHOTO_BYTES = 20 * 1024 * 1024


NAME = re.compile(r"[\w-]{1,32}")


class BadName(VdxError):
    """A saved concept's name that is empty, too long or has spaces or symbols."""

    def __init__(self) -> None:
        super().__init__(texts.BAD_NAME)


class UnknownConcept(VdxError):
    """A name that is not one of the chat's saved concepts."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(texts.unknown_concept(name))


class UnreadablePhoto(VdxError):
    """A photo sent to the bot that PIL cannot decode."""

    def __init__(self) -> None:
        super().__init__(texts.IMAGE_UNREADABLE)


class SessionRunning(VdxError):
    """A group member who is not an admin asked for a new concept while a session is active."""

    def __init__(self, concept: str) -> None:
        self.concept = concept
        super().__init__(texts.only_admins_replace(concept))


def error_text(e: VdxError) -> str:
    """The chat reply for a domain error."""
    if isinstance(e, StoreUnavailable):
        return texts.STORE_DOWN
    if isinstance(e, EmptyDataset):
        return texts.NO_IMAGES
    if isinstance(e, OnlyNegativeTerms):
        return texts.ONLY_NEGATIVE_TERMS
    if isinstance(e, TooManyTerms):
        return texts.too_many_terms(e.limit)
    if isinstance(e, BadConcept):
        return texts.EMPTY_CONCEPT
    if isinstance(e, StaleRound):
        return texts.NO_LONGER_ACTIVE
    if isinstance(e, NoSession):
        return texts.NO_SESSION
    return str(e)


def replies_on_error(fn: Handler) -> Handler:
    """Turn a :class:`VdxError` raised by a handler into a reply in the chat (or the callback's answer)."""

    @functools.wraps(fn)
    async def wrapper(self: Handlers, update: Update, context: Context) -> None:
        try:
            await fn(self, update, context)
        except VdxError as e:
            if isinstance(e, StoreUnavailable):
                log.warning("vector database unavailable: %s", e)
            query = update.callback_query
            if isinstance(e, StaleRound) and query is not None:
                await query.answer(texts.NO_LONGER_ACTIVE)
            elif update.effective_chat is not None:
                await context.bot.send_message(update.effective_chat.id, self.redact(error_text(e)))

    return wrapper  # type: ignore[return-value]


def _first_round(explorer: Explorer, concept: str, k: int) -> tuple[ExplorerSession, list[Hit]]:
    session = explorer.start_text(concept)
    return session, explorer.next_batch(session, k)


def _photo_round(explorer: Explorer, data: bytes, text: str, k: int) -> tuple[ExplorerSession, list[Hit]]:
    try:
        image = load_rgb(data)  # within core.images' pixel budget: a bomb is refused before decoding
    except UnreadableImage as e:
        log.info("could not read a photo: %s", e)
        raise UnreadablePhoto() from e
    session = explorer.start_image(image, texts.photo_concept(text), text)
    return session, explorer.next_batch(session, k)


def _refit(explorer: Explorer, session: Session, taught: Taught) -> ExplorerSession:
    """The session rebuilt from its state and refitted on every vote so far (fits take milliseconds)."""
    es = explorer.resume(
        session.concept, session.prior, session.weights, taught.soft, taught.shown, taught.last_round
    )
    explorer.fit(es, taught.soft)
    return es


def _refit_round(
    explorer: Explorer, session: Session, taught: Taught, k: int
) -> tuple[ExplorerSession, list[Hit]]:
    es = _refit(explorer, session, taught)
    return es, explorer.next_batch(es, k)


def _results(
    explorer: Explorer, session: Session, taught: Taught, k: int
) -> tuple[ExplorerSession, list[Scored], MatchEstimate | None]:
    es = _refit(explorer, session, taught)
    return es, explorer.top(es, k), explorer.estimate_matches(es)


@dataclass(frozen=True)
class Taught:
    """What a chat has taught in a session, as the explorer needs it."""

    soft: dict[str, float]  # image id -> soft label (core.votes), contested = 0.0
    shown: list[str]  # every image shown in a labelling round
    last_round: list[str]  # the images of the latest labelling round


def _saved_round(explorer: Explorer, saved: SavedConcept, k: int) -> list[Hit]:
    return explorer.next_batch(explorer.resume(saved.concept, saved.prior, saved.weights, saved.labels), k)


class Handlers:
    """The bot's handlers, bound to one explorer and one state database."""

    def __init__(
        self,
        settings: Settings,
        explorer: Explorer,
        state: State | None = None,
        *,
        edits: KeyboardEdits | None = None,
    ) -> None:
        self.settings = settings
        self.explorer = explorer
        self.redact = TokenRedactor(settings.telegram_token)  # for texts that quote an error
        self._state = state
        self.albums = AlbumSender(settings, lambda: self.state)
        self.edits = edits or KeyboardEdits()
        self._chat_locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._alerts_task: asyncio.Task[None] | None = None
        self._alerts_wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def state(self) -> State:
        """The open state database (opened in ``post_init``)."""
        if self._state is None:
            raise RuntimeError(
                "the state database is not open: start the application with running() or run_bot()"
            )
        return self._state

    async def open(self, app: Any = None) -> None:
        """``post_init``: open the state database unless one was given."""
        if self._state is None:
            self._state = await State.open(self.settings.state_path)

    async def close(self, app: Any = None) -> None:
        """``post_shutdown``: stop the alerts, drop pending keyboard edits, close the state database."""
        await self.stop_alerts()
        await self.edits.close()
        if self._state is not None:
            await self._state.close()

    # --- alerts ---------------------------------------------------------------------------------

    def start_alerts(self, bot: Bot) -> None:
        """Look for newly ingested images every ``VDX_ALERT_INTERVAL`` seconds and post alerts."""
        if self._alerts_task is None:
            self._loop = asyncio.get_running_loop()
            self._alerts_task = asyncio.create_task(self._alert_loop(bot), name="vdx-alerts")

    def images_ingested(self, event: object = None) -> None:
        """An ingest stored images: look for alerts now rather than at the next interval. Safe to call
        from any thread (ingests insert from worker threads)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._alerts_wake.set)

    async def stop_alerts(self) -> None:
        """Stop the alert loop (idempotent)."""
        task, self._alerts_task = self._alerts_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _alert_loop(self, bot: Bot) -> None:
        alerts = Alerts(self.explorer.store, self.state, self.settings.album_size)
        while True:
            try:
                for alert in await alerts.due():
                    await self._post_alert(bot, alert)
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive one failed look (database down, chat gone)
                log.exception("looking for new images to alert on failed; trying again later")
            # While rows are arriving, look again in a second (an ingest is over once nothing new
            # came in between two looks); else at the interval, or as soon as an ingest says so.
            wait = 1.0 if alerts.settling else self.settings.alert_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._alerts_wake.wait(), wait)
            self._alerts_wake.clear()

    async def _post_alert(self, bot: Bot, alert: Alert) -> None:
        """One album of a watched concept's best new matches, then how many there are."""
        items = [
            RoundItem(i + 1, m.id, m.url, m.caption, m.source, m.score) for i, m in enumerate(alert.items)
        ]
        try:
            sent = await self.albums.send(
                bot,
                alert.chat_id,
                items,
                lambda it: texts.results_caption(it.position, it.score or 0.0, it.caption),
            )
            await bot.send_message(
                alert.chat_id,
                texts.alert(alert.concept.name, alert.concept.concept, len(sent.items), alert.total),
            )
        except TelegramError as e:  # e.g. the bot was removed from the chat; the watch stays
            log.warning("could not post an alert for %r to chat %s: %s", alert.concept.name, alert.chat_id, e)

    # --- guards ---------------------------------------------------------------------------------

    async def guard(self, update: object, context: Context) -> None:
        """Refuse chats outside ``VDX_ALLOWED_CHATS`` (when it is set) before any other handler runs.

        The decision comes first and the update always stops here: the refusal is said best-effort,
        so a refusal Telegram will not deliver (a deleted message, flood control, an expired query)
        never lets the update through to the other handlers.
        """
        allowed = self.settings.allowed_chats
        if not allowed or not isinstance(update, Update):
            return
        chat = update.effective_chat
        if chat is not None and chat.id in allowed:
            return
        try:
            if update.callback_query is not None:
                await update.callback_query.answer(texts.NOT_ALLOWED)
            elif update.effective_message is not None:
                await update.effective_message.reply_text(texts.NOT_ALLOWED)
        except Exception as e:  # whatever became of the refusal, the update is refused
            log.info("could not tell chat %s it is not allowed: %s", chat.id if chat else None, e)
        raise ApplicationHandlerStop()

    # --- commands -------------------------------------------------------------------------------

    async def help(self, update: Update, context: Context) -> None:
        """``/start`` and ``/help``: what the bot does and its commands."""
        await _message(update).reply_text(texts.HELP)

    @replies_on_error
    async def find(self, update: Update, context: Context) -> None:
        """``/find <concept>`` (or ``/find [words]`` in reply to a photo: the photo moved by the words)."""
        msg = _message(update)
        parts = (msg.text or "").split(maxsplit=1)
        concept = parts[1] if len(parts) > 1 else ""
        replied = msg.reply_to_message
        if replied is not None and replied.photo:
            await self._start_photo(update, context.bot, replied, concept)
            return
        await self._start_text(update, context.bot, concept)

    @replies_on_error
    async def text(self, update: Update, context: Context) -> None:
        """A plain text message in a private chat is a concept."""
        await self._start_text(update, context.bot, _message(update).text or "")

    @replies_on_error
    async def photo(self, update: Update, context: Context) -> None:
        """A photo starts a session from that image; a caption's words move it (``at night``, ``-people``)."""
        msg = _message(update)
        caption = (msg.caption or "").split(maxsplit=1)
        if caption and caption[0].startswith("/"):
            caption = caption[1:]
        await self._start_photo(update, context.bot, msg, " ".join(caption).strip())

    @replies_on_error
    async def more(self, update: Update, context: Context) -> None:
        """``/more``: refit on the chat's labels and send the next round."""
        chat = _chat(update)
        await self._refine(context.bot, chat.id, chat.type in GROUPS)

    @replies_on_error
    async def results(self, update: Update, context: Context) -> None:
        """``/results``: the best images by the current classifier."""
        await self._results(context.bot, _chat(update).id)

    @replies_on_error
    async def reset(self, update: Update, context: Context) -> None:
        """``/reset``: end the chat's session (group admins only)."""
        chat = _chat(update)
        if not await self._may_stop(context.bot, chat, update):
            await _message(update).reply_text(texts.ONLY_ADMINS)
            return
        await self._stop(context.bot, chat.id)

    @replies_on_error
    async def stats(self, update: Update, context: Context) -> None:
        """``/stats [N]``: concept, rounds, labels, voters (and agreement in groups); N: the chat's session N."""
        chat = _chat(update)
        if (session := await self._chosen_session(update, context)) is None:
            return
        stats = await self.state.stats(session.id)
        await _message(update).reply_text(
            texts.stats(stats, chat.type in GROUPS, self.settings.clip_model, self.settings.text_model)
        )

    @replies_on_error
    async def export(self, update: Update, context: Context) -> None:
        """``/export [N]``: ``labels.csv`` (a column per voter), ``classifier.json`` and every match in
        ``matches.csv`` (gzip-compressed when large, cut to Telegram's 50 MB with a note); N: the chat's
        session N."""
        chat = _chat(update)
        if (session := await self._chosen_session(update, context)) is None:
            return
        async with self._chat_locks[chat.id]:
            await self._fitted(session)  # the classifier in the files has learned from every vote
            bundle = await exports.bundle_for(self.state, self.explorer, session.id)
        folders = ingested_folders(self.settings)
        shared = functools.partial(shared_url, folders=folders)  # not the server's own paths
        labels = bundle.export.labels_csv(shared)
        matches = await asyncio.to_thread(exports.matches_document, bundle, url=shared)
        bot = context.bot
        await bot.send_document(chat.id, InputFile(labels.encode(), filename="labels.csv"))
        await bot.send_document(
            chat.id, InputFile(exports.classifier_json(bundle).encode(), filename="classifier.json")
        )
        await bot.send_document(
            chat.id,
            InputFile(matches.content, filename=matches.filename),
            caption=texts.matches_file(matches.rows, matches.total, bundle.threshold),
        )
        if matches.cut:
            await bot.send_message(chat.id, texts.matches_cut(matches.rows, matches.total, session.id))

    @replies_on_error
    async def save(self, update: Update, context: Context) -> None:
        """``/save NAME``: keep the chat's classifier (weight, prior, boundary, labels) under a name."""
        name = _name(context)
        chat = _chat(update).id
        if (session := await self.state.latest_session(chat)) is None:
            await _message(update).reply_text(texts.NO_SESSION_YET)
            return
        async with self._chat_locks[chat]:
            es = await self._fitted(session)  # what is kept has learned from every vote
            labels = await self.state.labels(session.id)
            saved, replaced = await self.state.save_concept(
                chat, name, session, es.weights, self.explorer.boundary(es), labels
            )
        await _message(update).reply_text(texts.saved(saved, replaced))

    @replies_on_error
    async def concepts(self, update: Update, context: Context) -> None:
        """``/concepts``: the chat's saved concepts."""
        chat = _chat(update).id
        saved = await self.state.saved_concepts(chat)
        watched = {w.concept.id for w in await self.state.watches() if w.chat_id == chat}
        await _message(update).reply_text(texts.concept_list(saved, watched))

    @replies_on_error
    async def forget(self, update: Update, context: Context) -> None:
        """``/forget NAME``: delete a saved concept (and stop watching it)."""
        name = _name(context)
        if await self.state.forget_concept(_chat(update).id, name) is None:
            raise UnknownConcept(name)
        await _message(update).reply_text(texts.forgotten(name))

    @replies_on_error
    async def watch(self, update: Update, context: Context) -> None:
        """``/watch NAME``: post the new images a saved concept accepts whenever images are ingested."""
        chat = _chat(update).id
        saved = await self._saved(chat, _name(context))
        if saved.threshold is None:
            await _message(update).reply_text(texts.watch_needs_boundary(saved.name))
            return
        latest = await asyncio.to_thread(self.explorer.store.latest_added)
        added = await self.state.watch(chat, saved, latest)
        await _message(update).reply_text(texts.watching(saved.name, added))

    @replies_on_error
    async def unwatch(self, update: Update, context: Context) -> None:
        """``/unwatch NAME``: stop the alerts of a saved concept."""
        chat = _chat(update).id
        saved = await self._saved(chat, _name(context))
        removed = await self.state.unwatch(chat, saved)
        await _message(update).reply_text(texts.unwatched(saved.name, removed))

    async def _saved(self, chat: int, name: str) -> SavedConcept:
        saved = await self.state.saved_concept(chat, name)
        if saved is None:
            raise UnknownConcept(name)
        return saved

    @replies_on_error
    async def sessions(self, update: Update, context: Context) -> None:
        """``/sessions``: the chat's sessions by number, so an ended one can be exported."""
        listed = await self.state.chat_sessions(_chat(update).id)
        shown = listed[-texts.SESSIONS_SHOWN :]
        stats = [await self.state.stats(s.id) for s in shown]
        await _message(update).reply_text(texts.sessions(stats, len(listed) - len(shown) + 1))

    async def _chosen_session(self, update: Update, context: Context) -> Session | None:
        """Session N of the chat when the command names a number, else its latest, ended or not;
        when there is none, the chat is told so."""
        chat = _chat(update).id
        number = context.args[0] if context.args else ""
        if number.isdecimal() and number.isascii():
            if (session := await self.state.chat_session(chat, int(number))) is None:
                await _message(update).reply_text(texts.no_such_session(number))
            return session
        if (session := await self.state.latest_session(chat)) is None:
            await _message(update).reply_text(texts.NO_SESSION_YET)
        return session

    async def unknown(self, update: Update, context: Context) -> None:
        """Any other command (not one addressed to another bot in a group)."""
        msg = _message(update)
        command = (msg.text or "").split(maxsplit=1)[0] if msg.text else ""
        _, _, addressee = command.partition("@")
        if addressee and addressee.lower() != (context.bot.username or "").lower():
            return
        await msg.reply_text(texts.UNKNOWN_COMMAND)

    # --- buttons --------------------------------------------------------------------------------

    @replies_on_error
    async def button(self, update: Update, context: Context) -> None:
        """Any inline button: a 👍/👎 vote or a control; forged or stale data is answered as inactive."""
        query = _query(update)
        press = keyboards.parse(query.data)
        if isinstance(press, keyboards.VotePress):
            await self._vote(context.bot, query, press)
        elif isinstance(press, keyboards.PagePress):
            await self._next_page(context.bot, update, query, press)
        else:
            await self._control(context.bot, update, query, press)

    async def _vote(self, bot: Bot, query: CallbackQuery, press: keyboards.VotePress) -> None:
        if query.message is None:
            raise StaleRound(press.round_id)
        user = query.from_user
        outcome = await self.state.toggle_vote(
            press.round_id,
            press.position,
            user.id,
            press.vote,
            user.full_name or user.username or "",
            chat_id=query.message.chat.id,
            query_id=query.id,
        )
        # the vote is committed: answer now, the keyboard edit follows (coalesced with others)
        split = await self._shows_split(query.message.chat, outcome.session_id, outcome.round_id)
        await query.answer(texts.vote_answer(press.position, outcome.vote, hidden=not split))
        self._refresh_keyboard(query, outcome.round_id, split)

    async def _shows_split(self, chat: Chat, session_id: int, round_id: int) -> bool:
        """Private chats, ``VDX_GROUP_TALLIES``, and group rounds already refined show the 👍/👎 split."""
        if chat.type not in GROUPS or self.settings.group_tallies:
            return True
        latest = await self.state.latest_round(session_id)
        return latest is not None and latest.id != round_id

    def _refresh_keyboard(self, query: CallbackQuery, round_id: int, split: bool = True) -> None:
        """Show current counts soon: one edit carries every vote made while it waits (``bot/edits.py``).

        Without ``split`` (a group round not refined yet) the keyboard shows how many voted, not how.
        """
        assert query.message is not None

        async def edit() -> None:
            tallies = await self.state.tallies(round_id)
            try:
                await query.edit_message_reply_markup(keyboards.round_keyboard(round_id, tallies, split))
            except BadRequest as e:
                if "not modified" not in e.message.lower():
                    raise

        self.edits.request(query.message.chat.id, round_id, edit)

    async def _control(
        self, bot: Bot, update: Update, query: CallbackQuery, press: keyboards.ControlPress
    ) -> None:
        if query.message is None:  # a press on an inline message: not one of this bot's rounds
            raise StaleRound(press.round_id)
        rnd = await self.state.active_round(press.round_id)
        chat = _chat(update)
        if rnd.chat_id != chat.id:
            raise StaleRound(press.round_id)
        if press.action == "stop":
            if not await self._may_stop(bot, chat, update):
                await query.answer(texts.ONLY_ADMINS, show_alert=True)
                return
            await query.answer()
            await self._stop(bot, chat.id)
        elif press.action == "refine":
            await query.answer("Refining…")
            await self._refine(bot, chat.id, chat.type in GROUPS)
        else:
            await query.answer("Ranking…")
            await self._results(bot, chat.id)

    # --- the flow -------------------------------------------------------------------------------

    async def _start_text(self, update: Update, bot: Bot, concept: str) -> None:
        chat = _chat(update)
        if not concept.strip():
            raise BadConcept(texts.EMPTY_CONCEPT)
        words = concept.split()
        if len(words) == 1 and words[0].startswith("@") and len(words[0]) > 1:
            await self._start_saved(update, bot, words[0][1:])
            return
        async with self._chat_locks[chat.id]:
            previous = await self._replaceable(bot, chat, update)
            with self.edits.new_round(chat.id) as new:
                es, hits = await asyncio.to_thread(
                    _first_round, self.explorer, concept, self.settings.album_size
                )
                new.round_id = await self._new_session(bot, chat.id, es, hits, previous)
        if es.truncated:
            await _message(update).reply_text(texts.TRUNCATED)

    async def _start_saved(self, update: Update, bot: Bot, name: str) -> None:
        """``/find @NAME``: a new session that continues a saved concept (its weight and labels)."""
        chat = _chat(update)
        saved = await self._saved(chat.id, name)
        async with self._chat_locks[chat.id]:
            previous = await self._replaceable(bot, chat, update)
            with self.edits.new_round(chat.id) as new:
                hits = await asyncio.to_thread(_saved_round, self.explorer, saved, self.settings.album_size)
                new.round_id = await self._new_session(bot, chat.id, None, hits, previous, saved)

    async def _start_photo(self, update: Update, bot: Bot, msg: Message, text: str) -> None:
        chat = _chat(update)
        parse(text, photo=True)  # a malformed caption is refused before the photo is downloaded
        async with self._chat_locks[chat.id]:
            previous = await self._replaceable(bot, chat, update)
            data = await self._download_photo(msg)
            with self.edits.new_round(chat.id) as new:
                es, hits = await asyncio.to_thread(
                    _photo_round, self.explorer, data, text, self.settings.album_size
                )
                new.round_id = await self._new_session(bot, chat.id, es, hits, previous)
        if es.truncated:
            await _message(update).reply_text(texts.TRUNCATED)

    async def _download_photo(self, msg: Message) -> bytes:
        """The biggest size of the message's photo; a failed download is :class:`UnreadablePhoto`."""
        biggest = max(msg.photo, key=lambda p: p.width * p.height)
        if (biggest.file_size or 0) > MAX_PHOTO_BYTES:
            raise UnreadablePhoto()
        try:
            return bytes(await (await biggest.get_file()).download_as_bytearray())
        except TelegramError as e:
            log.warning("could not download a photo: %s", e)
            raise UnreadablePhoto() from e

    async def _replaceable(self, bot: Bot, chat: Chat, update: Update) -> Session | None:
        """The active session a new concept would end (or None); in a group only admins may end one,
        so a member's new concept is :class:`SessionRunning` while a session is active."""
        active = await self.state.active_session(chat.id)
        if active is not None and not await self._may_stop(bot, chat, update):
            raise SessionRunning(active.concept)
        return active

    async def _new_session(
        self,
        bot: Bot,
        chat: int,
        es: ExplorerSession | None,
        hits: Sequence[Hit],
        previous: Session | None,
        saved: SavedConcept | None = None,
    ) -> int | None:
        """Start the session (from ``es``, or continuing ``saved``; ending ``previous``) and send its first
        round (its id is returned); say how to export the old one."""
        if saved is not None:
            session = await self.state.start_from_saved(chat, saved)
        else:
            assert es is not None
            session = await self.state.start_session(chat, es.concept, es.prior, es.weights)
        round_id = await self._send_round(bot, session, hits)
        if previous is not None:
            number = await self.state.session_number(previous.id)
            await bot.send_message(chat, texts.replaced(previous.concept, number))
        return round_id

    async def _taught(self, session: Session) -> Taught:
        latest = await self.state.latest_round(session.id)
        return Taught(
            soft=await self.state.soft_labels(session.id),
            shown=await self.state.shown(session.id),
            last_round=[it.image_id for it in latest.items] if latest else [],
        )

    async def _save_fit(self, session: Session, es: ExplorerSession) -> None:
        """Keep the refitted weight and boundary when they changed (the first fit after new votes)."""
        if np.array_equal(es.weights, session.weights) and es.boundary == session.boundary:
            return
        await self.state.save_weights(session.id, es.weights, len(es.labels), es.boundary)

    async def _fitted(self, session: Session) -> ExplorerSession:
        """Refit on every vote so far and save the result: ⭐ Results and /export never lag the votes."""
        es = await asyncio.to_thread(_refit, self.explorer, session, await self._taught(session))
        await self._save_fit(session, es)
        return es

    async def _refine(self, bot: Bot, chat: int, group: bool = False) -> None:
        async with self._chat_locks[chat]:
            session = await self._active(chat)
            previous = await self.state.latest_round(session.id)
            with self.edits.new_round(chat) as new:
                es, hits = await asyncio.to_thread(
                    _refit_round,
                    self.explorer,
                    session,
                    await self._taught(session),
                    self.settings.album_size,
                )
                await self._save_fit(session, es)
                if hits:
                    new.round_id = await self._send_round(bot, session, hits)
            if not hits:
                best = (
                    min(self.settings.album_size, sum(1 for v in es.labels.values() if v > 0))
                    or self.settings.album_size
                )
                await bot.send_message(chat, texts.nothing_else(session.concept, best))
                return
            if previous is not None and group and not self.settings.group_tallies:
                await self._reveal_split(bot, chat, previous)

    async def _reveal_split(self, bot: Bot, chat: int, rnd: Round) -> None:
        """A group round that was refined shows its 👍/👎 split from now on (best effort, after the new round)."""
        if rnd.keyboard_message_id is None:
            return
        try:
            tallies = await self.state.tallies(rnd.id)
            await bot.edit_message_reply_markup(
                chat, rnd.keyboard_message_id, reply_markup=keyboards.round_keyboard(rnd.id, tallies, True)
            )
        except TelegramError as e:
            log.info("could not show the split of round %s: %s", rnd.id, e)

    async def _results(self, bot: Bot, chat: int) -> None:
        """The best images now (no two near-copies), how many images match, and ▶ for the rest of them."""
        k = self.settings.album_size
        async with self._chat_locks[chat]:
            session = await self._active(chat)
            es = await self._fitted(session)  # refitted on every vote so far: no 🔁 Refine needed
            query = self.explorer.match_query(es)
            top = await asyncio.to_thread(self.explorer.top, es, k)
            count = await asyncio.to_thread(self.explorer.matches, query, 0)
            view = await self.state.add_match_view(session.id, query, count.total)
            shown = await self._send_scored(bot, session, top, 0)
            if not shown:
                return
            # The listing continues after the album's ranks; ▶ pages through it in the store's order.
            more = view.total - k
            await bot.send_message(
                chat,
                texts.results_count(session.concept, shown, view.total, query.threshold),
                reply_markup=keyboards.next_page_keyboard(view.id, k, min(more, k)) if more > 0 else None,
            )

    async def _next_page(
        self, bot: Bot, update: Update, query: CallbackQuery, press: keyboards.PagePress
    ) -> None:
        """▶: the next page of a kept listing, ranked by the classifier it was made with."""
        view = await self.state.match_view(press.view_id)
        chat = _chat(update).id
        if view is None or view.chat_id != chat:
            raise StaleRound()
        session = await self.state.session(view.session_id)
        assert session is not None
        if press.offset >= view.total:
            await query.answer(texts.LAST_PAGE)
            return
        await query.answer("Loading…")
        async with self._chat_locks[chat]:
            page = await asyncio.to_thread(
                self.explorer.matches, view.query, self.settings.album_size, press.offset
            )
            await self._send_page(bot, session, view, page)

    async def _send_page(self, bot: Bot, session: Session, view: MatchView, page: MatchPage) -> None:
        """A page of matches as an album, then the count and a ▶ button while there are more."""
        shown = await self._send_scored(bot, session, page.items, page.offset)
        if not shown:
            return
        end = page.offset + len(page.items)
        more = view.total - end
        await bot.send_message(
            session.chat_id,
            texts.matches_message(session.concept, page.offset + 1, end, view.total, page.threshold),
            reply_markup=keyboards.next_page_keyboard(view.id, end, min(more, self.settings.album_size))
            if more > 0
            else None,
        )

    async def _send_scored(self, bot: Bot, session: Session, scored: Sequence[Scored], offset: int) -> int:
        """Ranked images as an album (captions: rank and score), recorded as a results round."""
        items = [RoundItem(i + 1, s.id, s.url, s.caption, s.source, s.score) for i, s in enumerate(scored)]
        sent = await self.albums.send(
            bot,
            session.chat_id,
            items,
            lambda it: texts.results_caption(offset + it.position, it.score or 0.0, it.caption),
        )
        rnd = await self.state.add_round(session.id, "results", sent.items)
        await self.state.mark_round(rnd.id, sent.status, sent.message_ids)
        if not sent.items and scored:
            await bot.send_message(session.chat_id, texts.NO_PHOTOS_SENT)
        return len(sent.items)

    async def _stop(self, bot: Bot, chat: int) -> None:
        async with self._chat_locks[chat]:
            session = await self.state.end_session(chat)
        await bot.send_message(chat, texts.stopped(session.concept) if session else texts.NO_SESSION)

    async def _send_round(self, bot: Bot, session: Session, hits: Sequence[Hit]) -> int | None:
        """The album, then the round (recorded), then its voting keyboard; the round's id (None: no photos)."""
        items = [RoundItem(i + 1, h.id, h.url, h.caption, h.source) for i, h in enumerate(hits)]
        sent = await self.albums.send(
            bot, session.chat_id, items, lambda it: texts.round_caption(it.position, it.caption)
        )
        if not sent.items:
            await bot.send_message(session.chat_id, texts.NO_PHOTOS_SENT)
            return None
        rnd = await self.state.add_round(session.id, "round", sent.items)
        keyboard = await bot.send_message(
            session.chat_id,
            texts.round_message(session.concept, rnd.number),
            reply_markup=keyboards.round_keyboard(
                rnd.id, [Tally(it.position, it.image_id) for it in rnd.items]
            ),
        )
        await self.state.mark_round(rnd.id, sent.status, sent.message_ids, keyboard.message_id)
        if sent.status == "unknown":
            await bot.send_message(session.chat_id, texts.ROUND_MAYBE_LOST)
        return rnd.id

    async def _active(self, chat: int) -> Session:
        session = await self.state.active_session(chat)
        if session is None:
            raise NoSession(chat)
        return session

    async def _may_stop(self, bot: Bot, chat: Chat, update: Update) -> bool:
        """Anyone in a private chat; in groups only administrators and the owner."""
        if chat.type not in GROUPS:
            return True
        user = update.effective_user
        if user is None:
            return False
        member = await bot.get_chat_member(chat.id, user.id)
        return member.status in ADMINS

    # --- errors ---------------------------------------------------------------------------------

    async def on_error(self, update: object, context: Context) -> None:
        """Log every unexpected error with its traceback; tell the chat something went wrong."""
        log.error("error while handling an update", exc_info=context.error)
        if isinstance(context.error, TelegramError) or not isinstance(update, Update):
            return  # Telegram itself is failing: a reply would most likely fail too
        if update.callback_query is not None:
            with _quietly():
                await update.callback_query.answer(texts.FAILED)
        if update.effective_chat is not None:
            with _quietly():
                await context.bot.send_message(update.effective_chat.id, texts.FAILED)


class _quietly:
    """Suppress (and log) Telegram errors while reporting another error: never raise from the handler."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, TelegramError):
            log.warning("could not tell the chat about an error: %s", exc)
            return True
        return False


def _name(context: Context) -> str:
    """The NAME argument of /save, /forget, /watch, /unwatch (a leading @ is allowed)."""
    args = context.args or []
    name = args[0].removeprefix("@") if len(args) == 1 else ""
    if not NAME.fullmatch(name):
        raise BadName()
    return name


def _message(update: Update) -> Message:
    msg = update.effective_message
    if msg is None:
        raise RuntimeError("this handler needs a message")
    return msg


def _chat(update: Update) -> Chat:
    chat = update.effective_chat
    if chat is None:
        raise RuntimeError("this handler needs a chat")
    return chat


def _query(update: Update) -> CallbackQuery:
    if update.callback_query is None:
        raise RuntimeError("this handler needs a callback query")
    return update.callback_query
