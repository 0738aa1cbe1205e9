"""Alerts: when new images are ingested, the ones each watched saved concept accepts.

How new images are noticed: the store's ``added_at`` column (set by the database on insert). The bot
asks :meth:`Alerts.due` every few seconds; an ingest is taken to be finished once the newest
``added_at`` has stayed the same between two looks, so one ingest — however many inserts it takes —
gives each watching chat at most one album. Each watch keeps in SQLite the newest ``added_at`` it has
looked at, and every image it announced: a restart neither repeats an album nor misses an ingest
that finished while the bot was down. This works for images added by the bot's own process and by
``vdx ingest`` against a shared server alike.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from core.records import Scored
from core.state import SavedConcept, State, Watch
from core.store import VectorStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    """New images a watched concept accepts: the best ``items`` of ``total``, for ``chat_id``."""

    chat_id: int
    concept: SavedConcept
    items: list[Scored]
    total: int
    checked_until: int


class Alerts:
    """Finds what each watch has not seen yet; remembers (in SQLite) what it has announced."""

    def __init__(self, store: VectorStore, state: State, album_size: int = 9) -> None:
        self.store = store
        self.state = state
        self.album_size = album_size
        self._last_seen: int | None = None  # newest added_at at the previous look
        self.settling = True  # the last look saw new rows arrive: look again soon

    async def due(self) -> list[Alert]:
        """The alerts to post now: none while images are still arriving (the newest ``added_at`` moved
        since the last look), else one per watch with new matching images. Each is recorded as posted
        before it is returned (at most once: a crash while posting loses an album, never repeats one)."""
        latest = await asyncio.to_thread(self.store.latest_added)
        self.settling = latest != self._last_seen
        self._last_seen = latest
        if self.settling:
            return []
        out = []
        for watch in await self.state.watches():
            if latest <= watch.checked_until:
                continue
            alert = await self._check(watch, latest)
            if alert is not None:
                out.append(alert)
        return out

    async def _check(self, watch: Watch, latest: int) -> Alert | None:
        saved = watch.concept
        if saved.threshold is None:  # /watch refuses these; a concept saved before its boundary existed
            await self.state.record_alert(watch.chat_id, saved.id, [], latest)
            return None
        announced = await self.state.alerted(watch.chat_id, saved.id)
        query = saved.query
        span = (watch.checked_until + 1, latest)
        page = await asyncio.to_thread(
            self.store.matches,
            query.weights,
            query.threshold,
            2**62,
            0,
            (*query.excluded, *announced),
            None,
            span,
        )
        # Every match counts as announced (the album shows the best of them), and the mark moves on.
        if not await self.state.record_alert(watch.chat_id, saved.id, [m.id for m in page.items], latest):
            return None
        if not page.items:
            return None
        log.info("watch %r of chat %s: %d new matches", saved.name, watch.chat_id, page.total)
        return Alert(watch.chat_id, saved, page.items[: self.album_size], page.total, latest)
