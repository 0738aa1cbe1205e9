"""Pacing the bot's requests under Telegram's flood limits, a new round's messages ahead of keyboard edits.

Telegram's Bot FAQ (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this):
about one message a second in one chat with short bursts, 20 messages a minute in one group, about 30
a second overall; edits share those limits (https://github.com/tdlib/td/issues/2592) and
``answerCallbackQuery`` has none (https://github.com/tdlib/telegram-bot-api/issues/648).

python-telegram-bot's ``AIORateLimiter`` is, in its own words, a "minimal effort reference
implementation" that invites subclasses of ``BaseRateLimiter`` for finer control. Three of its
choices hurt a busy group: its per-group ``aiolimiter.AsyncLimiter(20, 60)`` is a leaky bucket that
lets 40 messages through in the first minute and serves requests first come, first served, so
keyboard edits queued by a burst of votes go out before the next round's album; and one
``RetryAfter`` halts *every* request, button answers included. This limiter keeps the same three
limits (a token bucket per chat, a 60 s window per group, a 1 s window overall) and:

- admits requests of one chat in order, but an edit (``LOW``) only when no other request of that
  chat waits and enough budget stays free for a round (``reserve`` messages of the chat's bucket,
  ``group_reserve`` of the group's minute), so a round is never queued behind edits;
- counts a request as sent from admission until it is answered, then at the time of the answer
  (later than its arrival at Telegram), so its own view of each window is never more generous
  than Telegram's;
- lets ``answerCallbackQuery``, ``getChatMember`` and everything else that is not a message
  through without waiting;
- on a ``RetryAfter`` pauses only that chat for the time Telegram asked and retries
  (``max_retries``), so no 429 reaches a handler unless Telegram keeps refusing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

log = logging.getLogger(__name__)

# Requests that send or edit a message: the ones Telegram's flood limits count.
COUNTED = frozenset(
    m.lower()
    for m in (
        "sendMessage",
        "sendPhoto",
        "sendMediaGroup",
        "sendDocument",
        "sendVideo",
        "sendAnimation",
        "sendAudio",
        "sendVoice",
        "sendVideoNote",
        "sendSticker",
        "sendLocation",
        "sendVenue",
        "sendContact",
        "sendPoll",
        "sendDice",
        "copyMessage",
        "copyMessages",
        "forwardMessage",
        "forwardMessages",
        "editMessageText",
        "editMessageCaption",
        "editMessageMedia",
        "editMessageReplyMarkup",
        "editMessageLiveLocation",
        "stopMessageLiveLocation",
        "stopPoll",
    )
)
# Requests that only refresh what a chat already shows: they yield to everything else.
LOW = frozenset(m.lower() for m in ("editMessageReplyMarkup", "editMessageText", "editMessageCaption"))
GROUP_WINDOW = 60.0
OVERALL_WINDOW = 1.0


@dataclass(frozen=True)
class FloodLimits:
    """Telegram's limits as the Bot FAQ states them; ``chat_burst`` is a guess Telegram does not publish."""

    chat_per_second: float = 1.0
    chat_burst: int = 3
    group_per_minute: int = 20
    overall_per_second: int = 30


@dataclass
class _Chat:
    level: float = 0.0  # token bucket level at ``level_at``
    level_at: float = 0.0
    sent: deque[float] = field(default_factory=deque)  # answer times within the group window
    inflight: int = 0
    paused_until: float = 0.0
    waiting: list[tuple[int, bool]] = field(default_factory=list)  # (ticket, low) in arrival order


class FloodLimiter(BaseRateLimiter[None]):
    """A ``BaseRateLimiter`` for ``Application.builder().rate_limiter(...)`` (see the module docstring)."""

    def __init__(
        self,
        limits: FloodLimits = FloodLimits(),
        *,
        reserve: int = 1,
        group_reserve: int = 4,
        max_retries: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.reserve = reserve
        self.group_reserve = group_reserve
        self.max_retries = max_retries
        self.retried = 0  # RetryAfter answers seen (and retried or raised)
        self._clock = clock
        self._chats: dict[int | str, _Chat] = {}
        self._overall: deque[float] = deque()
        self._overall_inflight = 0
        self._tickets = itertools.count()
        self._changed: asyncio.Condition | None = None

    async def initialize(self) -> None:
        """Nothing to open."""

    async def shutdown(self) -> None:
        """Nothing to close."""

    @property
    def _cond(self) -> asyncio.Condition:
        if self._changed is None:  # made on first use, inside the running loop
            self._changed = asyncio.Condition()
        return self._changed

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        """Wait for budget (messages only), make the request, retry on ``RetryAfter``."""
        method = endpoint.lower()
        if method not in COUNTED:
            return await callback(*args, **kwargs)
        chat_id = data.get("chat_id")
        key: int | str = _chat_key(chat_id)
        low = method in LOW
        for attempt in itertools.count():
            await self._admit(key, low)
            try:
                result = await callback(*args, **kwargs)
            except RetryAfter as e:
                await self._done(key, counted=False)
                self.retried += 1
                seconds = _seconds(e)
                if attempt >= self.max_retries:
                    log.warning("%s to chat %s refused by flood control %d times", endpoint, key, attempt + 1)
                    raise
                log.info("%s to chat %s: flood control asks to wait %.0f s", endpoint, key, seconds)
                state = self._chats.setdefault(key, _Chat())
                state.paused_until = max(state.paused_until, self._clock() + seconds + 0.1)
                continue
            except BaseException:
                await self._done(key, counted=True)
                raise
            await self._done(key, counted=True)
            return result
        raise AssertionError("unreachable")

    async def until_free(self, chat_id: int | str) -> None:
        """Wait until an edit to ``chat_id`` would be admitted at once (counts nothing)."""
        key = _chat_key(chat_id)
        async with self._cond:
            while True:
                state = self._chats.setdefault(key, _Chat())
                wait = self._wait(state, key, None, low=True)
                if wait == 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), wait if wait > 0 else None)

    async def _admit(self, key: int | str, low: bool) -> None:
        ticket = next(self._tickets)
        async with self._cond:
            state = self._chats.setdefault(key, _Chat())
            state.waiting.append((ticket, low))
            try:
                while True:
                    wait = self._wait(state, key, ticket, low)
                    if wait == 0:
                        state.inflight += 1
                        self._overall_inflight += 1
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._cond.wait(), wait if wait > 0 else None)
            finally:
                state.waiting.remove((ticket, low))
                self._cond.notify_all()

    async def _done(self, key: int | str, *, counted: bool) -> None:
        now = self._clock()
        async with self._cond:
            state = self._chats[key]
            state.inflight -= 1
            self._overall_inflight -= 1
            if counted:
                state.level = self._level(state, now) + 1
                state.level_at = now
                self._overall.append(now)
                if _is_group(key):
                    state.sent.append(now)
            self._cond.notify_all()

    def _level(self, state: _Chat, now: float) -> float:
        return max(0.0, state.level - (now - state.level_at) * self.limits.chat_per_second)

    def _wait(self, state: _Chat, key: int | str, ticket: int | None, low: bool) -> float:
        """0 if the request may go now; else seconds to wait (-1: until something is answered)."""
        lim = self.limits
        now = self._clock()
        # order: the chat's requests in arrival order, edits after everything else
        if ticket is not None:
            normal = [t for t, is_low in state.waiting if not is_low]
            first = normal[0] if normal else min(t for t, _ in state.waiting)
            if ticket != first:
                return -1
        elif any(not is_low for _, is_low in state.waiting):
            return -1
        waits = [state.paused_until - now]
        reserve = self.reserve if low else 0
        room = lim.chat_burst - state.inflight - 1 - reserve  # the bucket level the request needs
        if room < 0:
            return -1
        level = self._level(state, now)
        if level > room:
            waits.append((level - room) / lim.chat_per_second)
        if _is_group(key):
            while state.sent and state.sent[0] <= now - GROUP_WINDOW:
                state.sent.popleft()
            over = len(state.sent) + state.inflight + 1 + (self.group_reserve if low else 0)
            over -= lim.group_per_minute
            if over > len(state.sent):
                return -1
            if over > 0:
                waits.append(state.sent[over - 1] + GROUP_WINDOW - now)
        while self._overall and self._overall[0] <= now - OVERALL_WINDOW:
            self._overall.popleft()
        over = len(self._overall) + self._overall_inflight + 1 - lim.overall_per_second
        if over > len(self._overall):
            return -1
        if over > 0:
            waits.append(self._overall[over - 1] + OVERALL_WINDOW - now)
        wait = max(waits)
        return wait if wait > 0 else 0


def _chat_key(chat_id: Any) -> int | str:
    with contextlib.suppress(TypeError, ValueError):
        return int(chat_id)
    return str(chat_id)


def _is_group(key: int | str) -> bool:
    """Groups, supergroups and channels have negative ids (or an ``@username``)."""
    return isinstance(key, str) or key < 0


def _seconds(e: RetryAfter) -> float:
    # the timedelta PTB keeps (its own AIORateLimiter reads it so); ``retry_after`` warns of a type change
    after = getattr(e, "_retry_after", None)
    if isinstance(after, dt.timedelta):
        return after.total_seconds()
    return float(e.retry_after)  # type: ignore[arg-type]
