"""Round keyboards: the buttons people see and callback data that fits Telegram's 64 bytes."""

from __future__ import annotations

import pytest

from bot.keyboards import (
    MAX_CALLBACK_BYTES,
    RESULTS,
    ControlPress,
    VotePress,
    control_data,
    parse,
    round_keyboard,
    vote_data,
)
from core.state import StaleRound, Tally

BIGGEST_ROUND = 2**62  # far beyond any SQLite rowid this bot will reach


def texts(markup: object) -> list[str]:
    return [b.text for row in markup.inline_keyboard for b in row]  # type: ignore[attr-defined]


def test_a_round_has_up_and_down_buttons_per_image_and_the_control_row() -> None:
    tallies = [Tally(i, f"img{i}") for i in range(1, 10)]
    markup = round_keyboard(7, tallies)
    shown = texts(markup)
    for i in range(1, 10):
        assert f"👍 {i}" in shown and f"👎 {i}" in shown
    assert markup.inline_keyboard[-1][0].text == "🔁 Refine"
    assert [b.text for b in markup.inline_keyboard[-1]] == ["🔁 Refine", "⭐ Results", "⏹ Stop"]
    assert all(len(row) <= 8 for row in markup.inline_keyboard)  # Telegram's limit per row


def test_counts_follow_the_number_once_there_are_votes() -> None:
    shown = texts(round_keyboard(1, [Tally(3, "x", up=2, down=1), Tally(4, "y")]))
    assert shown[:4] == ["👍 3 ·2", "👎 3 ·1", "👍 4", "👎 4"]


def test_callback_data_round_trips_and_fits_64_bytes() -> None:
    for data, press in [
        (vote_data(BIGGEST_ROUND, 10, 1), VotePress(BIGGEST_ROUND, 10, 1)),
        (vote_data(BIGGEST_ROUND, 1, -1), VotePress(BIGGEST_ROUND, 1, -1)),
        (control_data(BIGGEST_ROUND, "stop"), ControlPress(BIGGEST_ROUND, "stop")),
        (control_data(5, "results"), ControlPress(5, "results")),
    ]:
        assert len(data.encode()) <= MAX_CALLBACK_BYTES
        assert parse(data) == press
    markup = round_keyboard(BIGGEST_ROUND, [Tally(i, "x", 99, 99) for i in range(1, 11)])
    assert all(
        len(b.callback_data.encode()) <= MAX_CALLBACK_BYTES for row in markup.inline_keyboard for b in row
    )
    assert RESULTS in texts(markup)


@pytest.mark.parametrize(
    "data",
    [None, "", "v:1:2", "v:1:2:x", "v:-1:2:u", "c:1:z", "c:1:r:extra", "x" * 64, "v:1:2:u\n", "🦊"]
    # ids SQLite cannot hold: one above its largest integer, and 20 digits
    + [f"v:{2**63}:1:u", f"c:{2**63}:r", f"v:{'9' * 20}:1:d", f"c:{'9' * 20}:s"],
)
def test_anything_else_is_a_stale_round(data: str | None) -> None:
    with pytest.raises(StaleRound, match="no longer active"):
        parse(data)
