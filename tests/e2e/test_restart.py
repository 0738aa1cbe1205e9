"""The bot restarts in the middle of a session: buttons on the old message keep working."""

from __future__ import annotations

from tests.e2e.conftest import BotFactory, Dataset, callback_answer, next_round, vote_count
from tests.e2e.fake_bot_api import FakeBotApi

CHAT = 202


async def test_restart_keeps_votes_and_old_buttons_work(
    fake: FakeBotApi, start_bot: BotFactory, dataset: Dataset
) -> None:
    async with start_bot():
        since = fake.mark()
        fake.user_message(CHAT, CHAT, "a lighthouse at night")
        r1 = await next_round(fake, dataset, CHAT, since=since)
        await callback_answer(fake, fake.press(CHAT, CHAT, r1.keyboard, "👍 1"))
        await fake.settle()

    # A new Application on the same data dir: state comes back from SQLite.
    async with start_bot():
        since = fake.mark()
        answer = await callback_answer(fake, fake.press(CHAT, CHAT, r1.keyboard, "👎 2"))
        assert "no longer active" not in str(answer.params.get("text", "")).lower()
        await fake.wait_for("editMessageReplyMarkup", lambda c: c.chat_id == CHAT, since=since)
        # The edited keyboard shows the vote from before the restart and the one after it.
        assert vote_count(r1.buttons, "👍", 1) == 1 and vote_count(r1.buttons, "👎", 2) == 1

        since = fake.mark()
        fake.press(CHAT, CHAT, r1.keyboard, "🔁 Refine")
        r2 = await next_round(fake, dataset, CHAT, since=since)
        assert not set(r2.ids) & {r1.ids[0], r1.ids[1]}
        assert len(r2.ids) == 9
