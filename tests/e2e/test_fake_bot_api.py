"""The fake Bot API answers python-telegram-bot the way Telegram does (checked without the vdx bot)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, InputMediaPhoto, Update
from telegram.error import BadRequest, InvalidToken, RetryAfter
from telegram.ext import (
    AIORateLimiter,
    Application,
    CallbackQueryHandler,
    ContextTypes,
    ExtBot,
    MessageHandler,
    filters,
)

from tests.e2e.conftest import ImageServer, jpeg
from tests.e2e.fake_bot_api import DEFAULT_TOKEN, FakeBotApi, FloodLimits


@pytest.fixture
async def ptb_bot(fake: FakeBotApi) -> AsyncIterator[Bot]:
    """A PTB bot on the fake server; AIORateLimiter waits out the 429s of quick sends to one chat."""
    async with ExtBot(
        DEFAULT_TOKEN,
        base_url=fake.base_url,
        base_file_url=fake.base_url,
        rate_limiter=AIORateLimiter(max_retries=3),
    ) as b:
        yield b


@pytest.fixture
async def raw_bot(fake: FakeBotApi) -> AsyncIterator[Bot]:
    """A PTB ``Bot`` with no rate limiter: every 429 reaches the caller."""
    async with Bot(DEFAULT_TOKEN, base_url=fake.base_url, base_file_url=fake.base_url) as b:
        yield b


async def test_one_chat_gets_a_short_burst_then_one_message_a_second(raw_bot: Bot, fake: FakeBotApi) -> None:
    for i in range(fake.limits.chat_burst if fake.limits else 0):
        await raw_bot.send_message(7, f"burst {i}")
    with pytest.raises(RetryAfter) as refused:
        await raw_bot.send_message(7, "one too many")
    assert int(refused.value.retry_after) == 1
    body = fake.throttled()[-1]
    assert body.method == "sendMessage" and body.error == "Too Many Requests: retry after 1"
    # other chats and button answers are not held back
    await raw_bot.send_message(8, "another chat")
    assert await raw_bot.answer_callback_query("cq1", text="noted")
    await asyncio.sleep(1.05)
    await raw_bot.send_message(7, "a second later")
    assert [c.params["text"] for c in fake.find("sendMessage") if c.chat_id == 7][-1] == "a second later"


async def test_a_group_gets_twenty_messages_a_minute_edits_included() -> None:
    group = -100
    # a burst allowance as big as the group's minute, so the test need not wait a second per message
    async with (
        FakeBotApi(limits=FloodLimits(chat_burst=30)) as fake,
        Bot(DEFAULT_TOKEN, base_url=fake.base_url) as raw_bot,
    ):
        markup = InlineKeyboardMarkup([[InlineKeyboardButton("👍 1", callback_data="v")]])
        msg = await raw_bot.send_message(group, "round 1", reply_markup=markup)
        for i in range(1, 20):
            new = InlineKeyboardMarkup([[InlineKeyboardButton(f"👍 1 ·{i}", callback_data="v")]])
            await raw_bot.edit_message_reply_markup(group, msg.message_id, reply_markup=new)
        await raw_bot.send_message(-200, "another group is not held back")
        with pytest.raises(RetryAfter) as refused:
            await raw_bot.send_message(group, "the 21st within a minute")
        assert 58 <= int(refused.value.retry_after) <= 60  # until the first one leaves the minute
        assert len(fake.find("editMessageReplyMarkup")) == 19 and len(fake.throttled()) == 1


async def test_unknown_token_is_rejected_like_telegram(fake: FakeBotApi) -> None:
    with pytest.raises(InvalidToken):
        async with Bot("1:wrong", base_url=fake.base_url):
            pass


async def test_album_uploads_urls_and_file_ids(ptb_bot: Bot, fake: FakeBotApi, images: ImageServer) -> None:
    images.images["a.jpg"] = jpeg(1)
    first = await ptb_bot.send_media_group(
        5,
        [
            InputMediaPhoto(InputFile(jpeg(2), filename="f.jpg", attach=True), caption="1"),
            InputMediaPhoto(images.url("a.jpg") + "?w=1080", caption="2"),
        ],
    )
    assert [m.caption for m in first] == ["1", "2"]
    assert fake.find("sendMediaGroup")[0].contents == [jpeg(2), jpeg(1)]
    again = await ptb_bot.send_media_group(
        5, [InputMediaPhoto(first[0].photo[-1].file_id), InputMediaPhoto(first[1].photo[-1].file_id)]
    )
    assert fake.find("sendMediaGroup")[1].contents == [jpeg(2), jpeg(1)]
    assert len(again) == 2

    fake.unfetchable.add(images.url("a.jpg"))
    with pytest.raises(BadRequest, match="(?i)failed to get http url content"):
        await ptb_bot.send_media_group(5, [InputMediaPhoto(jpeg(3)), InputMediaPhoto(images.url("a.jpg"))])
    with pytest.raises(BadRequest, match="(?i)image_process_failed"):
        await ptb_bot.send_media_group(5, [InputMediaPhoto(jpeg(3)), InputMediaPhoto(b"not a jpeg")])
    with pytest.raises(BadRequest):
        await ptb_bot.send_media_group(5, [InputMediaPhoto(jpeg(3))])


async def test_keyboard_rules_and_documents(ptb_bot: Bot, fake: FakeBotApi) -> None:
    too_long = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="a" * 65)]])
    with pytest.raises(BadRequest, match="(?i)button_data_invalid"):
        await ptb_bot.send_message(5, "hi", reply_markup=too_long)
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("👍 1", callback_data="a" * 64)]])
    msg = await ptb_bot.send_message(5, "hi", reply_markup=markup)
    with pytest.raises(BadRequest, match="(?i)not modified"):
        await ptb_bot.edit_message_reply_markup(5, msg.message_id, reply_markup=markup)
    await ptb_bot.send_document(5, InputFile(b"a,b\n1,2\n", filename="labels.csv"))
    doc = fake.find("sendDocument")[0]
    assert doc.files["document"] == b"a,b\n1,2\n"
    assert doc.filenames["document"] == "labels.csv"


async def test_updates_reach_handlers_and_429_is_retried_once(fake: FakeBotApi) -> None:
    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_media_group([InputMediaPhoto(jpeg(7)), InputMediaPhoto(jpeg(8))])
        await update.effective_message.reply_text(
            "round 1",
            reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("👍 1 ·0", callback_data="v1")]]),
        )

    async def answer(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.callback_query is not None
        await update.callback_query.answer(f"got {update.callback_query.data}")

    app = (
        Application.builder()
        .token(DEFAULT_TOKEN)
        .base_url(fake.base_url)
        .base_file_url(fake.base_url)
        .rate_limiter(AIORateLimiter(max_retries=2))
        .build()
    )
    app.add_handler(MessageHandler(filters.TEXT, echo))
    app.add_handler(CallbackQueryHandler(answer))
    fake.fail_next("sendMediaGroup", retry_after=1)
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0.0, timeout=1)
        fake.user_message(5, 5, "/find foxes")
        start = time.perf_counter()
        keyboard = (await fake.wait_for("sendMessage", lambda c: c.chat_id == 5))[0]
        assert time.perf_counter() - start >= 0.9  # waited for retry_after
        assert len(fake.find("sendMediaGroup")) == 1  # the album arrived exactly once
        query = fake.press(5, 5, keyboard.result, "👍 1")
        answers = await fake.wait_for("answerCallbackQuery")
        assert answers[0].params == {"callback_query_id": query, "text": "got v1"}
        await app.updater.stop()
        await app.stop()
