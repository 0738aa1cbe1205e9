"""Bad input gets a clear reply, never a crash, and nothing is lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from tests.e2e.conftest import (
    BotFactory,
    Dataset,
    ImageServer,
    callback_answer,
    fill_store,
    first_round,
    next_round,
    reply_text,
)
from tests.e2e.fake_bot_api import FakeBotApi

CHAT = 303


async def test_empty_concept_is_refused(fake: FakeBotApi, bot: Any, dataset: Dataset) -> None:
    invisible = ("/find \u200b\u200b", "/find \x00\x00", "/find \u200d\ufeff\u2060", "\u200b \u200c")
    for text in ("/find", "/find    ", "/find \t \n ", "/find@VdxTestBot  ", *invisible):
        since = fake.mark()
        fake.user_message(CHAT, CHAT, text)
        await reply_text(fake, CHAT, "empty", since=since)
        await fake.settle()
        assert not fake.find("sendMediaGroup", since=since), text


async def test_long_concept_is_cut_to_77_tokens_and_still_runs(
    fake: FakeBotApi, bot: Any, dataset: Dataset
) -> None:
    since = fake.mark()
    fake.user_message(CHAT, CHAT, ("a fox jumping over a frozen river " * 160)[:5000])
    round_ = await next_round(fake, dataset, CHAT, since=since)
    assert len(round_.ids) == 9
    await reply_text(fake, CHAT, "77 tokens", since=since)


async def test_odd_text_is_just_text(fake: FakeBotApi, bot: Any, dataset: Dataset, store: Any) -> None:
    odd = ["🦊🌲❄️", "שלום עולם — مرحبا بالعالم", "'; DROP TABLE images; --", "{x:String} ' \" \\ %s {{}}"]
    for i, concept in enumerate(odd):
        since = fake.mark()
        fake.user_message(CHAT + i, CHAT + i, concept)
        round_ = await next_round(fake, dataset, CHAT + i, since=since)
        assert len(round_.ids) == 9
        assert concept.split()[0] in round_.keyboard["text"]
    assert store.count() == len(dataset.ids)


async def test_unknown_command(fake: FakeBotApi, bot: Any, dataset: Dataset) -> None:
    since = fake.mark()
    fake.user_message(CHAT, CHAT, "/frobnicate now")
    text = await reply_text(fake, CHAT, "unknown command", since=since)
    assert "/help" in text


async def test_forged_callback_data(
    fake: FakeBotApi, bot: Any, dataset: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    since = fake.mark()
    fake.user_message(CHAT, CHAT, "a quiet harbour")
    r1 = await next_round(fake, dataset, CHAT, since=since)
    # A real vote button's data pointing at an image position that is not in the round.
    parts = r1.keyboard["reply_markup"]["inline_keyboard"][0][0]["callback_data"].split(":")
    real_but_wrong = ":".join(parts[:2] + ["42"] + parts[3:])
    above_sqlite = str(2**63)  # 19 digits, one more than SQLite's largest integer
    forged = ("garbage", "v:999999:1:u", "c:999999:r", "x" * 64, "🦊", "", real_but_wrong)
    forged += (f"v:{above_sqlite}:1:u", f"c:{above_sqlite}:r", f"v:{'9' * 20}:1:u", f"c:{'9' * 20}:s")
    caplog.set_level(logging.WARNING)
    for data in forged:
        answer = await callback_answer(fake, fake.forged_callback(CHAT, CHAT, data))
        assert "no longer active" in str(answer.params.get("text", "")).lower(), data
    # a press on a message the bot cannot see (inline mode) is answered too
    vote_button = r1.keyboard["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    for data in (vote_button, vote_button.replace("v:", "c:", 1)[:-4] + ":s"):
        answer = await callback_answer(fake, fake.forged_callback(CHAT, CHAT, data, inline=True))
        assert "no longer active" in str(answer.params.get("text", "")).lower(), data
    assert "Traceback" not in caplog.text and not fake.find(
        "sendMessage", lambda c: "went wrong" in c.params["text"]
    )
    # The session is unharmed: a real button still works, and so does /more.
    since = fake.mark()
    await callback_answer(fake, fake.press(CHAT, CHAT, r1.keyboard, "👍 1"))
    await fake.wait_for("editMessageReplyMarkup", lambda c: c.chat_id == CHAT, since=since)
    fake.user_message(CHAT, CHAT, "/more")
    r2 = await next_round(fake, dataset, CHAT, since=since)
    assert r1.ids[0] not in r2.ids


async def test_votes_after_reset_are_stale(fake: FakeBotApi, bot: Any, dataset: Dataset) -> None:
    since = fake.mark()
    fake.user_message(CHAT, CHAT, "a quiet harbour")
    r1 = await next_round(fake, dataset, CHAT, since=since)
    since = fake.mark()
    fake.user_message(CHAT, CHAT, "/reset")
    await fake.wait_for("sendMessage", lambda c: c.chat_id == CHAT, since=since)
    for button in ("👍 1", "👎 2", "🔁 Refine"):
        answer = await callback_answer(fake, fake.press(CHAT, CHAT, r1.keyboard, button))
        assert "no longer active" in str(answer.params.get("text", "")).lower()
    assert not fake.find("sendMediaGroup", since=since)


async def test_stop_button_ends_the_session(fake: FakeBotApi, bot: Any, dataset: Dataset) -> None:
    since = fake.mark()
    fake.user_message(CHAT, CHAT, "a quiet harbour")
    r1 = await next_round(fake, dataset, CHAT, since=since)
    since = fake.mark()
    await callback_answer(fake, fake.press(CHAT, CHAT, r1.keyboard, "⏹ Stop"))
    await fake.wait_for("sendMessage", lambda c: c.chat_id == CHAT, since=since)  # what the user sees
    answer = await callback_answer(fake, fake.press(CHAT, CHAT, r1.keyboard, "👍 1"))
    assert "no longer active" in str(answer.params.get("text", "")).lower()


async def test_vector_database_down_then_back(
    fake: FakeBotApi,
    start_bot: BotFactory,
    bot_settings: Settings,
    make_store: Any,
    images: ImageServer,
    tmp_path: Path,
) -> None:
    from tests.chhttp import ChHttpServer

    server = ChHttpServer(tmp_path / "clickhouse").start()
    try:
        remote = make_store(bot_settings.with_(db_url=server.url))
        ds = fill_store(bot_settings, remote, images, 30)
        async with start_bot(with_store=remote):
            since = fake.mark()
            fake.user_message(CHAT, CHAT, "a quiet harbour")
            r1 = await next_round(fake, ds, CHAT, since=since)

            server.stop()
            since = fake.mark()
            fake.user_message(CHAT + 1, CHAT + 1, "a busy market")
            await reply_text(fake, CHAT + 1, "search backend unavailable", since=since)
            # Other chats keep working: votes, help.
            await callback_answer(fake, fake.press(CHAT, CHAT, r1.keyboard, "👍 1"))
            fake.user_message(CHAT, CHAT, "/help")
            await reply_text(fake, CHAT, "/find", since=since)

            server.start()
            since = fake.mark()
            fake.user_message(CHAT + 1, CHAT + 1, "a busy market")
            r2 = await next_round(fake, ds, CHAT + 1, since=since)
            assert len(r2.ids) == 9
    finally:
        server.stop()


async def test_empty_dataset(fake: FakeBotApi, start_bot: BotFactory) -> None:
    async with start_bot():
        since = fake.mark()
        fake.user_message(CHAT, CHAT, "anything at all")
        text = await reply_text(fake, CHAT, "no images yet", since=since)
        assert "vdx ingest" in text


async def test_chat_outside_the_allow_list(fake: FakeBotApi, start_bot: BotFactory, dataset: Dataset) -> None:
    async with start_bot(allowed_chats=frozenset({CHAT})):
        since = fake.mark()
        fake.user_message(CHAT + 1, CHAT + 1, "a quiet harbour")
        await reply_text(fake, CHAT + 1, "not open to this chat", since=since)
        fake.user_message(CHAT, CHAT, "a quiet harbour")
        await next_round(fake, dataset, CHAT, since=since)
        assert not fake.find("sendMediaGroup", lambda c: c.chat_id == CHAT + 1, since=since)


@pytest.mark.parametrize(
    ("concept", "damage"),
    [
        ("an old bicycle", lambda path: path.unlink()),
        # Telegram would answer IMAGE_PROCESS_FAILED for the whole album.
        ("a broken umbrella", lambda path: path.write_bytes(b"this is not a jpeg")),
    ],
    ids=["missing", "corrupt"],
)
async def test_an_unusable_thumbnail_is_skipped_and_the_album_goes_out(
    fake: FakeBotApi,
    bot: Any,
    dataset: Dataset,
    encoder: Any,
    store: Any,
    bot_settings: Settings,
    concept: str,
    damage: Callable[[Path], object],
) -> None:
    shown = await asyncio.to_thread(first_round, store, encoder, concept)
    bad = next(h.id for h in shown if h.source == "folder")
    damage(bot_settings.image_cache_dir / f"{bad}.jpg")
    since = fake.mark()
    fake.user_message(CHAT, CHAT, concept)
    round_ = await next_round(fake, dataset, CHAT, since=since)
    assert bad not in round_.ids and len(round_.ids) >= 8
