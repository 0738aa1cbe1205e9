"""The bot's flood limiter and keyboard-edit coalescer, on their own (no Telegram)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from telegram.error import RetryAfter

from bot.edits import KeyboardEdits
from bot.ratelimit import FloodLimiter, FloodLimits

# fast limits so the tests take milliseconds: 10 a second per chat, no burst beyond 2
FAST = FloodLimits(chat_per_second=10.0, chat_burst=2, group_per_minute=20, overall_per_second=30)


class Recorder:
    """A stand-in for PTB's HTTP call: records (method, time) when it is made."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.refuse: dict[str, int] = {}

    def request(self, method: str) -> Any:
        async def call(*args: object, **kwargs: object) -> bool:
            if self.refuse.get(method, 0) > 0:
                self.refuse[method] -= 1
                raise RetryAfter(1)
            self.calls.append((method, time.monotonic()))
            return True

        return call


async def _send(limiter: FloodLimiter, rec: Recorder, method: str, chat: int) -> object:
    return await limiter.process_request(rec.request(method), (), {}, method, {"chat_id": chat}, None)


async def test_a_new_rounds_messages_go_before_waiting_edits() -> None:
    limiter, rec = FloodLimiter(FAST, reserve=1), Recorder()
    await _send(limiter, rec, "sendMessage", -5)  # the bucket is now too full for an edit
    edits = [asyncio.create_task(_send(limiter, rec, "editMessageReplyMarkup", -5)) for _ in range(3)]
    await asyncio.sleep(0)
    album = asyncio.create_task(_send(limiter, rec, "sendMediaGroup", -5))
    keyboard = asyncio.create_task(_send(limiter, rec, "sendMessage", -5))
    await asyncio.gather(album, keyboard, *edits)
    assert [m for m, _ in rec.calls] == [
        "sendMessage",
        "sendMediaGroup",
        "sendMessage",
        "editMessageReplyMarkup",
        "editMessageReplyMarkup",
        "editMessageReplyMarkup",
    ]


async def test_button_answers_never_wait_and_a_429_pauses_only_its_chat() -> None:
    limiter, rec = FloodLimiter(FAST, max_retries=2), Recorder()
    rec.refuse["sendMessage"] = 1
    start = time.monotonic()
    refused = asyncio.create_task(_send(limiter, rec, "sendMessage", 7))
    await asyncio.sleep(0.05)
    assert await limiter.process_request(
        rec.request("answerCallbackQuery"), (), {}, "answerCallbackQuery", {}, None
    )
    await _send(limiter, rec, "sendMessage", 8)  # another chat goes on
    await refused
    times = {m + str(i): t - start for i, (m, t) in enumerate(rec.calls)}
    assert times["answerCallbackQuery0"] < 0.2 and times["sendMessage1"] < 0.2
    assert times["sendMessage2"] >= 1.0  # retried after the second Telegram asked for
    assert limiter.retried == 1


async def test_a_group_minute_keeps_room_for_two_rounds_of_edits() -> None:
    limiter, rec = FloodLimiter(FloodLimits(chat_burst=30), reserve=1, group_reserve=4), Recorder()
    for _ in range(16):  # edits may fill the minute up to 20 - 4
        await _send(limiter, rec, "editMessageReplyMarkup", -9)
    late_edit = asyncio.create_task(_send(limiter, rec, "editMessageReplyMarkup", -9))
    for _ in range(4):  # two rounds' album and keyboard
        await asyncio.wait_for(_send(limiter, rec, "sendMessage", -9), 1.0)
    await asyncio.sleep(0.05)
    assert not late_edit.done()  # the minute is full: it waits for the first edit to age out
    late_edit.cancel()


async def test_edits_are_coalesced_and_dropped_for_a_newer_round() -> None:
    edits = KeyboardEdits(debounce=0.05)
    made: list[int] = []

    def edit(n: int) -> Any:
        async def run() -> None:
            made.append(n)

        return run

    for n in range(10):
        edits.request(1, 100, edit(n))
    await asyncio.sleep(0.15)
    assert made == [9]  # one edit, with the latest counts

    edits.request(1, 100, edit(10))
    with edits.new_round(1) as new:
        new.round_id = 101
    edits.request(1, 100, edit(11))  # an old round's keyboard: not edited any more
    edits.request(1, 101, edit(12))
    await asyncio.sleep(0.15)
    assert made == [9, 12] and edits.dropped == 1
    await edits.close()
