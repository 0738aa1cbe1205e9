"""Sending a round's images as one album, each image by the cheapest way Telegram accepts.

An image Telegram already has goes by its ``file_id``; an Unsplash image by its URL with a size
parameter (Unsplash asks for hotlinking); anything else is uploaded from the image cache, and the
``file_id`` Telegram returns is kept so each image is uploaded once. One URL Telegram cannot fetch
fails the whole album, so such an album is sent again once, uploaded from the cache; images that
cannot be read from the cache are left out rather than failing the album.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError
from telegram import Bot, InputFile, InputMediaPhoto, Message
from telegram.error import BadRequest, TimedOut

from core.config import Settings
from core.ingest import cache_path, sized_url
from core.state import RoundItem, RoundStatus, State

log = logging.getLogger(__name__)

Way = Literal["file_id", "url", "upload"]
UNSPLASH_WIDTH = 1080  # Telegram shows photos up to 1280 px; 1080 keeps Unsplash's CDN fast
# Telegram's answers when it cannot use one item of an album (the whole album fails).
_MEDIA_ERRORS = (
    "failed to get http url content",
    "wrong type of the web page content",
    "wrong file identifier",
    "wrong remote file identifier",
    "file reference",
)


@dataclass(frozen=True)
class Sent:
    """What went out: the images actually in the album (renumbered 1..n), their messages, the status."""

    items: list[RoundItem]
    message_ids: list[int]
    status: RoundStatus


@dataclass(frozen=True)
class _Media:
    item: RoundItem
    source: str | bytes
    way: Way


def _is_media_error(e: BadRequest) -> bool:
    return any(m in e.message.lower() for m in _MEDIA_ERRORS)


def _read_thumbnail(path: Path) -> bytes | None:
    """The cached JPEG, or None if it is missing or not an image (Telegram would reject the album)."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except (OSError, UnidentifiedImageError, SyntaxError) as e:  # PIL raises SyntaxError on broken files
        log.warning("skipping image %s: cannot read its cached thumbnail (%s)", path.name, e)
        return None
    return data


class AlbumSender:
    """Sends albums for one bot; remembers ``file_id``s in the state database."""

    def __init__(self, settings: Settings, state: Callable[[], State]) -> None:
        self.settings = settings
        self._state = state

    async def send(
        self, bot: Bot, chat_id: int, items: Sequence[RoundItem], caption: Callable[[RoundItem], str]
    ) -> Sent:
        """Send ``items`` as an album (one photo if only one can be sent); ``caption`` sees the final
        positions. A send that timed out is not repeated (it may have arrived): status ``unknown``."""
        state = self._state()
        known = await state.file_ids([it.image_id for it in items])
        media = await self._media(items, known, upload=False)
        try:
            messages = await self._send(bot, chat_id, media, caption)
        except TimedOut:
            log.warning("album to chat %s timed out; not resending, it may have arrived", chat_id)
            return Sent([m.item for m in media], [], "unknown")
        except BadRequest as e:
            if not _is_media_error(e):
                raise
            log.info("Telegram could not use an image of the album to chat %s (%s); uploading", chat_id, e)
            stale = [m.item.image_id for m in media if m.way == "file_id"]
            if stale and "file" in e.message.lower():
                await state.forget_file_ids(stale)
            media = await self._media(items, {}, upload=True)
            try:
                messages = await self._send(bot, chat_id, media, caption)
            except TimedOut:
                log.warning("album to chat %s timed out; not resending, it may have arrived", chat_id)
                return Sent([m.item for m in media], [], "unknown")
        uploaded = {
            m.item.image_id: msg.photo[-1].file_id
            for m, msg in zip(media, messages, strict=False)
            if m.way == "upload" and msg.photo
        }
        await state.put_file_ids(uploaded)
        status: RoundStatus = "sent" if messages else "failed"
        return Sent([m.item for m in media], [msg.message_id for msg in messages], status)

    async def _media(
        self, items: Sequence[RoundItem], known: dict[str, str], *, upload: bool
    ) -> list[_Media]:
        """How to send each image; images with no usable source are dropped, the rest renumbered."""
        ways: list[tuple[RoundItem, str | None, Way]] = []
        for it in items:
            if not upload and it.image_id in known:
                ways.append((it, known[it.image_id], "file_id"))
            elif not upload and it.source == "unsplash" and it.url.startswith(("http://", "https://")):
                ways.append((it, sized_url(it.url, UNSPLASH_WIDTH), "url"))
            else:
                ways.append((it, None, "upload"))
        paths = [cache_path(self.settings, it.image_id) for it, src, _ in ways if src is None]
        # disk reads and JPEG checks off the event loop, in one hop
        files = iter(await asyncio.to_thread(lambda: [_read_thumbnail(p) for p in paths]))
        out: list[_Media] = []
        for it, src, way in ways:
            source = src if src is not None else next(files)
            if source is not None:
                out.append(_Media(replace(it, position=len(out) + 1), source, way))
        return out

    async def _send(
        self, bot: Bot, chat_id: int, media: list[_Media], caption: Callable[[RoundItem], str]
    ) -> list[Message]:
        def photo(m: _Media) -> str | InputFile:
            if isinstance(m.source, bytes):
                return InputFile(m.source, filename=f"{m.item.image_id}.jpg", attach=True)
            return m.source

        if not media:
            return []
        if len(media) == 1:  # Telegram albums need 2-10 items
            m = media[0]
            return [await bot.send_photo(chat_id, photo(m), caption=caption(m.item))]
        album = [InputMediaPhoto(photo(m), caption=caption(m.item)) for m in media]
        return list(await bot.send_media_group(chat_id, album))
