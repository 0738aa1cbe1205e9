"""A missing or rejected bot token is explained, and the token never reaches the logs."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import pytest

from core.errors import VdxError
from tests.e2e.conftest import BotFactory, Dataset, next_round
from tests.e2e.fake_bot_api import FakeBotApi


async def test_missing_token_names_the_variable_and_botfather(start_bot: BotFactory) -> None:
    with pytest.raises(VdxError) as e:
        async with start_bot(telegram_token=""):
            pass
    assert "TELEGRAM_BOT_TOKEN" in str(e.value) and "@BotFather" in str(e.value)


async def test_rejected_token_is_explained_without_showing_it(
    start_bot: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "1000:this-token-was-revoked-SECRET"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(VdxError) as e:
        async with start_bot(telegram_token=secret):
            pass
    assert "TELEGRAM_BOT_TOKEN" in str(e.value) and "@BotFather" in str(e.value)
    shown = "".join(traceback.format_exception(e.value))  # what a person sees if it goes uncaught
    assert "SECRET" not in shown and "SECRET" not in caplog.text


async def test_working_bot_keeps_its_token_out_of_debug_logs(
    fake: FakeBotApi, bot: Any, dataset: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    since = fake.mark()
    fake.user_message(7, 7, "a lantern")
    await next_round(fake, dataset, 7, since=since)
    assert fake.token not in caplog.text
    assert fake.token.split(":")[1] not in caplog.text
