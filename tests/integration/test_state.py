"""The chat state on a real SQLite file: migrations, vote semantics, group labels, persistence."""

from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import numpy as np
import pytest

from core.state import MIGRATIONS, SCHEMA_VERSION, RoundItem, StaleRound, State, m001_initial

UP, DOWN = 1, -1


def unit(dim: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def items(*ids: str) -> list[RoundItem]:
    return [
        RoundItem(i + 1, image_id, f"https://img.example/{image_id}", source="folder")
        for i, image_id in enumerate(ids)
    ]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "state.sqlite3"


@pytest.fixture
async def state(db_path: Path) -> AsyncIterator[State]:
    s = await State.open(db_path)
    yield s
    await s.close()


async def test_open_creates_schema_and_reopen_is_idempotent(db_path: Path) -> None:
    s = await State.open(db_path)
    await s.start_session(1, "a red fox", unit())
    await s.close()
    await s.close()  # closing twice is harmless
    s = await State.open(db_path)
    try:
        assert (await s.active_session(1)) is not None
    finally:
        await s.close()
    con = sqlite3.connect(db_path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"sessions", "rounds", "round_items", "votes", "weights_history", "file_ids"} <= tables
    con.close()


async def test_a_newer_schema_is_refused_with_a_clear_message(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    con = sqlite3.connect(db_path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(Exception, match="newer vdx"):
        await State.open(db_path)


async def test_same_vote_again_removes_it_and_the_other_switches_it(state: State) -> None:
    session = await state.start_session(10, "lake house", unit())
    rnd = await state.add_round(session.id, "round", items("a", "b", "c"))
    out = await state.toggle_vote(rnd.id, 2, user_id=7, vote=UP)
    assert (out.vote, out.image_id) == (UP, "b")
    assert [(t.up, t.down) for t in await state.tallies(rnd.id)] == [(0, 0), (1, 0), (0, 0)]
    out = await state.toggle_vote(rnd.id, 2, user_id=7, vote=DOWN)
    assert out.vote == DOWN and [(t.up, t.down) for t in await state.tallies(rnd.id)][1] == (0, 1)
    assert await state.labels(session.id) == {"b": DOWN}
    out = await state.toggle_vote(rnd.id, 2, user_id=7, vote=DOWN)
    assert out.vote == 0 and (await state.tallies(rnd.id))[1].down == 0
    assert await state.labels(session.id) == {}


async def test_a_press_processed_twice_is_answered_as_before_and_changes_nothing(state: State) -> None:
    session = await state.start_session(10, "lake house", unit())
    rnd = await state.add_round(session.id, "round", items("a", "b"))
    first = await state.toggle_vote(rnd.id, 1, 7, UP, query_id="q1")
    again = await state.toggle_vote(rnd.id, 1, 7, UP, query_id="q1")  # the same press, delivered again
    assert (first.vote, first.repeated) == (UP, False)
    assert (again.vote, again.repeated, again.image_id) == (UP, True, "a")
    assert await state.labels(session.id) == {"a": UP}
    removed = await state.toggle_vote(rnd.id, 1, 7, UP, query_id="q2")  # a new press toggles it off
    assert removed.vote == 0 and await state.labels(session.id) == {}
    assert (await state.toggle_vote(rnd.id, 1, 7, UP, query_id="q2")).vote == 0
    assert await state.labels(session.id) == {}


async def test_a_refused_press_is_not_remembered(state: State) -> None:
    session = await state.start_session(10, "lake house", unit())
    rnd = await state.add_round(session.id, "round", items("a"))
    with pytest.raises(StaleRound):
        await state.toggle_vote(rnd.id, 1, 7, UP, chat_id=11, query_id="q1")  # another chat's round
    assert (await state.toggle_vote(rnd.id, 1, 7, UP, chat_id=10, query_id="q1")).repeated is False


async def test_m002_adds_processed_callbacks_to_a_version_1_database(db_path: Path) -> None:
    assert MIGRATIONS[0] is m001_initial and MIGRATIONS[1].__name__ == "m002_processed_callbacks"
    db_path.parent.mkdir(parents=True)
    async with aiosqlite.connect(db_path, isolation_level=None) as db:  # what vdx 0.1 left behind
        await db.execute("BEGIN")
        await m001_initial(db)
        await db.execute(
            "INSERT INTO sessions (chat_id, concept, prior, weights, started_at) VALUES (5, 'fox', x'', x'', 0)"
        )
        await db.execute("PRAGMA user_version = 1")
        await db.commit()
    s = await State.open(db_path)
    try:
        assert (await s.active_session(5)).concept == "fox"  # type: ignore[union-attr]
    finally:
        await s.close()
    con = sqlite3.connect(db_path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 2
    columns = {r[1] for r in con.execute("PRAGMA table_info(processed_callbacks)")}
    con.close()
    assert {"query_id", "round_id", "vote", "processed_at"} <= columns


async def test_group_votes_combine_into_labels_and_a_tie_is_contested(state: State) -> None:
    session = await state.start_session(-100, "sunset", unit())
    rnd = await state.add_round(session.id, "round", items("a", "b", "c"))
    for user in (1, 2, 3):  # repeated taps by the same user never count twice
        await state.toggle_vote(rnd.id, 1, user, UP)
    await state.toggle_vote(rnd.id, 1, 3, DOWN)  # user 3 switches: +1 +1 -1
    await state.toggle_vote(rnd.id, 2, 1, UP)
    await state.toggle_vote(rnd.id, 2, 2, DOWN)  # tie
    await state.toggle_vote(rnd.id, 3, 2, DOWN)
    assert await state.labels(session.id) == {"a": UP, "c": DOWN}
    stats = await state.stats(session.id)
    assert (stats.positive, stats.negative, stats.ties, stats.voters, stats.votes) == (1, 1, 1, 3, 6)
    assert stats.shared == 2 and stats.agreement == 0.0  # "a" and "b" both split
    assert stats.alpha is not None and stats.alpha < 0  # every pair of votes on a shared image disagrees
    soft = await state.soft_labels(session.id)
    # 2:1 nets one vote: as sure as one voter alone; a tie is seen but has no label
    assert soft["b"] == 0.0 and soft["a"] == pytest.approx(-soft["c"]) == pytest.approx(0.6)
    await state.toggle_vote(rnd.id, 1, 3, DOWN)  # user 3 removes the dissent on "a"
    stats = await state.stats(session.id)
    assert stats.agreement == 0.5


async def test_a_vote_is_about_the_image_within_the_session_across_rounds(state: State) -> None:
    session = await state.start_session(5, "cat", unit())
    first = await state.add_round(session.id, "round", items("x", "y"))
    second = await state.add_round(session.id, "round", items("z", "x"))
    await state.toggle_vote(first.id, 1, 9, UP)
    out = await state.toggle_vote(second.id, 2, 9, UP)  # same image, same user: removes the vote
    assert out.vote == 0 and await state.labels(session.id) == {}
    assert second.number == 2 and (await state.stats(session.id)).rounds == 2


async def test_votes_after_the_session_ended_or_on_forged_rounds_are_stale(state: State) -> None:
    session = await state.start_session(5, "cat", unit())
    rnd = await state.add_round(session.id, "round", items("x", "y"))
    with pytest.raises(StaleRound):
        await state.toggle_vote(rnd.id, 9, 1, UP)  # no such position
    with pytest.raises(StaleRound):
        await state.toggle_vote(rnd.id + 1000, 1, 1, UP)
    with pytest.raises(StaleRound):  # a button of this chat's round pressed from another chat
        await state.toggle_vote(rnd.id, 1, 1, UP, chat_id=6)
    assert await state.labels(session.id) == {}
    ended = await state.end_session(5)
    assert ended is not None and not ended.active and await state.active_session(5) is None
    with pytest.raises(StaleRound, match="no longer active"):
        await state.toggle_vote(rnd.id, 1, 1, UP)
    with pytest.raises(StaleRound):
        await state.active_round(rnd.id)
    assert await state.end_session(5) is None


async def test_a_new_concept_ends_the_previous_session_of_that_chat_only(state: State) -> None:
    old = await state.start_session(1, "dogs", unit(seed=1))
    other = await state.start_session(2, "cats", unit(seed=2))
    old_round = await state.add_round(old.id, "round", items("a", "b"))
    new = await state.start_session(1, "birds", unit(seed=3))
    assert (await state.active_session(1)).id == new.id  # type: ignore[union-attr]
    assert (await state.active_session(2)).id == other.id  # type: ignore[union-attr]
    with pytest.raises(StaleRound):
        await state.toggle_vote(old_round.id, 1, 1, UP)


async def test_everything_survives_close_and_reopen(db_path: Path) -> None:
    s = await State.open(db_path)
    prior = unit(seed=4)
    session = await s.start_session(42, "mountain lake", prior)
    rnd = await s.add_round(session.id, "round", items("a", "b", "c"))
    await s.mark_round(rnd.id, "sent", [100, 101, 102], keyboard_message_id=103)
    await s.toggle_vote(rnd.id, 1, 7, UP, "Ann")
    await s.toggle_vote(rnd.id, 3, 7, DOWN, "Ann")
    refit = unit(seed=5)
    await s.save_weights(session.id, refit, labels=2)
    await s.put_file_ids({"a": "FILE_A"})
    await s.close()

    s = await State.open(db_path)
    try:
        again = await s.active_session(42)
        assert again is not None and again.concept == "mountain lake"
        np.testing.assert_array_equal(again.prior, prior)
        np.testing.assert_array_equal(again.weights, refit)
        assert [n for _, n in await s.weights_history(session.id)] == [0, 2]
        r = await s.active_round(rnd.id)
        assert (r.status, r.album_message_ids, r.keyboard_message_id) == ("sent", [100, 101, 102], 103)
        assert [it.image_id for it in r.items] == ["a", "b", "c"]
        assert await s.labels(session.id) == {"a": UP, "c": DOWN}
        assert await s.file_ids(["a", "b"]) == {"a": "FILE_A"}
        out = await s.toggle_vote(rnd.id, 1, 7, UP)  # the old button still works, and toggles
        assert out.vote == 0
    finally:
        await s.close()


KILLED_VOTER = """
import asyncio, sys, time
from core.state import RoundItem, State

async def main():
    s = await State.open(sys.argv[1])
    session = await s.start_session(1, "dogs", __import__("numpy").ones(4, dtype="float32"))
    rnd = await s.add_round(session.id, "round", [RoundItem(1, "a", "u"), RoundItem(2, "b", "u")])
    await s.toggle_vote(rnd.id, 2, 7, -1)
    print("answered", flush=True)  # the bot answers the callback at this point
    time.sleep(60)

asyncio.run(main())
"""


async def test_an_answered_vote_survives_kill_9(db_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_VOTER, str(db_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "answered"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    s = await State.open(db_path)
    try:
        session = await s.active_session(1)
        assert session is not None and await s.labels(session.id) == {"b": DOWN}
    finally:
        await s.close()


async def test_export_has_one_column_per_voter_and_the_classifier(state: State) -> None:
    session = await state.start_session(-5, "red fox", unit(dim=4))
    rnd = await state.add_round(session.id, "round", items("a", "b"))
    await state.toggle_vote(rnd.id, 1, 1, UP, "Ann")
    await state.toggle_vote(rnd.id, 1, 2, DOWN, "Bob")
    await state.toggle_vote(rnd.id, 2, 2, UP, "Bob")
    export = await state.export(session.id)
    rows = list(csv.reader(io.StringIO(export.labels_csv())))
    assert rows[0] == ["image_id", "url", "label", "soft_label", "Ann (1)", "Bob (2)"]
    assert rows[1] == ["a", "https://img.example/a", "0", "0.000", "1", "-1"]
    assert rows[2] == ["b", "https://img.example/b", "1", "0.600", "", "1"]
    clf = json.loads(export.classifier_json())
    assert clf["concept"] == "red fox" and clf["dim"] == 4 and len(clf["weights"]) == 4 and clf["labels"] == 1


async def test_text_is_stored_as_given(state: State) -> None:
    concept = "'); DROP TABLE votes; -- 🦊 שלום"
    session = await state.start_session(3, concept, unit())
    assert (await state.session(session.id)).concept == concept  # type: ignore[union-attr]
    rnd = await state.add_round(session.id, "results", [RoundItem(1, "x'--", "u", score=0.5)])
    assert rnd.kind == "results" and rnd.items[0].image_id == "x'--" and rnd.items[0].score == 0.5


async def test_m003_keeps_each_sessions_decision_boundary(db_path: Path) -> None:
    assert MIGRATIONS[2].__name__ == "m003_session_boundary"
    db_path.parent.mkdir(parents=True)
    async with aiosqlite.connect(db_path, isolation_level=None) as db:  # a version 2 database
        await db.execute("BEGIN")
        await m001_initial(db)
        await MIGRATIONS[1](db)
        await db.execute(
            "INSERT INTO sessions (chat_id, concept, prior, weights, started_at) VALUES (5, 'fox', x'', x'', 0)"
        )
        await db.execute("PRAGMA user_version = 2")
        await db.commit()
    s = await State.open(db_path)
    try:
        old = await s.active_session(5)
        assert old is not None and old.boundary is None
        session = await s.start_session(6, "owl", unit())
        await s.save_weights(session.id, unit(), 3, boundary=0.25)
        saved = await s.session(session.id)
        assert saved is not None and saved.boundary == pytest.approx(0.25)
    finally:
        await s.close()
