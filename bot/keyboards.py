"""Inline keyboards and their ``callback_data``: short, and resolvable from SQLite after a restart.

A vote button carries ``v:<round id>:<position>:u|d``, a control button ``c:<round id>:r|t|s``
(refine, top results, stop) and a page button ``m:<match listing id>:<offset>`` (the next page of
matches); everything else about the round or the listing is looked up in the state database,
so the data stays far below Telegram's 64-byte limit and old buttons keep working.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from core.state import StaleRound, Tally

REFINE, RESULTS, STOP = "🔁 Refine", "⭐ Results", "⏹ Stop"
IMAGES_PER_ROW = 2  # two images -> four buttons per row: readable on a phone, with counts
MAX_CALLBACK_BYTES = 64
MAX_ROUND_ID = 2**63 - 1  # SQLite's largest integer: a forged id above it is no round of this bot

Action = Literal["refine", "results", "stop"]
_ACTION_CODES: dict[Action, str] = {"refine": "r", "results": "t", "stop": "s"}
_CODE_ACTIONS: dict[str, Action] = {v: k for k, v in _ACTION_CODES.items()}
_VOTE = re.compile(r"v:(\d{1,19}):(\d{1,2}):([ud])")
_CONTROL = re.compile(r"c:(\d{1,19}):([rts])")
_PAGE = re.compile(r"m:(\d{1,19}):(\d{1,12})")


@dataclass(frozen=True)
class VotePress:
    """A 👍/👎 button: ``vote`` is +1 or -1 for the image at ``position`` of round ``round_id``."""

    round_id: int
    position: int
    vote: int


@dataclass(frozen=True)
class ControlPress:
    """A control-row button of round ``round_id``."""

    round_id: int
    action: Action


@dataclass(frozen=True)
class PagePress:
    """A ▶ button: the page of match listing ``view_id`` that starts at rank ``offset`` (0-based)."""

    view_id: int
    offset: int


def vote_data(round_id: int, position: int, vote: int) -> str:
    """``callback_data`` of a vote button."""
    return f"v:{round_id}:{position}:{'u' if vote > 0 else 'd'}"


def control_data(round_id: int, action: Action) -> str:
    """``callback_data`` of a control button."""
    return f"c:{round_id}:{_ACTION_CODES[action]}"


def page_data(view_id: int, offset: int) -> str:
    """``callback_data`` of a ▶ (next page of matches) button."""
    return f"m:{view_id}:{offset}"


def parse(data: str | None) -> VotePress | ControlPress | PagePress:
    """Decode ``callback_data``; anything this bot did not make raises :class:`StaleRound`."""
    text = data or ""
    if (m := _VOTE.fullmatch(text)) and int(m[1]) <= MAX_ROUND_ID:
        return VotePress(int(m[1]), int(m[2]), 1 if m[3] == "u" else -1)
    if (m := _CONTROL.fullmatch(text)) and int(m[1]) <= MAX_ROUND_ID:
        return ControlPress(int(m[1]), _CODE_ACTIONS[m[2]])
    if m := _PAGE.fullmatch(text):
        return PagePress(int(m[1]), int(m[2]))
    raise StaleRound()


def _count(n: int) -> str:
    return f" ·{n}" if n else ""


def round_keyboard(round_id: int, tallies: Sequence[Tally], split: bool = True) -> InlineKeyboardMarkup:
    """👍 i / 👎 i for each image, then the control row.

    With ``split`` the buttons show the 👍 and 👎 counts once there are any (``👍 3 ·2``); without,
    only how many people voted on the image (``👎 3 · 2 voted`` on the second button), so a group's
    later voters do not see the majority before they decide.
    """

    def pair(t: Tally) -> tuple[InlineKeyboardButton, InlineKeyboardButton]:
        voted = t.up + t.down
        up = f"👍 {t.position}{_count(t.up)}" if split else f"👍 {t.position}"
        down = (
            f"👎 {t.position}{_count(t.down)}"
            if split
            else f"👎 {t.position}{f' · {voted} voted' if voted else ''}"
        )
        return (
            InlineKeyboardButton(up, callback_data=vote_data(round_id, t.position, 1)),
            InlineKeyboardButton(down, callback_data=vote_data(round_id, t.position, -1)),
        )

    buttons = [pair(t) for t in tallies]
    rows = [
        [b for pair in buttons[i : i + IMAGES_PER_ROW] for b in pair]
        for i in range(0, len(buttons), IMAGES_PER_ROW)
    ]
    rows.append(
        [
            InlineKeyboardButton(REFINE, callback_data=control_data(round_id, "refine")),
            InlineKeyboardButton(RESULTS, callback_data=control_data(round_id, "results")),
            InlineKeyboardButton(STOP, callback_data=control_data(round_id, "stop")),
        ]
    )
    return InlineKeyboardMarkup(rows)


def next_page_keyboard(view_id: int, offset: int, size: int) -> InlineKeyboardMarkup:
    """One ▶ button for the next ``size`` matches from rank ``offset``."""
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(f"▶ next {size}", callback_data=page_data(view_id, offset))]]
    )
