"""End-to-end fixtures: the fake Bot API, a loopback image server, a real chDB store, the running bot.

A test drives the bot the way Telegram would: it queues updates on the fake server and waits for
the requests the real python-telegram-bot stack sends back.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from PIL import Image

from core.config import Settings
from core.ingest import remember_folder
from core.records import ImageBatch
from tests.e2e.fake_bot_api import DEFAULT_TOKEN, Call, FakeBotApi, button_texts

CONTROLS = ("🔁 Refine", "⭐ Results", "⏹ Stop")


def jpeg(seed: int, side: int = 48) -> bytes:
    """A small JPEG, different for every seed (so bytes identify the image)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(side // 8, side // 8, 3), dtype=np.uint8)
    im = Image.fromarray(pixels).resize((side, side), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def digest(content: bytes) -> str:
    """Identity of image bytes."""
    return hashlib.sha1(content).hexdigest()


@dataclass
class Dataset:
    """The images in the store: which bytes and URLs belong to which id."""

    ids: list[str]
    urls: dict[str, str]
    sources: dict[str, str]
    by_digest: dict[str, str] = field(default_factory=dict)

    def id_of(self, content: bytes) -> str:
        """The image id whose bytes ``content`` are (uploaded, or fetched by URL)."""
        return self.by_digest[digest(content)]


@dataclass
class Round:
    """One album and the keyboard message that follows it."""

    album: Call
    keyboard: dict[str, Any]  # the live message: edits by the bot update its reply_markup
    ids: list[str]

    @property
    def captions(self) -> list[str]:
        """Captions of the album's items, in order."""
        return [str(m.get("caption", "")) for m in self.album.params["media"]]

    @property
    def buttons(self) -> list[str]:
        """The keyboard's current button texts."""
        return button_texts(self.keyboard.get("reply_markup"))


class ImageServer:
    """A loopback HTTP server standing in for images.unsplash.com."""

    def __init__(self) -> None:
        self.images: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> ImageServer:
        """Listen on 127.0.0.1 on a free port."""

        async def serve(request: web.Request) -> web.Response:
            self.requests.append(str(request.rel_url))
            body = self.images.get(request.match_info["name"])
            if body is None:
                return web.Response(status=404)
            return web.Response(body=body, content_type="image/jpeg")

        app = web.Application()
        app.router.add_get("/img/{name}", serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    def url(self, name: str) -> str:
        """The URL of image ``name``."""
        return f"http://127.0.0.1:{self.port}/img/{name}"

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture(scope="session")
def encoder(tiny_clip_dir: Path) -> Any:
    """The tiny CLIP encoder, loaded once for the whole run."""
    from core.encoder import ClipEncoder

    enc = ClipEncoder(str(tiny_clip_dir), device="cpu", torch_threads=1)
    enc.embed_texts(["warm up"])
    return enc


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApi]:
    """The fake Telegram Bot API on 127.0.0.1."""
    async with FakeBotApi() as server:
        yield server


@pytest.fixture
async def images() -> AsyncIterator[ImageServer]:
    """The loopback image host."""
    server = await ImageServer().start()
    yield server
    await server.stop()


@pytest.fixture
def bot_settings(settings: Settings) -> Settings:
    """Settings with the fake server's token, albums of 9."""
    return settings.with_(telegram_token=DEFAULT_TOKEN, album_size=9)


def fill_store(
    settings: Settings,
    store: Any,
    images: ImageServer,
    n: int,
    *,
    seed: int = 0,
    vectors: np.ndarray | None = None,
    contents: list[bytes] | None = None,
    photos: Path | None = None,
) -> Dataset:
    """Insert ``n`` random unit vectors (or ``vectors``): two thirds from a folder, a third from
    "Unsplash" URLs.

    Every image gets a cached thumbnail (as ingest keeps one; ``contents`` gives their bytes);
    Unsplash ones are also served by ``images`` so the fake Telegram can fetch them. With ``photos``,
    folder images are also written there as originals, their URL the file's ``file://`` URI (as
    ``vdx ingest folder`` stores it).
    """
    if vectors is None:
        rng = np.random.default_rng(seed)
        vectors = rng.normal(size=(n, store.dim)).astype(np.float32)
    vectors = np.asarray(vectors, dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cache = settings.image_cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    ds = Dataset(ids=[], urls={}, sources={})
    captions = []
    for i in range(n):
        source = "unsplash" if i % 3 == 2 else "folder"
        image_id = f"{'u' if source == 'unsplash' else 'f'}{i:04d}"
        content = contents[i] if contents is not None else jpeg(seed * 100_000 + i)
        (cache / f"{image_id}.jpg").write_bytes(content)
        if source == "unsplash":
            images.images[f"{image_id}.jpg"] = content
            url = images.url(f"{image_id}.jpg")
        elif photos is not None:
            photos.mkdir(parents=True, exist_ok=True)
            (photos / f"{image_id}.jpg").write_bytes(content)
            url = (photos / f"{image_id}.jpg").resolve().as_uri()
        else:
            url = f"file:///photos/{image_id}.jpg"
        ds.ids.append(image_id)
        ds.urls[image_id] = url
        ds.sources[image_id] = source
        ds.by_digest[digest(content)] = image_id
        captions.append(f"photo {i}")
    remember_folder(settings, Path("/photos"))  # as `vdx ingest folder /photos` records it
    store.insert(
        ImageBatch(
            ids=ds.ids,
            urls=[ds.urls[i] for i in ds.ids],
            vectors=vectors,
            captions=captions,
            sources=[ds.sources[i] for i in ds.ids],
        )
    )
    return ds


@pytest.fixture
def make_store(encoder: Any) -> Iterator[Callable[[Settings], Any]]:
    """Open (and at teardown close) the embedded store of some settings, with the encoder's dim."""
    from core.store import open_store

    opened: list[Any] = []

    def make(s: Settings) -> Any:
        store = open_store(s, dim=encoder.dim)
        store.ensure_schema()
        opened.append(store)
        return store

    yield make
    for store in opened:  # chDB allows one database path per process: release it for the next test
        store.close()


@pytest.fixture
def store(bot_settings: Settings, make_store: Callable[[Settings], Any]) -> Any:
    """A real embedded chDB store under tmp_path."""
    return make_store(bot_settings)


@pytest.fixture
def dataset(bot_settings: Settings, store: Any, images: ImageServer) -> Dataset:
    """90 images in the store (60 folder, 30 Unsplash-like), thumbnails in the cache."""
    return fill_store(bot_settings, store, images, 90)


BotFactory = Callable[..., AbstractAsyncContextManager[Any]]


@pytest.fixture
def start_bot(fake: FakeBotApi, store: Any, encoder: Any, bot_settings: Settings) -> BotFactory:
    """``async with start_bot(**settings_changes) as app:`` runs the real bot against the fake server.

    ``with_store=`` runs it on another store than the embedded one of ``store``.
    """
    from bot.app import build_application, running

    @asynccontextmanager
    async def start(*, with_store: Any = None, **changes: Any) -> AsyncIterator[Any]:
        s = bot_settings.with_(**changes) if changes else bot_settings
        app = build_application(s, store=with_store or store, encoder=encoder, api_url=fake.base_url)
        async with running(app):
            yield app

    return start


@pytest.fixture
async def bot(start_bot: BotFactory, dataset: Dataset) -> AsyncIterator[Any]:
    """The bot, running on the 90-image dataset."""
    async with start_bot() as app:
        yield app


async def next_round(fake: FakeBotApi, ds: Dataset, chat: int, *, since: int, timeout: float = 15.0) -> Round:
    """Wait for the album to ``chat`` and then its keyboard message (the one with the control row)."""
    album = (await fake.wait_for("sendMediaGroup", lambda c: c.chat_id == chat, timeout, since=since))[0]
    keyboard = (
        await fake.wait_for(
            "sendMessage",
            lambda c: c.chat_id == chat and "🔁 Refine" in button_texts(c.params.get("reply_markup")),
            timeout,
            since=album.seq,
        )
    )[0]
    return Round(album=album, keyboard=keyboard.result, ids=[ds.id_of(b) for b in album.contents])


async def reply_text(fake: FakeBotApi, chat: int, needle: str, *, since: int, timeout: float = 10.0) -> str:
    """Text of the first message to ``chat`` containing ``needle`` (case-insensitive)."""
    call = await fake.wait_for_reply(chat, lambda t: needle.lower() in t.lower(), timeout, since=since)
    return str(call.params["text"])


async def callback_answer(fake: FakeBotApi, query_id: str, timeout: float = 10.0) -> Call:
    """The ``answerCallbackQuery`` for ``query_id``."""
    calls = await fake.wait_for(
        "answerCallbackQuery", lambda c: c.params.get("callback_query_id") == query_id, timeout
    )
    return calls[0]


def vote_count(buttons: list[str], emoji: str, i: int) -> int:
    """The count shown on the ``{emoji} {i}`` button (``"👍 3 ·2"`` -> 2, no count -> 0)."""
    prefix = f"{emoji} {i}"
    for text in buttons:
        if text.startswith(prefix) and not text[len(prefix) :][:1].isdigit():
            digits = re.findall(r"\d+", text[len(prefix) :])
            return int(digits[0]) if digits else 0
    raise LookupError(f"no {prefix!r} button in {buttons}")


def label_value(cell: str) -> int:
    """A label or vote cell of the exported CSV as -1, 0 or +1."""
    cell = cell.strip().lower()
    words = {
        "": 0,
        "positive": 1,
        "negative": -1,
        "pos": 1,
        "neg": -1,
        "👍": 1,
        "👎": -1,
        "up": 1,
        "down": -1,
    }
    return words[cell] if cell in words else int(float(cell))


def read_csv(content: bytes) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of an exported CSV (UTF-8, optional BOM)."""
    reader = csv.DictReader(io.StringIO(content.decode("utf-8-sig")))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


async def exported(fake: FakeBotApi, chat: int, *, since: int) -> tuple[bytes, dict[str, Any]]:
    """The ``labels.csv`` bytes and the parsed ``classifier.json`` the bot sent to ``chat``."""
    docs = await fake.wait_for("sendDocument", lambda c: c.chat_id == chat, 15.0, count=2, since=since)
    by_name = {}
    for call in docs:
        for part, content in call.files.items():
            by_name[call.filenames.get(part, part)] = content
    assert set(by_name) >= {"labels.csv", "classifier.json"}, f"documents sent: {sorted(by_name)}"
    return by_name["labels.csv"], json.loads(by_name["classifier.json"])


def first_round(store: Any, encoder: Any, concept: str, k: int = 9) -> list[Any]:
    """The images a first round of ``concept`` shows: the same core call the bot makes (default strategy)."""
    from core.explorer import Explorer

    explorer = Explorer(store, encoder)
    return explorer.next_batch(explorer.start_text(concept), k)
