"""Composite concepts in the chat: minus and plus terms, a photo with a caption, a /find reply with words."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from bot import texts
from core.explorer import Explorer
from core.query import compose, parse
from tests.e2e.conftest import Dataset, exported, jpeg, next_round, reply_text
from tests.e2e.fake_bot_api import FakeBotApi

CHAT = 404


async def _session_vector(fake: FakeBotApi, chat: int) -> tuple[str, np.ndarray]:
    """The session's concept and weight (= its prior before any vote), from /export."""
    since = fake.mark()
    fake.user_message(chat, chat if chat > 0 else 7, "/export", chat_type="private" if chat > 0 else "group")
    _, model = await exported(fake, chat, since=since)
    return model["concept"], np.asarray(model["weights"], np.float32)


async def test_minus_and_plus_terms_start_a_session_from_the_composite_vector(
    fake: FakeBotApi, bot: Any, dataset: Dataset, encoder: Any, store: Any
) -> None:
    since = fake.mark()
    fake.user_message(CHAT, CHAT, "a red car -truck + a road")
    r = await next_round(fake, dataset, CHAT, since=since)
    expected = Explorer(store, encoder)
    assert r.ids == [h.id for h in expected.next_batch(expected.start_text("a red car -truck + a road"), 9)]
    concept, prior = await _session_vector(fake, CHAT)
    assert concept == "a red car -truck + a road"
    np.testing.assert_allclose(prior, compose(parse(concept), encoder.embed_texts), atol=1e-6)
    assert not np.allclose(prior, encoder.embed_texts(["a red car"])[0], atol=1e-3)

    since = fake.mark()
    fake.user_message(CHAT, CHAT, "/stats")
    stats = await reply_text(fake, CHAT, "image model", since=since)
    assert encoder.model_name.rstrip("/").rsplit("/", 1)[-1] in stats and "text model" in stats


async def test_only_minus_terms_get_one_clear_reply(fake: FakeBotApi, bot: Any, dataset: Dataset) -> None:
    since = fake.mark()
    fake.user_message(CHAT, CHAT, "-truck -bus")
    await reply_text(fake, CHAT, "not only what to leave out", since=since)
    assert not fake.find("sendMediaGroup", since=since)


def _image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


async def test_a_caption_moves_the_photo_toward_its_words(
    fake: FakeBotApi, bot: Any, dataset: Dataset, encoder: Any
) -> None:
    photo = jpeg(999, side=64)
    since = fake.mark()
    fake.user_photo(CHAT, CHAT, photo, caption="at night -people")
    await next_round(fake, dataset, CHAT, since=since)
    concept, prior = await _session_vector(fake, CHAT)
    assert concept == texts.photo_concept("at night -people")
    image_vector = encoder.embed_images([_image(photo)])[0]
    night = encoder.embed_texts(["at night"])[0]
    np.testing.assert_allclose(
        prior, compose(parse("at night -people", photo=True), encoder.embed_texts, image_vector), atol=1e-5
    )
    assert float(prior @ night) > float(image_vector @ night)  # moved toward the words


async def test_a_find_reply_with_words_moves_the_replied_photo(
    fake: FakeBotApi, bot: Any, dataset: Dataset, encoder: Any
) -> None:
    group = -505
    photo_bytes = jpeg(998, side=64)
    photo = fake.user_photo(group, 7, photo_bytes, chat_type="group", deliver=False)
    since = fake.mark()
    fake.user_message(group, 7, "/find in the snow", chat_type="group", reply_to=photo)
    await next_round(fake, dataset, group, since=since)
    concept, prior = await _session_vector(fake, group)
    assert concept == texts.photo_concept("in the snow")
    image_vector = encoder.embed_images([_image(photo_bytes)])[0]
    np.testing.assert_allclose(
        prior, compose(parse("in the snow", photo=True), encoder.embed_texts, image_vector), atol=1e-5
    )
