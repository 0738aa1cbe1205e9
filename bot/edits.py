"""Keyboard edits, coalesced: one edit per keyboard carries every vote made while it waited.

A burst of votes in a group would otherwise cost one edit each, and Telegram counts edits against
the same 20 messages a minute as the next round's album (see ``bot/ratelimit.py``). A vote marks its
keyboard as changed; after ``debounce`` seconds, and once the rate limiter would let an edit through,
the latest edit callback runs (it reads the counts at that moment). Votes arriving while an edit is
on its way mark the keyboard again, so at most one more edit follows. Edits of a round are dropped
once the chat has a newer round: the new round's messages go first and the old keyboard keeps the
counts it last showed (each voter's button answer already confirmed their vote).

The coalescer knows nothing about what a keyboard shows: the caller passes the coroutine that edits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

Edit = Callable[[], Awaitable[None]]
Ready = Callable[[int], Awaitable[None]]
DEBOUNCE_S = 0.3


async def _no_wait(chat_id: int) -> None:
    return None


@dataclass
class _Pending:
    chat_id: int
    edit: Edit
    task: asyncio.Task[None] | None = None
    dirty: bool = True
    sending: bool = False


class NewRound:
    """Filled in by the caller of :meth:`KeyboardEdits.new_round` once the round is recorded."""

    round_id: int | None = None


class KeyboardEdits:
    """Debounced, coalesced edits per keyboard; ``ready(chat_id)`` waits until an edit may go out."""

    def __init__(self, debounce: float = DEBOUNCE_S, ready: Ready = _no_wait) -> None:
        self.debounce = debounce
        self.ready = ready
        self.sent = 0  # edits made
        self.dropped = 0  # pending edits dropped for a newer round
        self._pending: dict[int, _Pending] = {}  # round id -> its keyboard's pending edit
        self._latest: dict[int, int] = {}  # chat -> newest round id
        self._holds: dict[int, int] = {}  # chat -> rounds on their way
        self._released: dict[int, asyncio.Event] = {}

    def request(self, chat_id: int, round_id: int, edit: Edit) -> None:
        """The keyboard of ``round_id`` changed: edit it soon with ``edit`` (never waits)."""
        if round_id < self._latest.get(chat_id, 0):
            return  # an old round's keyboard: the chat has moved on
        pending = self._pending.get(round_id)
        if pending is None:
            pending = self._pending[round_id] = _Pending(chat_id, edit)
            pending.task = asyncio.get_running_loop().create_task(self._run(round_id, pending))
        else:
            pending.edit, pending.dirty = edit, True

    @contextlib.contextmanager
    def new_round(self, chat_id: int) -> Iterator[NewRound]:
        """Around making and sending a round: edits in ``chat_id`` wait, and once the round's id is
        set, the pending edits of older rounds are dropped (also those waiting now)."""
        self._holds[chat_id] = self._holds.get(chat_id, 0) + 1
        self._released.setdefault(chat_id, asyncio.Event()).clear()
        self._drop(chat_id, None)
        new = NewRound()
        try:
            yield new
        finally:
            self._holds[chat_id] -= 1
            if new.round_id is not None:
                self._latest[chat_id] = max(self._latest.get(chat_id, 0), new.round_id)
                self._drop(chat_id, new.round_id)
            if not self._holds[chat_id]:
                del self._holds[chat_id]
                self._released.pop(chat_id).set()

    async def close(self) -> None:
        """Cancel every pending edit (at shutdown)."""
        tasks = [p.task for p in self._pending.values() if p.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.clear()

    def _drop(self, chat_id: int, before: int | None) -> None:
        """Cancel the chat's pending edits not yet on their way (of rounds older than ``before``)."""
        for rid, pending in list(self._pending.items()):
            if pending.chat_id != chat_id or pending.sending or (before is not None and rid >= before):
                continue
            assert pending.task is not None
            pending.task.cancel()
            del self._pending[rid]
            self.dropped += 1

    async def _run(self, round_id: int, pending: _Pending) -> None:
        try:
            while pending.dirty:
                await asyncio.sleep(self.debounce)
                while (released := self._released.get(pending.chat_id)) is not None:
                    await released.wait()  # a round is on its way: it goes first
                await self.ready(pending.chat_id)
                if self._pending.get(round_id) is not pending:
                    return
                pending.dirty, pending.sending = False, True
                try:
                    await pending.edit()
                    self.sent += 1
                except Exception:  # one failed edit must not stop later ones; the next vote retries
                    log.warning("could not update the keyboard of round %s", round_id, exc_info=True)
                finally:
                    pending.sending = False
        finally:
            if self._pending.get(round_id) is pending:
                del self._pending[round_id]
