"""The labelling loop as a chat sees it: fresh results, no near-duplicates, and a word when nothing else matches."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from core.config import Settings
from core.explorer import DUPLICATE_COSINE, Explorer
from tests.e2e.conftest import (
    BotFactory,
    Dataset,
    ImageServer,
    callback_answer,
    exported,
    fill_store,
    jpeg,
    next_round,
    reply_text,
)
from tests.e2e.fake_bot_api import FakeBotApi

CHAT = 202


async def _vote(fake: FakeBotApi, keyboard: dict[str, Any], button: str, chat: int = CHAT) -> None:
    since = fake.mark()
    await callback_answer(fake, fake.press(chat, chat, keyboard, button))
    await fake.wait_for(
        "editMessageReplyMarkup", lambda c: c.params.get("message_id") == keyboard["message_id"], since=since
    )


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


async def test_results_and_export_reflect_the_latest_votes_without_a_refine(
    fake: FakeBotApi, bot: Any, dataset: Dataset, store: Any, encoder: Any
) -> None:
    concept = "a lighthouse at night"
    since = fake.mark()
    fake.user_message(CHAT, CHAT, concept)
    r1 = await next_round(fake, dataset, CHAT, since=since)
    since = fake.mark()
    fake.user_message(CHAT, CHAT, "/export")
    _, before = await exported(fake, CHAT, since=since)

    for i in range(1, 10):
        await _vote(fake, r1.keyboard, f"{'👍' if i > 5 else '👎'} {i}")

    since = fake.mark()
    fake.press(CHAT, CHAT, r1.keyboard, "⭐ Results")
    album = (await fake.wait_for("sendMediaGroup", lambda c: c.chat_id == CHAT, since=since))[0]
    shown = [dataset.id_of(b) for b in album.contents]
    estimate = await reply_text(fake, CHAT, "score above the decision boundary", since=since)
    assert concept in estimate

    # What the core gives for these very votes, fitted now; not the zero-shot ranking.
    explorer = Explorer(store, encoder)
    zero_shot = [s.id for s in explorer.top(explorer.start_text(concept), 9)]
    fitted = explorer.start_text(concept)
    explorer.fit(fitted, {image_id: (0.6 if n >= 5 else -0.6) for n, image_id in enumerate(r1.ids)})
    assert shown == [s.id for s in explorer.top(fitted, 9)]
    assert shown != zero_shot and not set(shown) & set(r1.ids[:5])

    since = fake.mark()
    fake.user_message(CHAT, CHAT, "/export")
    _, after = await exported(fake, CHAT, since=since)
    assert after["labels"] == 9 and before["labels"] == 0
    assert not np.allclose(after["weights"], before["weights"], atol=1e-4)
    np.testing.assert_allclose(after["weights"], fitted.weights, atol=1e-5)
    assert after["boundary"] is not None


async def test_an_album_never_holds_an_image_and_its_resized_copy(
    fake: FakeBotApi,
    start_bot: BotFactory,
    store: Any,
    images: ImageServer,
    bot_settings: Settings,
    encoder: Any,
) -> None:
    concept = "a red kite over the dunes"
    t = encoder.embed_texts([concept])[0]
    rng = np.random.default_rng(5)
    vectors = _unit(rng.normal(size=(60, store.dim)))
    vectors[0] = _unit(t + 0.3 * _unit(rng.normal(size=store.dim)))  # the best match ...
    # ... and its resized, recompressed copy: CLIP puts those at cosine ~0.97-0.99 of the original.
    vectors[1] = _unit(vectors[0] + 0.15 * _unit(rng.normal(size=store.dim)))
    assert float(vectors[0] @ vectors[1]) > DUPLICATE_COSINE
    original = jpeg(4242, side=64)
    small = io.BytesIO()
    Image.open(io.BytesIO(original)).resize((40, 40), Image.Resampling.BILINEAR).save(
        small, "JPEG", quality=80
    )
    contents = [original, small.getvalue(), *(jpeg(9000 + i) for i in range(58))]
    ds = fill_store(bot_settings, store, images, 60, vectors=vectors, contents=contents)
    pair = {ds.ids[0], ds.ids[1]}

    async with start_bot():
        since = fake.mark()
        fake.user_message(CHAT, CHAT, concept)
        r1 = await next_round(fake, ds, CHAT, since=since)
        assert len(set(r1.ids) & pair) == 1 and len(r1.ids) == 9
        kept = r1.ids.index(next(iter(set(r1.ids) & pair))) + 1
        await _vote(fake, r1.keyboard, f"👍 {kept}")

        since = fake.mark()
        fake.press(CHAT, CHAT, r1.keyboard, "⭐ Results")
        album = (await fake.wait_for("sendMediaGroup", lambda c: c.chat_id == CHAT, since=since))[0]
        assert len({ds.id_of(b) for b in album.contents} & pair) == 1

        since = fake.mark()
        fake.press(CHAT, CHAT, r1.keyboard, "🔁 Refine")
        r2 = await next_round(fake, ds, CHAT, since=since)
        assert not set(r2.ids) & pair  # the copy of a voted image is never shown


async def test_a_refine_with_nothing_left_above_the_boundary_says_so(
    fake: FakeBotApi,
    start_bot: BotFactory,
    store: Any,
    images: ImageServer,
    bot_settings: Settings,
    encoder: Any,
) -> None:
    concept = "a green tram in the rain"
    t = _unit(encoder.embed_texts([concept])[0])
    rng = np.random.default_rng(9)
    others = rng.normal(size=(56, store.dim))
    others -= 1.5 * np.outer(others @ t, t)  # unrelated: pointing away from the concept
    near = t + 0.5 * _unit(rng.normal(size=(4, store.dim)))  # four matches, distinct from each other
    ds = fill_store(bot_settings, store, images, 60, vectors=_unit(np.vstack([near, others])))
    matches = set(ds.ids[:4])

    async with start_bot():
        since = fake.mark()
        fake.user_message(CHAT, CHAT, concept)
        r1 = await next_round(fake, ds, CHAT, since=since)
        assert set(r1.ids[:4]) == matches
        for i, image_id in enumerate(r1.ids, start=1):
            await _vote(fake, r1.keyboard, f"{'👍' if image_id in matches else '👎'} {i}")
        since = fake.mark()
        fake.press(CHAT, CHAT, r1.keyboard, "🔁 Refine")
        r2 = await next_round(fake, ds, CHAT, since=since)  # a round that had 👍 never ends the session
        for i in range(1, 10):
            await _vote(fake, r2.keyboard, f"👎 {i}")

        since = fake.mark()
        fake.press(CHAT, CHAT, r2.keyboard, "🔁 Refine")
        text = await reply_text(fake, CHAT, "Nothing else here looks like", since=since)
        assert concept in text and "⭐ Results has the 4 best" in text
        await fake.settle()
        assert not fake.find("sendMediaGroup", lambda c: c.chat_id == CHAT, since=since)
