"""Collection events: what an ingest tells the rest of vdx (the bot, alerts) about images it stored.

An ingest publishes one :class:`ImagesIngested` per inserted batch, right after the rows (and their
thumbnails) are in the store, so a subscriber can search or fetch them at once::

    events = CollectionEvents()
    unsubscribe = events.subscribe(lambda e: print(len(e.ids), "new images from", e.source))
    ingest_images(images, store, encoder, cache_dir, source="folder", events=events)

Callbacks run synchronously in the thread that inserted the batch (an ingest's main thread, or a
worker thread of the bot): keep them short, and hand work to an event loop with
``loop.call_soon_threadsafe``. An exception in one callback is logged and does not stop the ingest
or the other callbacks. Ingests that ``vdx`` forwards to a running bot publish on the bot's
``CollectionEvents``; see ``bot.app``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImagesIngested:
    """Rows just stored by an ingest: ``ids`` are new images (new files, or re-embedded changed ones).

    ``replaced`` holds the ids those rows superseded and ``removed`` ids pruned by the same run
    (both gone from the store); ``source`` is ``folder``, ``unsplash``, ``vectors`` or ``reembed``.
    """

    ids: tuple[str, ...]
    source: str
    replaced: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


Listener = Callable[[ImagesIngested], None]


class CollectionEvents:
    """A small, thread-safe publish/subscribe hub for :class:`ImagesIngested`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every event from now on; returns a function that unsubscribes it."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def publish(self, event: ImagesIngested) -> None:
        """Hand ``event`` to every listener, in subscription order."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a broken listener must not lose the ingest's rows or the others' events
                log.exception("an ImagesIngested listener failed")
