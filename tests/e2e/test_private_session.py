"""One person teaches a concept in a private chat: album, votes, refine, results, stats, export."""

from __future__ import annotations

import re
from typing import Any

from tests.e2e.conftest import (
    CONTROLS,
    Dataset,
    ImageServer,
    callback_answer,
    exported,
    jpeg,
    label_value,
    next_round,
    read_csv,
    reply_text,
    vote_count,
)
from tests.e2e.fake_bot_api import FakeBotApi, button_texts

CHAT = 101


def _numbers(captions: list[str]) -> list[int]:
    return [int(m.group(1)) if (m := re.match(r"(\d+)", c)) else -1 for c in captions]


async def _vote(fake: FakeBotApi, chat: int, user: int, keyboard: dict[str, Any], button: str) -> None:
    """Press a button and wait until the bot has answered it and edited the keyboard."""
    since = fake.mark()
    query = fake.press(chat, user, keyboard, button)
    await callback_answer(fake, query)
    await fake.wait_for(
        "editMessageReplyMarkup", lambda c: c.params.get("message_id") == keyboard["message_id"], since=since
    )


async def test_private_session_from_concept_to_export(
    fake: FakeBotApi, bot: Any, dataset: Dataset, encoder: Any, images: ImageServer
) -> None:
    concept = "a red fox in the snow"
    since = fake.mark()
    fake.user_message(CHAT, CHAT, concept)
    r1 = await next_round(fake, dataset, CHAT, since=since)

    # An album of 9 numbered images, then one keyboard message naming the concept and the round.
    assert len(r1.ids) == 9 and len(set(r1.ids)) == 9
    assert _numbers(r1.captions) == list(range(1, 10))
    text = r1.keyboard["text"]
    assert concept in text and re.search(r"\b1\b", text)
    for i in range(1, 10):
        assert vote_count(r1.buttons, "👍", i) == 0 and vote_count(r1.buttons, "👎", i) == 0
    assert (
        tuple(button_texts({"inline_keyboard": r1.keyboard["reply_markup"]["inline_keyboard"][-1:]}))
        == CONTROLS
    )

    # Unsplash images go by URL with a size parameter; folder images are uploaded from the cache.
    for item, image_id in zip(r1.album.params["media"], r1.ids, strict=True):
        if dataset.sources[image_id] == "unsplash":
            assert item["media"].startswith(dataset.urls[image_id]) and "w=" in item["media"]
        else:
            assert item["media"].startswith("attach://")

    # Votes: a 👍, a 👍 taken back, a 👎 switched to 👍, a 👎. The keyboard shows the counts.
    await _vote(fake, CHAT, CHAT, r1.keyboard, "👍 1")
    assert vote_count(r1.buttons, "👍", 1) == 1
    await _vote(fake, CHAT, CHAT, r1.keyboard, "👍 2")
    await _vote(fake, CHAT, CHAT, r1.keyboard, "👍 2")
    assert vote_count(r1.buttons, "👍", 2) == 0
    await _vote(fake, CHAT, CHAT, r1.keyboard, "👎 3")
    await _vote(fake, CHAT, CHAT, r1.keyboard, "👍 3")
    assert (vote_count(r1.buttons, "👍", 3), vote_count(r1.buttons, "👎", 3)) == (1, 0)
    await _vote(fake, CHAT, CHAT, r1.keyboard, "👎 4")
    assert vote_count(r1.buttons, "👎", 4) == 1
    positive, negative = {r1.ids[0], r1.ids[2]}, {r1.ids[3]}

    # Refine: the next round never shows an image labelled in this session.
    since = fake.mark()
    query = fake.press(CHAT, CHAT, r1.keyboard, "🔁 Refine")
    await callback_answer(fake, query)
    r2 = await next_round(fake, dataset, CHAT, since=since)
    assert len(r2.ids) == 9 and not set(r2.ids) & (positive | negative)
    assert re.search(r"\b2\b", r2.keyboard["text"])
    await _vote(fake, CHAT, CHAT, r2.keyboard, "👎 1")
    negative.add(r2.ids[0])

    since = fake.mark()
    fake.user_message(CHAT, CHAT, "/more")
    r3 = await next_round(fake, dataset, CHAT, since=since)
    assert not set(r3.ids) & (positive | negative)

    # Results: an album ranked 1.. with scores, best first.
    since = fake.mark()
    fake.press(CHAT, CHAT, r3.keyboard, "⭐ Results")
    results = (await fake.wait_for("sendMediaGroup", lambda c: c.chat_id == CHAT, since=since))[0]
    captions = [str(m.get("caption", "")) for m in results.params["media"]]
    assert _numbers(captions) == list(range(1, len(captions) + 1)) and len(captions) >= 2
    assert all("score" in c for c in captions)
    scores = [float(re.findall(r"-?\d+\.\d+", c)[0]) for c in captions]
    assert scores == sorted(scores, reverse=True)

    since = fake.mark()
    fake.user_message(CHAT, CHAT, "/stats")
    stats = await reply_text(fake, CHAT, "rounds", since=since)
    assert concept in stats and "labels" in stats.lower() and "voters" in stats.lower()

    since = fake.mark()
    fake.user_message(CHAT, CHAT, "/export")
    csv_bytes, model = await exported(fake, CHAT, since=since)
    header, rows = read_csv(csv_bytes)
    assert header[:4] == ["image_id", "url", "label", "soft_label"] and len(header) == 5  # one voter column
    labels = {r["image_id"]: label_value(r["label"]) for r in rows}
    assert {i for i, v in labels.items() if v > 0} == positive
    assert {i for i, v in labels.items() if v < 0} == negative
    # folder images by their path in the ingested folder (/photos), never the server's file:// URL
    shown = {i: u.removeprefix("file:///photos/") for i, u in dataset.urls.items()}
    assert all(r["url"] == shown[r["image_id"]] for r in rows) and b"file://" not in csv_bytes
    assert all(label_value(r[header[4]]) == labels[r["image_id"]] for r in rows if labels[r["image_id"]])
    assert (
        model["concept"] == concept and model["dim"] == encoder.dim and len(model["weights"]) == encoder.dim
    )
    n_labels = model["labels"] if isinstance(model["labels"], int) else len(model["labels"])
    assert n_labels == len(positive | negative)


async def test_photo_and_reply_to_photo_start_sessions(fake: FakeBotApi, bot: Any, dataset: Dataset) -> None:
    since = fake.mark()
    fake.user_photo(CHAT, CHAT, jpeg(999, side=64))
    r1 = await next_round(fake, dataset, CHAT, since=since)
    assert _numbers(r1.captions) == list(range(1, 10))

    group = -300
    # Privacy mode hides the photo itself from the bot; the /find reply carries it.
    photo = fake.user_photo(group, 7, jpeg(998, side=64), chat_type="group", deliver=False)
    since = fake.mark()
    fake.user_message(group, 7, "/find", chat_type="group", reply_to=photo)
    r2 = await next_round(fake, dataset, group, since=since)
    assert len(r2.ids) == 9


async def test_help_and_images_are_uploaded_once(fake: FakeBotApi, bot: Any, dataset: Dataset) -> None:
    for command in ("/start", "/help"):
        since = fake.mark()
        fake.user_message(CHAT, CHAT, command)
        assert "/find" in await reply_text(fake, CHAT, "/find", since=since)

    since = fake.mark()
    fake.user_message(CHAT, CHAT, "/find mountains at dawn")
    first = await next_round(fake, dataset, CHAT, since=since)
    since = fake.mark()
    fake.user_message(CHAT + 1, CHAT + 1, "/find mountains at dawn")
    second = await next_round(fake, dataset, CHAT + 1, since=since)
    assert second.ids == first.ids
    # Folder images went up once; the second album reuses Telegram's file_ids.
    for item, image_id in zip(second.album.params["media"], second.ids, strict=True):
        if dataset.sources[image_id] == "folder":
            assert not item["media"].startswith(("attach://", "http")), item["media"]
