"""A busy group under Telegram's flood limits: many members vote within 2 s, then someone presses 🔁 Refine.

``python -m bench.busy_group`` (``--quick`` for a smoke run). The real python-telegram-bot stack
polls the fake Bot API of the end-to-end tests, which enforces Telegram's flood limits (one message
a second per chat with short bursts, 20 a minute per group, 30 a second overall; edits count,
button answers do not). Times are taken on the fake server, from the moment its ``getUpdates``
answer carrying the press is sent to the moment the bot's request arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import publish
from bench.bot_latency import _FakeTelegram, _fill, _ms, _table

NAME = "busy_group"
BURST_S = 2.0
GOALS_S = {"album": 1.5, "keyboard": 3.0, "answer": 2.0}


@dataclass
class Plan:
    """How much to measure."""

    members: tuple[int, ...]
    fresh: int  # rounds measured, each in a group of its own
    sustained: int  # consecutive rounds in one group
    saturated: int  # consecutive rounds in one group, with the most members: past 20 messages a minute
    vectors: int


QUICK = Plan(members=(10, 50), fresh=1, sustained=2, saturated=0, vectors=2_000)
FULL = Plan(members=(10, 30, 50), fresh=5, sustained=6, saturated=14, vectors=5_000)


@dataclass
class Measured:
    """Every round of one configuration."""

    album_s: list[float] = field(default_factory=list)
    keyboard_s: list[float] = field(default_factory=list)
    answer_s: list[float] = field(default_factory=list)
    edits: list[int] = field(default_factory=list)
    shown: list[float] = field(default_factory=list)  # share of the votes the old keyboard showed at the end
    throttled: int = 0
    failed: int = 0  # "something went wrong" messages to the group


def _shown_votes(markup: dict[str, Any] | None) -> int:
    """The sum of the counts on a keyboard's vote buttons (``"👍 3 ·2"`` -> 2)."""
    total = 0
    for row in (markup or {}).get("inline_keyboard", []):
        for b in row:
            text = str(b["text"])
            if "·" in text:
                total += int(text.rsplit("·", 1)[1])
    return total


async def _measure(model_dir: Path, plan: Plan, work: Path) -> list[tuple[str, int, Measured]]:
    from bot import texts
    from bot.app import build_application, running
    from core.config import Settings
    from core.encoder import ClipEncoder
    from core.store import open_store
    from tests.e2e.fake_bot_api import BOT_USERNAME, DEFAULT_TOKEN, Call, button_texts

    settings = Settings(
        data_dir=work / "data",
        clip_model=str(model_dir),
        device="cpu",
        torch_threads=1,
        telegram_token=DEFAULT_TOKEN,
    )
    encoder = ClipEncoder(str(model_dir), device="cpu", torch_threads=1)
    encoder.embed_texts(["warm up"])
    store = open_store(settings, dim=encoder.dim)
    tg = _FakeTelegram()
    fake = tg.fake
    out: list[tuple[str, int, Measured]] = []
    rng = np.random.default_rng(13)
    try:
        store.ensure_schema()
        await asyncio.to_thread(_fill, store, plan.vectors, tg.image_host)
        app = build_application(settings, store=store, encoder=encoder, api_url=fake.base_url)
        async with running(app):

            def is_keyboard(chat: int) -> Callable[[Call], bool]:
                return lambda c: (
                    c.chat_id == chat and "🔁 Refine" in button_texts(c.params.get("reply_markup"))
                )

            async def wait_for(
                method: str, pred: Callable[[Call], bool], since: int, count: int = 1
            ) -> list[Call]:
                return await tg.aon_loop(fake.wait_for(method, pred, 120, since=since, count=count))

            async def inject(send: Callable[[], Any]) -> tuple[int, int, Any]:
                """Queue an update on the fake's loop: the call mark before it, its update id, what send returned."""

                def go() -> tuple[int, int, Any]:
                    since = fake.mark()
                    got = send()
                    return since, fake.last_update_id, got

                return await tg.acall(go)

            async def keyboard_after(album: Call, chat: int) -> Call:
                return (await wait_for("sendMessage", is_keyboard(chat), album.seq))[0]

            async def start(chat: int) -> dict[str, Any]:
                since, _, _ = await inject(
                    lambda: fake.user_message(chat, 1, f"/find@{BOT_USERNAME} busy {chat}", chat_type="group")
                )
                album = (await wait_for("sendMediaGroup", lambda c: c.chat_id == chat, since))[0]
                return (await keyboard_after(album, chat)).result  # type: ignore[no-any-return]

            async def one_round(
                chat: int, members: int, keyboard: dict[str, Any], m: Measured
            ) -> dict[str, Any]:
                """``members`` distinct members vote within BURST_S, then Refine; the new keyboard."""
                first = fake.mark()
                offsets = np.sort(rng.uniform(0, BURST_S, members))
                t0 = time.perf_counter()
                presses = []
                for i, at in enumerate(offsets):
                    await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
                    button = f"{'👍' if rng.random() < 0.6 else '👎'} {rng.integers(1, 10)}"
                    presses.append(
                        await inject(lambda u=1000 + i, b=button: fake.press(chat, u, keyboard, b))  # type: ignore[misc]
                    )
                await asyncio.sleep(max(0.0, t0 + BURST_S - time.perf_counter()))
                since, uid, _ = await inject(lambda: fake.press(chat, 1, keyboard, "🔁 Refine"))
                album = (await wait_for("sendMediaGroup", lambda c: c.chat_id == chat, since))[0]
                kb = await keyboard_after(album, chat)
                sent_at = fake.delivery(uid).sent_at
                assert sent_at is not None
                m.album_s.append(album.time - sent_at)
                m.keyboard_s.append(kb.time - sent_at)
                answers = await wait_for("answerCallbackQuery", None, first, count=members + 1)
                answered = {c.params["callback_query_id"]: c.time for c in answers}
                for _, press_uid, query in presses:
                    at_ = fake.delivery(press_uid).sent_at
                    assert at_ is not None
                    m.answer_s.append(answered[query] - at_)
                m.edits.append(
                    len(
                        fake.find(
                            "editMessageReplyMarkup",
                            lambda c: c.params.get("message_id") == keyboard["message_id"],
                        )
                    )
                )
                m.shown.append(_shown_votes(keyboard.get("reply_markup")) / members)
                return kb.result  # type: ignore[no-any-return]

            chat_ids = iter(range(-5_000, -1, 1))
            for members in plan.members:
                mark = fake.mark()
                fresh = Measured()
                for _ in range(plan.fresh):
                    chat = next(chat_ids)
                    await one_round(chat, members, await start(chat), fresh)
                out.append(("a fresh group per round", members, fresh))
                variants = [(f"{plan.sustained} rounds in a row in one group", plan.sustained)]
                if members == max(plan.members) and plan.saturated:
                    variants.append((f"{plan.saturated} rounds in a row in one group", plan.saturated))
                for label, rounds in variants:
                    m = Measured()
                    chat = next(chat_ids)
                    keyboard = await start(chat)
                    for _ in range(rounds):
                        keyboard = await one_round(chat, members, keyboard, m)
                    out.append((label, members, m))
                await asyncio.sleep(1.0)  # late edits and answers
                throttled = len(fake.throttled(since=mark))
                failed = len(
                    fake.find("sendMessage", lambda c: c.params.get("text") == texts.FAILED, since=mark)
                )
                for _, n, m in out:
                    if n == members:
                        m.throttled, m.failed = throttled, failed
    finally:
        store.close()
        tg.close()
    return out


def run(quick: bool = False) -> str:
    """Measure and return the markdown section (a full run also writes bench/results/busy_group.md)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    import torch

    from tests.tiny_clip import build_clip_dir

    torch.set_num_threads(1)
    plan = QUICK if quick else FULL
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="vdx-bench-") as tmp:
        work = Path(tmp)
        results = asyncio.run(_measure(build_clip_dir(work / "tiny"), plan, work))
    rows = []
    for how, members, m in results:
        album50, _ = _ms(m.album_s)
        kb50, _ = _ms(m.keyboard_s)
        ans50, ans95 = _ms(m.answer_s)
        met = (
            album50 <= GOALS_S["album"] * 1000
            and kb50 <= GOALS_S["keyboard"] * 1000
            and max(m.answer_s) <= GOALS_S["answer"]
            and not m.failed
        )
        rows.append(
            [
                str(members),
                how,
                str(len(m.album_s)),
                f"{album50 / 1000:.2f} / {max(m.album_s):.2f}",
                f"{kb50 / 1000:.2f} / {max(m.keyboard_s):.2f}",
                f"{ans50:.0f} / {ans95:.0f} / {max(m.answer_s) * 1000:.0f}",
                f"{np.median(m.edits):.0f} ({min(m.edits)}–{max(m.edits)})",
                f"{np.median(m.shown) * 100:.0f}%",
                str(m.throttled),
                str(m.failed),
                "yes" if met else "**no**",
            ]
        )
    cpu = (
        f"{os.cpu_count()}-core {platform.machine()} CPU, shared with other work (1-minute load average "
        f"{load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after), no GPU"
    )
    text = "\n".join(
        [
            "## A busy group under Telegram's flood limits",
            "",
            "The real python-telegram-bot 22 stack against the fake Bot API of the end-to-end tests with "
            "Telegram's flood limits on (a token bucket of 1 message a second with bursts of 3 per chat, "
            "20 messages in any 60 s per group, 30 a second overall; edits count, button answers do not; "
            "429 with `retry_after` beyond them). In each round N members of one group tap 👍/👎 once each "
            f"at random moments within {BURST_S:g} s, then one presses 🔁 Refine. Times run from the fake "
            "sending the press in its `getUpdates` answer to the bot's request arriving. *Edits* counts the "
            "`editMessageReplyMarkup` calls for that round's keyboard; *shown* is the share of the round's "
            "votes the old keyboard showed in the end (its pending edits are dropped once the next round "
            "exists; every voter's button answer confirmed the vote). Rounds run either each in a group of "
            f"its own ({plan.fresh} groups), or {plan.sustained} in a row in one group (about 3 s a round), "
            f"and, with {max(plan.members)} members, {plan.saturated} in a row: past the 20 messages a minute "
            "a group allows (a round is at least an album and a keyboard), so from about the tenth round on "
            "a round must wait for the oldest messages of the group's minute to age out, whatever the bot "
            f"does; 429s and errors are counted per member count, over all its variants. Tiny CLIP, {plan.vectors:,} random vectors in the embedded chDB "
            f"store. Goal: album ≤ {GOALS_S['album']:g} s and keyboard ≤ {GOALS_S['keyboard']:g} s (p50), "
            f"every press answered within {GOALS_S['answer']:g} s, no error message. Machine: {cpu}; Python "
            f"{platform.python_version()}." + (" **Quick smoke run: not for quoting.**" if quick else ""),
            "",
            _table(
                [
                    "members",
                    "rounds",
                    "n",
                    "Refine → album s (p50 / max)",
                    "Refine → keyboard s (p50 / max)",
                    "press → answer ms (p50 / p95 / max)",
                    "edits per round (range)",
                    "shown",
                    "429s",
                    "errors",
                    "goal met",
                ],
                rows,
            ),
            "",
        ]
    )
    return publish(NAME, text, quick)


def main() -> None:
    """Command line: ``python -m bench.busy_group [--quick]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (< 60 s), not for quoting")
    run(quick=parser.parse_args().quick)


if __name__ == "__main__":
    main()
