"""``VDX_ALLOWED_CHATS`` holds whatever happens to the refusal: a chat not on it never gets a session.

Each test makes the refusal itself fail, in one of the ways Telegram fails it: the message to quote
was deleted, flood control answers 429 every time, the press's answer fails once, or the press is
too old to answer because the bot was down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from core.config import Settings
from core.state import State
from tests.e2e.conftest import BotFactory, Dataset, callback_answer, next_round
from tests.e2e.fake_bot_api import BOT_USERNAME, Call, FakeBotApi

ALLOWED = 7
STRANGER_GROUP = -4242
STRANGER = 99


async def attempts(
    fake: FakeBotApi, method: str, chat: int | None, *, since: int, count: int = 1
) -> list[Call]:
    """Wait for ``count`` answered calls of ``method`` (to ``chat``, if given), failed or not."""

    def done() -> list[Call]:
        return [
            c
            for c in fake.calls[since:]
            if c.method == method and c.done and (chat is None or c.chat_id == chat)
        ]

    for _ in range(300):
        if len(done()) >= count:
            return done()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{count} x {method} to {chat} did not come: {[c.method for c in fake.calls[since:]]}")


async def nothing_happened(fake: FakeBotApi, settings: Settings, chat: int, *, since: int) -> None:
    """No album, keyboard edit or document reached ``chat``, and the state holds no session of it."""
    await fake.settle(quiet=1.0)
    sent: Callable[[Call], bool] = lambda c: c.chat_id == chat  # noqa: E731
    for method in ("sendMediaGroup", "sendPhoto", "sendDocument", "editMessageReplyMarkup"):
        assert not fake.find(method, sent, since=since), method
    state = await State.open(settings.state_path)
    try:
        assert await state.latest_session(chat) is None
    finally:
        await state.close()


async def test_a_stranger_group_that_deletes_its_find_gets_nothing(
    fake: FakeBotApi, start_bot: BotFactory, dataset: Dataset, bot_settings: Settings
) -> None:
    async with start_bot(allowed_chats=frozenset({ALLOWED})):
        since = fake.mark()
        for text in (f"/find@{BOT_USERNAME} a red fox", f"/export@{BOT_USERNAME}"):
            msg = fake.user_message(STRANGER_GROUP, STRANGER, text, chat_type="group")
            fake.user_deletes(STRANGER_GROUP, msg)  # gone before the bot can quote it
        refusals = await attempts(fake, "sendMessage", STRANGER_GROUP, since=since, count=2)
        assert all("to be replied not found" in c.error for c in refusals)
        await nothing_happened(fake, bot_settings, STRANGER_GROUP, since=since)


async def test_a_refusal_held_back_by_flood_control_still_refuses(
    fake: FakeBotApi, start_bot: BotFactory, dataset: Dataset, bot_settings: Settings
) -> None:
    async with start_bot(allowed_chats=frozenset({ALLOWED})):
        fake.fail_next("sendMessage", status=429, retry_after=1, times=4)  # more than the bot retries
        since = fake.mark()
        fake.user_message(STRANGER, STRANGER, "a red fox")
        await attempts(fake, "sendMessage", STRANGER, since=since, count=4)
        await nothing_happened(fake, bot_settings, STRANGER, since=since)


async def _old_keyboard(fake: FakeBotApi, start_bot: BotFactory, dataset: Dataset) -> dict[str, object]:
    """A round sent to chat STRANGER while it was still allowed (before the list was set)."""
    async with start_bot():
        since = fake.mark()
        fake.user_message(STRANGER, STRANGER, "a red fox")
        r1 = await next_round(fake, dataset, STRANGER, since=since)
        await fake.settle()
    return r1.keyboard


async def _votes(settings: Settings, chat: int) -> int:
    state = await State.open(settings.state_path)
    try:
        session = await state.latest_session(chat)
        assert session is not None
        return (await state.stats(session.id)).votes
    finally:
        await state.close()


async def test_an_old_keyboard_whose_refusal_fails_stores_no_vote(
    fake: FakeBotApi, start_bot: BotFactory, dataset: Dataset, bot_settings: Settings
) -> None:
    keyboard = await _old_keyboard(fake, start_bot, dataset)
    async with start_bot(allowed_chats=frozenset({ALLOWED})):
        fake.fail_next("answerCallbackQuery", status=500, description="Internal Server Error")
        since = fake.mark()
        fake.press(STRANGER, STRANGER, keyboard, "👍 1")
        answers = await attempts(fake, "answerCallbackQuery", None, since=since)
        assert not answers[0].ok
        fake.press(STRANGER, STRANGER, keyboard, "🔁 Refine")
        await fake.settle(quiet=1.0)
        assert not fake.find("sendMediaGroup", since=since)
        assert not fake.find("editMessageReplyMarkup", since=since)
    assert await _votes(bot_settings, STRANGER) == 0


async def test_a_press_too_old_to_answer_after_downtime_stores_no_vote(
    fake: FakeBotApi, start_bot: BotFactory, dataset: Dataset, bot_settings: Settings
) -> None:
    keyboard = await _old_keyboard(fake, start_bot, dataset)
    fake.callback_answer_window = 0.5
    since = fake.mark()
    query = fake.press(STRANGER, STRANGER, keyboard, "👍 1")  # pressed while the bot is down
    await asyncio.sleep(1.0)
    async with start_bot(allowed_chats=frozenset({ALLOWED})):
        answers = await attempts(fake, "answerCallbackQuery", None, since=since)
        assert answers[0].params["callback_query_id"] == query
        assert "query is too old" in answers[0].error
        await fake.settle(quiet=1.0)
        assert not fake.find("editMessageReplyMarkup", since=since)
    assert await _votes(bot_settings, STRANGER) == 0


async def test_the_allowed_chat_still_works(
    fake: FakeBotApi, start_bot: BotFactory, dataset: Dataset
) -> None:
    async with start_bot(allowed_chats=frozenset({ALLOWED})):
        since = fake.mark()
        fake.user_message(ALLOWED, ALLOWED, "a red fox")
        r1 = await next_round(fake, dataset, ALLOWED, since=since)
        answer = await callback_answer(fake, fake.press(ALLOWED, ALLOWED, r1.keyboard, "👍 1"))
        assert "recorded" in str(answer.params.get("text"))
