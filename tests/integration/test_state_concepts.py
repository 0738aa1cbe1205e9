"""Saved concepts, seeded sessions, watches and match listings in SQLite, and their migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite
import numpy as np

from core.records import MatchQuery
from core.state import MIGRATIONS, SCHEMA_VERSION, RoundItem, State


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=8).astype(np.float32)
    return v / np.linalg.norm(v)


async def test_m004_to_m006_upgrade_a_version_3_database(tmp_path: Path) -> None:
    names = [m.__name__ for m in MIGRATIONS]
    assert names[3:6] == ["m004_match_views", "m005_saved_concepts", "m006_watches"]
    path = tmp_path / "state.sqlite3"
    async with aiosqlite.connect(path, isolation_level=None) as db:  # what the previous release left
        await db.execute("BEGIN")
        for m in MIGRATIONS[:3]:
            await m(db)
        await db.execute(
            "INSERT INTO sessions (chat_id, concept, prior, weights, started_at) VALUES (5, 'fox', x'', x'', 0)"
        )
        await db.execute("PRAGMA user_version = 3")
        await db.commit()
    s = await State.open(path)
    try:
        assert (await s.active_session(5)).concept == "fox"  # type: ignore[union-attr]
    finally:
        await s.close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 6
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    con.close()
    assert {"match_views", "saved_concepts", "session_seeds", "watches", "alerts_sent"} <= tables


async def test_a_saved_concept_survives_a_restart_and_seeds_a_new_session(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    s = await State.open(path)
    session = await s.start_session(7, "a red fox", unit(1))
    rnd = await s.add_round(session.id, "round", [RoundItem(1, "a", "u"), RoundItem(2, "b", "u")])
    await s.toggle_vote(rnd.id, 1, 70, 1)
    await s.toggle_vote(rnd.id, 2, 70, -1)
    labels = await s.labels(session.id)
    saved, replaced = await s.save_concept(7, "Fox", session, unit(2), 0.21, labels)
    assert not replaced and saved.labels == {"a": 1, "b": -1}
    _, replaced = await s.save_concept(7, "fox", session, unit(3), 0.25, labels)
    assert replaced  # the same name, whatever the case
    await s.close()

    s = await State.open(path)
    try:
        got = await s.saved_concept(7, "FOX")
        assert got is not None and got.threshold == 0.25 and np.array_equal(got.weights, unit(3))
        assert await s.saved_concept(8, "fox") is None  # another chat's names are its own
        assert got.query.excluded == ("b",) and got.query.cap is None
        continued = await s.start_from_saved(7, got)
        assert await s.labels(continued.id) == {"a": 1, "b": -1}
        # The new session's own votes decide: a 👎 on "a" overrides the saved 👍.
        rnd2 = await s.add_round(continued.id, "round", [RoundItem(1, "a", "u")])
        await s.toggle_vote(rnd2.id, 1, 70, -1)
        assert await s.labels(continued.id) == {"a": -1, "b": -1}

        assert await s.watch(7, got, 100) and not await s.watch(7, got, 200)
        assert [(w.chat_id, w.checked_until) for w in await s.watches()] == [(7, 100)]
        assert await s.record_alert(7, got.id, ["x", "y"], 150)
        assert await s.alerted(7, got.id) == {"x", "y"}
        assert (await s.watches())[0].checked_until == 150
        assert await s.unwatch(7, got) and not await s.record_alert(7, got.id, ["z"], 160)
        assert await s.forget_concept(7, "fox") is not None and await s.saved_concepts(7) == []
    finally:
        await s.close()


async def test_a_match_listing_is_kept_with_its_classifier(tmp_path: Path) -> None:
    s = await State.open(tmp_path / "state.sqlite3")
    try:
        session = await s.start_session(9, "boats", unit(4))
        view = await s.add_match_view(session.id, MatchQuery(unit(5), 0.3, None, ("r1", "r2")), 42)
        again = await s.match_view(view.id)
        assert again is not None and again.total == 42 and again.chat_id == 9 and again.concept == "boats"
        assert again.query.threshold == 0.3 and again.query.excluded == ("r1", "r2")
        assert np.array_equal(again.query.weights, unit(5))
        assert await s.match_view(view.id + 1) is None
    finally:
        await s.close()
