"""A busy group under Telegram's flood limits: 30 members vote at once, then 🔁 Refine is not kept waiting."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from tests.e2e.conftest import Dataset, next_round
from tests.e2e.fake_bot_api import BOT_USERNAME, FakeBotApi

GROUP = -2002
MEMBERS = 30
BURST_S = 2.0
# The goal (BENCHMARKS.md, busy group) with 50 members is album <= 1.5 s and keyboard <= 3 s; one
# request waiting behind keyboard edits under the per-chat limit costs a second or more.
ALBUM_S, KEYBOARD_S, ANSWER_S = 1.5, 3.0, 2.0


async def test_a_vote_burst_does_not_delay_the_next_round(
    fake: FakeBotApi, bot: Any, dataset: Dataset
) -> None:
    assert fake.limits is not None  # Telegram's limits are on
    since = fake.mark()
    fake.user_message(GROUP, 1, f"/find@{BOT_USERNAME} autumn forest", chat_type="group")
    r1 = await next_round(fake, dataset, GROUP, since=since)

    rng = np.random.default_rng(13)
    burst = fake.mark()
    presses: list[tuple[str, int]] = []
    for member in range(1, MEMBERS + 1):
        button = f"{'👍' if rng.random() < 0.6 else '👎'} {rng.integers(1, 10)}"
        presses.append((fake.press(GROUP, 100 + member, r1.keyboard, button), fake.last_update_id))
        await asyncio.sleep(BURST_S / MEMBERS)
    fake.press(GROUP, 101, r1.keyboard, "🔁 Refine")
    refine = fake.delivery(fake.last_update_id)
    r2 = await next_round(fake, dataset, GROUP, since=burst)

    await refine.sent.wait()
    assert refine.sent_at is not None
    album_s = r2.album.time - refine.sent_at
    keyboard_call = fake.find("sendMessage", lambda c: c.result is r2.keyboard, since=burst)[0]
    keyboard_s = keyboard_call.time - refine.sent_at
    assert album_s <= ALBUM_S, f"🔁 Refine -> album took {album_s:.2f} s"
    assert keyboard_s <= KEYBOARD_S, f"🔁 Refine -> keyboard took {keyboard_s:.2f} s"

    answers = await fake.wait_for("answerCallbackQuery", count=MEMBERS + 1, since=burst)
    answered = {c.params["callback_query_id"]: c.time for c in answers}
    slow = []
    for query, update_id in presses:
        sent_at = fake.delivery(update_id).sent_at
        assert sent_at is not None and query in answered
        if answered[query] - sent_at > ANSWER_S:
            slow.append(answered[query] - sent_at)
    assert not slow, f"presses answered after more than {ANSWER_S} s: {slow}"

    # One edit carries many votes, and nobody was told "Too Many Requests".
    edits = fake.find(
        "editMessageReplyMarkup", lambda c: c.params.get("message_id") == r1.keyboard["message_id"]
    )
    assert 1 <= len(edits) <= MEMBERS // 3, f"{len(edits)} edits for {MEMBERS} votes"
    assert not fake.throttled(since=since), [c.method for c in fake.throttled(since=since)]

    # The new round's keyboard counts the voters (the split stays hidden in groups until Refine).
    since = fake.mark()
    for member in (201, 202, 203):
        fake.press(GROUP, member, r2.keyboard, "👍 2")
    await fake.wait_for(
        "editMessageReplyMarkup",
        lambda c: c.params.get("message_id") == r2.keyboard["message_id"] and "👎 2 · 3 voted" in r2.buttons,
        timeout=15,
        since=since,
    )
    assert not fake.throttled(since=since)
