"""Saved concepts (/save, /concepts, /find @NAME, /forget) and alerts (/watch) through the real bot."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import numpy as np

from core.records import ImageBatch
from tests.e2e.conftest import (
    BotFactory,
    Dataset,
    callback_answer,
    digest,
    jpeg,
    next_round,
    reply_text,
)
from tests.e2e.fake_bot_api import FakeBotApi

CHAT = 606


async def _vote(fake: FakeBotApi, keyboard: dict[str, Any], button: str) -> None:
    since = fake.mark()
    await callback_answer(fake, fake.press(CHAT, CHAT, keyboard, button))
    await fake.wait_for(
        "editMessageReplyMarkup", lambda c: c.params.get("message_id") == keyboard["message_id"], since=since
    )


async def _say(fake: FakeBotApi, text: str, needle: str) -> str:
    since = fake.mark()
    fake.user_message(CHAT, CHAT, text)
    return await reply_text(fake, CHAT, needle, since=since)


def _ingest(settings: Any, store: Any, ds: Dataset, near: np.ndarray, prefix: str, seed: int) -> list[str]:
    """Add 12 folder images while the bot runs: 6 close to ``near``, 6 random."""
    rng = np.random.default_rng(seed)
    X = np.vstack([near + 0.15 * rng.standard_normal((6, store.dim)), rng.standard_normal((6, store.dim))])
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"{prefix}{i:02d}" for i in range(len(X))]
    for k, image_id in enumerate(ids):
        content = jpeg(seed * 1000 + k)
        (settings.image_cache_dir / f"{image_id}.jpg").write_bytes(content)
        ds.by_digest[digest(content)] = image_id
        ds.sources[image_id] = "folder"
    store.insert(ImageBatch(ids, [f"file:///new/{i}.jpg" for i in ids], X, ids, ["folder"] * len(ids)))
    return ids


def _is_alert(text: object) -> bool:
    return re.match(r"🔔 \d+ new image", str(text)) is not None


async def _alert(fake: FakeBotApi, ds: Dataset, since: int, timeout: float = 20.0) -> tuple[list[str], str]:
    note = (
        await fake.wait_for(
            "sendMessage",
            lambda c: c.chat_id == CHAT and _is_alert(c.params.get("text")),
            timeout,
            since=since,
        )
    )[0]
    album = [c for c in fake.calls[since : note.seq] if c.method in ("sendMediaGroup", "sendPhoto") and c.ok]
    assert len(album) == 1
    return [ds.id_of(b) for b in album[0].contents], str(note.params["text"])


def _alerts_since(fake: FakeBotApi, since: int) -> int:
    return len(
        fake.find(
            "sendMessage",
            lambda c: c.chat_id == CHAT and _is_alert(c.params.get("text")),
            since=since,
        )
    )


async def test_save_list_continue_and_forget_a_concept(fake: FakeBotApi, bot: Any, dataset: Dataset) -> None:
    assert "No saved concepts" in await _say(fake, "/concepts", "saved")
    assert "Nothing to show yet" in await _say(fake, "/save fox", "session")
    since = fake.mark()
    fake.user_message(CHAT, CHAT, "/find a red fox")
    r1 = await next_round(fake, dataset, CHAT, since=since)
    for button in ("👍 1", "👍 2", "👎 9"):
        await _vote(fake, r1.keyboard, button)
    assert "one-word name" in await _say(fake, "/save two words", "name")
    text = await _say(fake, "/save Fox", "Saved")
    assert "Fox" in text and "👍 2 / 👎 1" in text and "boundary" in text
    assert "Updated" in await _say(fake, "/save fox", "fox")  # names are case-insensitive
    listing = await _say(fake, "/concepts", "Saved concepts")
    assert "fox" in listing and "a red fox" in listing and "3 labels" in listing

    # /find @fox: a new session from the saved classifier; its labels carry over (never shown again).
    since = fake.mark()
    fake.user_message(CHAT, CHAT, "/find @fox")
    r2 = await next_round(fake, dataset, CHAT, since=since)
    assert "a red fox" in r2.keyboard["text"] and not set(r2.ids) & {r1.ids[0], r1.ids[1], r1.ids[8]}
    assert "no saved concept" in (await _say(fake, "/find @wolf", "saved concept")).lower()

    assert "Forgot fox" in await _say(fake, "/forget fox", "Forgot")
    assert "No saved concepts" in await _say(fake, "/concepts", "saved")
    assert "no saved concept" in (await _say(fake, "/forget fox", "saved concept")).lower()


async def test_a_watched_concept_gets_one_album_per_ingest_and_none_again_after_a_restart(
    fake: FakeBotApi, start_bot: BotFactory, dataset: Dataset, store: Any, bot_settings: Any
) -> None:
    async with start_bot(alert_interval=1.0):
        since = fake.mark()
        fake.user_message(CHAT, CHAT, "/find a lighthouse")
        r1 = await next_round(fake, dataset, CHAT, since=since)
        for button in ("👍 1", "👍 2", "👎 8", "👎 9"):
            await _vote(fake, r1.keyboard, button)
        await _say(fake, "/save light", "Saved")
        assert "Watching light" in await _say(fake, "/watch light", "light")
        assert "Already watching" in await _say(fake, "/watch light", "light")
        assert "🔔 watched" in await _say(fake, "/concepts", "Saved concepts")
        await asyncio.sleep(2.5)
        assert _alerts_since(fake, 0) == 0  # nothing new yet

        _, good = store.vectors([r1.ids[0]])
        since = fake.mark()
        first = _ingest(bot_settings, store, dataset, good[0], "n1-", 1)
        shown, text = await _alert(fake, dataset, since)
        assert shown and set(shown) <= set(first) and "light" in text
        await asyncio.sleep(3.5)
        assert _alerts_since(fake, since) == 1  # one album for the ingest, not one per look

    since = fake.mark()
    async with start_bot(alert_interval=1.0):
        await asyncio.sleep(3.5)
        assert _alerts_since(fake, since) == 0  # the restart does not post it again
        second = _ingest(bot_settings, store, dataset, good[0], "n2-", 2)
        shown2, _ = await _alert(fake, dataset, since)
        assert set(shown2) <= set(second)  # only the images that are new since
        assert "Stopped watching" in await _say(fake, "/unwatch light", "light")
        since = fake.mark()
        _ingest(bot_settings, store, dataset, good[0], "n3-", 3)
        await asyncio.sleep(3.5)
        assert _alerts_since(fake, since) == 0
