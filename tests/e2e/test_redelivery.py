"""A press Telegram delivers again (the bot was killed before confirming it) changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config import Settings
from tests.e2e.bot_process import START_TIMEOUT, bot_process, kill_9
from tests.e2e.conftest import Dataset, exported, label_value, next_round, read_csv
from tests.e2e.fake_bot_api import FakeBotApi

CHAT = 505


async def test_a_press_redelivered_after_kill_9_keeps_its_vote(
    fake: FakeBotApi, dataset: Dataset, store: Any, bot_settings: Settings, tmp_path: Path
) -> None:
    store.close()  # the bot process opens the embedded database itself
    output = tmp_path / "bot.log"
    with bot_process(bot_settings, fake.base_url, fake.token, output) as proc:
        since = fake.mark()
        fake.user_message(CHAT, CHAT, "a lighthouse at night")
        r1 = await next_round(fake, dataset, CHAT, since=since, timeout=START_TIMEOUT)
        await fake.settle()

        fake.hold_polls()  # the poll that would confirm the press never reaches Telegram
        query = fake.press(CHAT, CHAT, r1.keyboard, "👍 1")
        first = await fake.wait_for(
            "answerCallbackQuery", lambda c: c.params.get("callback_query_id") == query, 30.0
        )
        assert str(first[0].params.get("text")) == "👍 1 recorded"
        kill_9(proc)
    fake.hold_polls(False)

    with bot_process(bot_settings, fake.base_url, fake.token, output):
        since = fake.mark()
        again = await fake.wait_for(
            "answerCallbackQuery",
            lambda c: c.params.get("callback_query_id") == query,
            START_TIMEOUT,
            since=since,
        )
        assert str(again[0].params.get("text")) == "👍 1 recorded"  # answered as before
        fake.user_message(CHAT, CHAT, "/export")
        csv_bytes, _ = await exported(fake, CHAT, since=since)
        _, rows = read_csv(csv_bytes)
        assert {r["image_id"]: label_value(r["label"]) for r in rows} == {r1.ids[0]: 1}
    assert "Traceback" not in output.read_text()
