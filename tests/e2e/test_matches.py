"""⭐ Results pages through every match with ▶ and says how many there are; /export sends them all."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from core.explorer import TOP_WITHOUT_BOUNDARY
from tests.e2e.conftest import BotFactory, ImageServer, callback_answer, fill_store, next_round, read_csv
from tests.e2e.fake_bot_api import FakeBotApi, button_texts

CHAT = 404


def _captions(album: Any) -> list[str]:
    if album.method == "sendPhoto":  # a last page of one image goes as a single photo
        return [str(album.params.get("caption", ""))]
    return [str(m.get("caption", "")) for m in album.params["media"]]


def _scores(album: Any) -> list[float]:
    return [float(re.findall(r"score (-?\d+\.\d+)", c)[0]) for c in _captions(album)]


def _ranks(album: Any) -> list[int]:
    return [int(c.split(" ")[0]) for c in _captions(album)]


async def _vote(fake: FakeBotApi, keyboard: dict[str, Any], button: str) -> None:
    since = fake.mark()
    await callback_answer(fake, fake.press(CHAT, CHAT, keyboard, button))
    await fake.wait_for(
        "editMessageReplyMarkup", lambda c: c.params.get("message_id") == keyboard["message_id"], since=since
    )


async def _all_pages(
    fake: FakeBotApi, ds: Any, start: str | dict[str, Any]
) -> tuple[list[str], list[float], list[int], list[str]]:
    """Ask for results (a command, or ⭐ on a keyboard), then press ▶ until there is none."""
    ids: list[str] = []
    scores: list[float] = []
    ranks: list[int] = []
    texts: list[str] = []
    since = fake.mark()
    if isinstance(start, str):
        fake.user_message(CHAT, CHAT, start)
    else:
        fake.press(CHAT, CHAT, start, "⭐ Results")
    while True:
        note = (
            await fake.wait_for(
                "sendMessage",
                lambda c: c.chat_id == CHAT and "⭐" in str(c.params.get("text")),
                20.0,
                since=since,
            )
        )[0]
        album = [
            c for c in fake.calls[since : note.seq] if c.method in ("sendMediaGroup", "sendPhoto") and c.ok
        ][-1]
        ids += [ds.id_of(b) for b in album.contents]
        scores += _scores(album)
        ranks += _ranks(album)
        texts.append(str(note.params["text"]))
        if not any(b.startswith("▶") for b in button_texts(note.params.get("reply_markup"))):
            return ids, scores, ranks, texts
        since = fake.mark()
        await callback_answer(fake, fake.press(CHAT, CHAT, note.result, "▶"))


@pytest.fixture
def big(bot_settings: Any, store: Any, images: ImageServer) -> Any:
    """300 images: more matches than a dozen albums."""
    return fill_store(bot_settings, store, images, 300, seed=4)


async def test_results_page_through_every_match_and_export_sends_them(
    fake: FakeBotApi, start_bot: BotFactory, big: Any, store: Any, encoder: Any, bot_settings: Any
) -> None:
    async with start_bot():
        since = fake.mark()
        fake.user_message(CHAT, CHAT, "/find a lighthouse at night")
        r1 = await next_round(fake, big, CHAT, since=since)
        await _vote(fake, r1.keyboard, "👍 1")
        await _vote(fake, r1.keyboard, "👍 2")

        # Only 👍 so far: no boundary, so the matches are the top 100 by score.
        ids, scores, ranks, texts = await _all_pages(fake, big, r1.keyboard)
        assert len(texts) == -(-TOP_WITHOUT_BOUNDARY // 9) and f"top {TOP_WITHOUT_BOUNDARY}" in texts[0]
        assert len(ids) == len(set(ids)) == TOP_WITHOUT_BOUNDARY  # never a repeat, never a gap
        assert ranks == list(range(1, TOP_WITHOUT_BOUNDARY + 1))
        assert scores == sorted(scores, reverse=True)
        assert texts[1].startswith("⭐ 10–18 of the top 100")
        # The same ranking the classifier gives directly.
        session_w = encoder.embed_texts(["a lighthouse at night"])[0]
        want = store.matches(session_w, None, TOP_WITHOUT_BOUNDARY)
        assert ids == [m.id for m in want.items]

        # /export: labels.csv, classifier.json and matches.csv with every match, best first.
        since = fake.mark()
        fake.user_message(CHAT, CHAT, "/export")
        docs = await fake.wait_for("sendDocument", lambda c: c.chat_id == CHAT, 15.0, count=3, since=since)
        files = {c.filenames.get(p, p): body for c in docs for p, body in c.files.items()}
        assert set(files) == {"labels.csv", "classifier.json", "matches.csv"}
        header, rows = read_csv(files["matches.csv"])
        assert header == ["image_id", "url", "caption", "score", "label"]
        assert len(rows) == TOP_WITHOUT_BOUNDARY > 9  # more than one album's worth
        assert [r["image_id"] for r in rows] == ids
        csv_scores = [float(r["score"]) for r in rows]
        assert csv_scores == sorted(csv_scores, reverse=True)
        assert np.allclose(csv_scores, scores, atol=0.006)  # captions show two decimals
        voted = {r1.ids[0], r1.ids[1]}
        assert {r["image_id"] for r in rows if r["label"] == "1"} == voted & set(ids)
        assert all(r["label"] in ("", "1") for r in rows)
        # Unsplash images by their URL; folder images never by the server's own path.
        assert all(
            r["url"] == (big.urls[i] if big.sources[i] == "unsplash" else f"{i}.jpg")
            for r in rows
            for i in [r["image_id"]]
        )

        # 👎 too: the classifier learns a boundary; /results says how many images score above it.
        await _vote(fake, r1.keyboard, "👎 8")
        await _vote(fake, r1.keyboard, "👎 9")
        since = fake.mark()
        fake.user_message(CHAT, CHAT, "/more")
        await next_round(fake, big, CHAT, since=since)
        ids, scores, ranks, texts = await _all_pages(fake, big, "/results")
        m = re.search(
            r"(\d+) images? in the collection scores? above the decision boundary \((-?\d+\.\d+)\)", texts[0]
        )
        assert m, texts[0]
        total, boundary = int(m[1]), float(m[2])
        assert total > 0
        # The first album holds the best 9 (the closest ones too when fewer match); ▶ pages through the rest.
        assert len(ids) == len(set(ids)) == max(total, 9)
        assert not {r1.ids[7], r1.ids[8]} & set(ids)  # what the chat rejected is never a match
        assert all(s >= boundary - 0.006 for s in scores[:total])
        assert scores == sorted(scores, reverse=True)
        if total > 9:
            assert texts[1].startswith("⭐ 10–") and f"of {total} images that match" in texts[1]


async def test_a_page_button_from_another_chat_is_refused(
    fake: FakeBotApi, start_bot: BotFactory, big: Any
) -> None:
    async with start_bot():
        since = fake.mark()
        fake.user_message(CHAT, CHAT, "/find boats")
        await next_round(fake, big, CHAT, since=since)
        since = fake.mark()
        fake.user_message(CHAT, CHAT, "/results")
        note = (
            await fake.wait_for(
                "sendMessage",
                lambda c: c.chat_id == CHAT and "⭐" in str(c.params.get("text")),
                20.0,
                since=since,
            )
        )[0]
        data = note.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        other = CHAT + 1
        fake.user_message(other, other, "/help")
        await fake.wait_for("sendMessage", lambda c: c.chat_id == other, 10.0)
        query = fake.forged_callback(other, other, data)
        answer = await callback_answer(fake, query)
        assert "no longer active" in str(answer.params.get("text", "")).lower()
