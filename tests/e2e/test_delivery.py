"""Telegram pushes back: flood control (429) and image URLs it cannot fetch."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.e2e.conftest import Dataset, ImageServer, first_round, next_round
from tests.e2e.fake_bot_api import FakeBotApi

CHAT = 404


async def test_429_on_an_album_is_retried_and_it_arrives_once(
    fake: FakeBotApi, bot: Any, dataset: Dataset
) -> None:
    fake.fail_next("sendMediaGroup", status=429, retry_after=1)
    since = fake.mark()
    fake.user_message(CHAT, CHAT, "a green parrot")
    round_ = await next_round(fake, dataset, CHAT, since=since)
    assert len(round_.ids) == 9
    await fake.settle(quiet=1.5)
    attempts = [c for c in fake.calls[since:] if c.method == "sendMediaGroup"]
    assert [c.ok for c in attempts] == [False, True]  # the 429, then exactly one album
    assert round_.album.time - attempts[0].time >= 0.9  # it waited for retry_after


async def test_unfetchable_url_is_uploaded_from_the_cache(
    fake: FakeBotApi, bot: Any, dataset: Dataset, encoder: Any, store: Any, images: ImageServer
) -> None:
    for concept in ("a desert road", "a city at night", "a bowl of fruit", "a sleeping cat", "waves"):
        shown = await asyncio.to_thread(first_round, store, encoder, concept)
        if any(h.source == "unsplash" for h in shown):
            break
    unsplash = {h.id for h in shown if h.source == "unsplash"}
    assert unsplash, "no Unsplash image in these rounds: change the concepts"
    fake.unfetchable.add(f"http://127.0.0.1:{images.port}/")

    since = fake.mark()
    fake.user_message(CHAT, CHAT, concept)
    round_ = await next_round(fake, dataset, CHAT, since=since)
    assert unsplash <= set(round_.ids) and len(round_.ids) == 9
    refused = [c for c in fake.calls[since:] if c.method == "sendMediaGroup" and not c.ok]
    assert refused and "failed to get HTTP URL content" in refused[0].error
    for item, image_id in zip(round_.album.params["media"], round_.ids, strict=True):
        if image_id in unsplash:
            assert not item["media"].startswith("http")  # uploaded from the image cache this time
