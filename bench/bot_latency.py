"""Bot latency against a loopback Bot API: concept -> album, refine -> album, button -> answer.

``python -m bench.bot_latency`` (``--quick`` for a smoke run). The real python-telegram-bot stack
polls the fake Bot API server from the end-to-end tests on 127.0.0.1; the store is the real
embedded chDB with 25k random unit vectors. Times are taken on the fake server: from the moment its
``getUpdates`` answer carrying the update is sent, to the moment the bot's request arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from bench import publish

T = TypeVar("T")
NAME = "bot_latency"
GOALS_MS = {"concept": 150.0, "refine": 60.0, "answer": 100.0}


@dataclass
class Plan:
    """How much to measure."""

    vectors: int
    rounds: int  # sequential concept rounds, and as many refines
    chats: int  # chats labelling at once
    votes: int  # votes per chat in the busy phase
    interval: float  # seconds between one chat's taps


QUICK = Plan(vectors=2_000, rounds=4, chats=5, votes=3, interval=0.2)
FULL = Plan(vectors=25_000, rounds=30, chats=20, votes=9, interval=1.0)


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 40)).save(buf, "JPEG")
    return buf.getvalue()


async def _image_host() -> tuple[Any, str]:
    """A loopback stand-in for images.unsplash.com serving one small JPEG for every path."""
    from aiohttp import web

    body = _jpeg()

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def _fill(store: Any, n: int, host: str, seed: int = 0) -> None:
    from core.records import ImageBatch

    rng = np.random.default_rng(seed)
    for start in range(0, n, 5_000):
        m = min(5_000, n - start)
        v = rng.normal(size=(m, store.dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        ids = [f"img{start + i:06d}" for i in range(m)]
        store.insert(
            ImageBatch(
                ids=ids,
                urls=[f"{host}/{i}.jpg" for i in ids],
                vectors=v,
                captions=[f"photo {i}" for i in ids],
                sources=["unsplash"] * m,
            )
        )


def _ms(values: list[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds."""
    a = np.asarray(values) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 95))


async def _vote_costs(path: Path, dim: int, n: int = 40) -> list[float]:
    """Seconds per ``State.toggle_vote`` (one SQLite transaction), alone, on a fresh state file."""
    from core.state import RoundItem, State

    state = await State.open(path)
    try:
        session = await state.start_session(1, "bench", np.ones(dim, np.float32), np.ones(dim, np.float32))
        items = [RoundItem(i + 1, f"img{i}", f"u{i}", "", "unsplash") for i in range(9)]
        rnd = await state.add_round(session.id, "round", items)
        out = []
        for j in range(n):
            t = time.perf_counter()
            await state.toggle_vote(rnd.id, j % 9 + 1, 5, 1 if j % 2 else -1, "bench", chat_id=1)
            out.append(time.perf_counter() - t)
        return out
    finally:
        await state.close()


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


class _FakeTelegram:
    """The fake Bot API and the image host on their own thread and event loop, as Telegram is elsewhere.

    Sharing the bot's event loop would bill the fake's own work (decoding uploads, fetching image
    URLs) to the bot's latency.
    """

    def __init__(self) -> None:
        from tests.e2e.fake_bot_api import FakeBotApi

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-telegram", daemon=True)
        self.thread.start()
        self.fake: FakeBotApi = self.call(FakeBotApi)
        self.on_loop(self.fake.start())
        self.image_runner, self.image_host = self.on_loop(_image_host())

    def on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the fake's loop and wait for it (blocking)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def aon_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the fake's loop; await it from another loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the fake's loop (injections create tasks there)."""

        async def wrapped() -> T:
            return fn()

        return self.on_loop(wrapped())

    async def acall(self, fn: Callable[[], T]) -> T:
        """:meth:`call` from another event loop."""

        async def wrapped() -> T:
            return fn()

        return await self.aon_loop(wrapped())

    def close(self) -> None:
        """Stop the servers and the thread."""
        self.on_loop(self.fake.stop())
        self.on_loop(self.image_runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


async def _measure(
    model_dir: Path, label: str, plan: Plan, work: Path
) -> tuple[list[list[str]], list[list[str]]]:
    """Run one model/dataset configuration; returns rows of the latency and the component tables."""
    from bot.app import build_application, running
    from core.config import Settings
    from core.encoder import ClipEncoder
    from core.explorer import Explorer
    from core.store import open_store
    from tests.e2e.fake_bot_api import DEFAULT_TOKEN, Call, button_texts

    settings = Settings(
        data_dir=work / f"data-{label}",
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
    try:
        store.ensure_schema()
        t = time.perf_counter()
        await asyncio.to_thread(_fill, store, plan.vectors, tg.image_host)
        fill_s = time.perf_counter() - t

        app = build_application(settings, store=store, encoder=encoder, api_url=fake.base_url)
        async with running(app):

            def is_keyboard(chat: int) -> Callable[[Call], bool]:
                return lambda c: (
                    c.chat_id == chat and "🔁 Refine" in button_texts(c.params.get("reply_markup"))
                )

            async def wait_for(method: str, pred: Callable[[Call], bool], since: int) -> Call:
                return (await tg.aon_loop(fake.wait_for(method, pred, 60, since=since)))[0]

            async def inject(send: Callable[[], object]) -> tuple[int, int]:
                """Queue an update on the fake's loop; the call mark before it and its update id."""

                def go() -> tuple[int, int]:
                    since = fake.mark()
                    send()
                    return since, fake.last_update_id

                return await tg.acall(go)

            async def round_after(chat: int, send: Callable[[], object]) -> tuple[float, dict[str, Any]]:
                """Queue an update; seconds from its delivery to the album request, and the keyboard."""
                since, uid = await inject(send)
                album = await wait_for("sendMediaGroup", lambda c: c.chat_id == chat, since)
                kb = await wait_for("sendMessage", is_keyboard(chat), album.seq)
                sent_at = fake.delivery(uid).sent_at
                assert sent_at is not None
                return album.time - sent_at, kb.result

            async def press(chat: int, kb: dict[str, Any], button: str) -> tuple[str, int, int]:
                """Press a button; the query id, the update id and the call mark before it."""
                holder: list[str] = []
                since, uid = await inject(lambda: holder.append(fake.press(chat, chat, kb, button)))
                return holder[0], uid, since

            async def answered(query: str, since: int) -> Call:
                return await wait_for(
                    "answerCallbackQuery", lambda c: c.params.get("callback_query_id") == query, since
                )

            concept_s: list[float] = []
            refine_s: list[float] = []
            for i in range(plan.rounds + 2):  # the first two warm up the caches
                chat = 10_000 + i
                dt, kb = await round_after(chat, partial(fake.user_message, chat, chat, f"concept {i}"))
                for button in ("👍 1", "👎 2"):
                    query, _, since = await press(chat, kb, button)
                    await answered(query, since)
                await tg.aon_loop(fake.settle(quiet=0.05))
                rt, _ = await round_after(chat, partial(fake.press, chat, chat, kb, "🔁 Refine"))
                if i >= 2:
                    concept_s.append(dt)
                    refine_s.append(rt)

            # Busy phase: many chats tap at once; a chat refines after its votes.
            chats = [20_000 + i for i in range(plan.chats)]
            keyboards = {}
            for chat in chats:
                _, keyboards[chat] = await round_after(
                    chat, partial(fake.user_message, chat, chat, f"busy {chat}")
                )
            answer_s: list[float] = []
            busy_refine_s: list[float] = []
            rng = np.random.default_rng(1)

            async def tap_through(chat: int) -> None:
                await asyncio.sleep(float(rng.uniform(0, plan.interval)))
                queries = []
                for j in range(1, plan.votes + 1):
                    queries.append(await press(chat, keyboards[chat], f"{'👍' if j % 2 else '👎'} {j}"))
                    await asyncio.sleep(plan.interval * float(rng.uniform(0.7, 1.3)))
                for query, uid, since in queries:
                    call = await answered(query, since)
                    sent_at = fake.delivery(uid).sent_at
                    assert sent_at is not None
                    answer_s.append(call.time - sent_at)
                rt, _ = await round_after(chat, lambda: fake.press(chat, chat, keyboards[chat], "🔁 Refine"))
                busy_refine_s.append(rt)

            await asyncio.gather(*(tap_through(c) for c in chats))
            await tg.aon_loop(fake.settle(quiet=0.1))

        # What the rounds are made of, measured on the same store and encoder.
        explorer = Explorer(store, encoder)
        vec = encoder.embed_texts(["a house by the lake"])[0]
        session = explorer.start_vector("a house by the lake", vec)
        labelled = {h.id: (1 if i % 2 else -1) for i, h in enumerate(store.knn(vec, 20))}
        parts = {
            "text embedding (1 concept)": _timed(lambda: encoder.embed_texts(["a house by the lake"]), 20),
            "knn k=9, 0 excluded": _timed(lambda: store.knn(vec, 9), 20),
            "knn k=9, 20 excluded": _timed(lambda: store.knn(vec, 9, exclude_ids=list(labelled)), 20),
            "refit on 20 labels (read vectors + fit)": _timed(lambda: explorer.fit(session, labelled), 20),
            "vote stored in SQLite (State.toggle_vote)": await _vote_costs(
                work / f"votes-{label}.sqlite3", store.dim
            ),
        }
    finally:
        store.close()
        tg.close()

    rows = []
    for what, values, goal in (
        ("concept → sendMediaGroup", concept_s, GOALS_MS["concept"]),
        ("🔁 Refine → sendMediaGroup", refine_s, GOALS_MS["refine"]),
        (f"callback → answer, {plan.chats} chats at once", answer_s, GOALS_MS["answer"]),
        (f"🔁 Refine → sendMediaGroup, {plan.chats} chats at once", busy_refine_s, None),
    ):
        p50, p95 = _ms(values)
        if goal is None:
            verdict, goal_text = "", "—"
        elif what.startswith("callback"):
            verdict, goal_text = ("yes" if p95 <= goal else "**no**"), f"p95 ≤ {goal:.0f}"
        else:
            verdict, goal_text = ("yes" if p50 <= goal else "**no**"), f"p50 ≤ {goal:.0f}"
        rows.append(
            [
                label,
                f"{plan.vectors:,}",
                what,
                str(len(values)),
                f"{p50:.1f}",
                f"{p95:.1f}",
                goal_text,
                verdict,
            ]
        )
    comp = [[label, what, f"{statistics.median(v) * 1000:.2f}"] for what, v in parts.items()]
    comp.append([label, f"insert {plan.vectors:,} vectors (setup)", f"{fill_s * 1000:.0f}"])
    return rows, comp


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def run(quick: bool = False) -> str:
    """Measure and return the markdown section (printed; a full run also writes bench/results/bot_latency.md)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    import torch

    from tests.tiny_clip import VIT_B32, build_clip_dir

    torch.set_num_threads(1)
    plan = QUICK if quick else FULL
    load_before = os.getloadavg()[0]
    rows: list[list[str]] = []
    comp: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="vdx-bench-") as tmp:
        work = Path(tmp)
        models = [("tiny CLIP, 16-d", lambda: build_clip_dir(work / "tiny"))]
        if not quick:
            models.append(
                (
                    "ViT-B/32 architecture, 512-d",
                    lambda: build_clip_dir(work / "vitb32", **VIT_B32),
                )
            )
        for label, build in models:
            r, c = asyncio.run(_measure(build(), label.split(",")[0], plan, work))
            rows += r
            comp += c
    cpu = (
        f"{os.cpu_count()}-core {platform.machine()} CPU, shared with other work (1-minute load average "
        f"{load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after), no GPU"
    )
    text = "\n".join(
        [
            "## Bot latency (loopback Bot API)",
            "",
            f"The real python-telegram-bot 22 stack (polling, the bot's flood limiter of `bot/ratelimit.py`) "
            f"against the fake Bot API server of the end-to-end tests on 127.0.0.1 (Telegram's flood limits on), with {plan.vectors:,} random unit vectors in the embedded "
            "chDB store (exact search on its in-memory copy, no vector index) and Unsplash-style images sent by URL. A latency "
            "runs from the moment the fake server sends the `getUpdates` answer carrying the update to the "
            "moment the bot's `sendMediaGroup` (or `answerCallbackQuery`) request arrives. Concept and refine "
            f"rounds are sequential, {plan.rounds} each, in fresh chats (refine after two votes); the busy "
            f"phase has {plan.chats} chats tapping 👍/👎 every ~{plan.interval:g} s ({plan.votes} taps each) "
            "and then refining, all at once. Models have random weights: the tiny 16-d CLIP of the tests, and "
            "the ViT-B/32 architecture (same compute as the real model; its store holds 512-d vectors). "
            f"Torch uses 1 thread. Machine: {cpu}; Python {platform.python_version()}."
            + (" **Quick smoke run: not for quoting.**" if quick else ""),
            "",
            _table(["model", "vectors", "measurement", "n", "p50 ms", "p95 ms", "goal ms", "met"], rows),
            "",
            "What a round is made of (medians of 20–40 calls on the same store, encoder and disk, same run, nothing else running in the process):",
            "",
            _table(["model", "step", "median ms"], comp),
            "",
        ]
    )
    return publish(NAME, text, quick)


def main() -> None:
    """Command line: ``python -m bench.bot_latency [--quick]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (< 60 s), not for quoting")
    run(quick=parser.parse_args().quick)


if __name__ == "__main__":
    main()
