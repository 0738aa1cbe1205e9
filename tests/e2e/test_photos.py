"""Photos people send: huge ones and failed downloads get one clear reply, and memory stays bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.bigimages import flat_png
from tests.e2e.conftest import Dataset, jpeg, next_round, reply_text
from tests.e2e.fake_bot_api import FakeBotApi

CHAT = 707
UNREADABLE = "could not read that photo"
# What opening one refused photo may add to the bot's peak resident memory (core.images refuses
# them from the header; bench/results/photo_memory.md measures ~2 MB in a bare interpreter).
REFUSED_PEAK_BUDGET_MB = 64
PROC = Path("/proc/self/status")


def _kib(key: str) -> int:
    for line in PROC.read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    raise LookupError(key)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("side", [12000, 20000])
async def test_a_huge_png_gets_a_clear_reply_within_the_memory_budget(
    fake: FakeBotApi, bot: Any, dataset: Dataset, side: int
) -> None:
    png = flat_png(side, side)
    _reset_peak()
    before = _kib("VmRSS")
    since = fake.mark()
    fake.user_photo(CHAT, CHAT, png)
    await reply_text(fake, CHAT, UNREADABLE, since=since, timeout=30)
    peak_mb = (_kib("VmHWM") - before) / 1024
    assert peak_mb < REFUSED_PEAK_BUDGET_MB, f"peak RSS rose by {peak_mb:.0f} MB"
    await fake.settle()
    assert not fake.find("sendMediaGroup", since=since)
    # the chat goes on: an ordinary photo still starts a session
    since = fake.mark()
    fake.user_photo(CHAT, CHAT, jpeg(11, side=320))
    assert len((await next_round(fake, dataset, CHAT, since=since)).ids) == 9


@pytest.mark.parametrize("status", [404, 502])
async def test_a_photo_that_cannot_be_downloaded_gets_a_reply(
    fake: FakeBotApi, bot: Any, dataset: Dataset, status: int
) -> None:
    fake.fail_next("download", status=status, description="Not Found" if status == 404 else "Bad Gateway")
    since = fake.mark()
    fake.user_photo(CHAT, CHAT, jpeg(12))
    await reply_text(fake, CHAT, UNREADABLE, since=since)
    await fake.settle()
    assert not fake.find("sendMediaGroup", since=since)
