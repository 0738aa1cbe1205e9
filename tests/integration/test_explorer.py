"""The labelling loop through the real embedded chDB store: rounds, refits and results a person would see."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.classifier import ClassifierParams, LinearClassifier
from core.config import Settings
from core.errors import EmptyDataset
from core.explorer import STRATEGIES, Explorer
from core.store import ClickHouseStore, open_store
from core.synthetic import SyntheticConfig, SyntheticData, generate

CONFIG = SyntheticConfig(n_images=1500, dim=64, n_groups=3, classes_per_group=4, seed=7)


@pytest.fixture(scope="module")
def data() -> SyntheticData:
    """1.5k CLIP-like 64-d images in 12 concepts."""
    return generate(CONFIG)


@pytest.fixture
def store(tmp_path: Path, data: SyntheticData) -> Iterator[ClickHouseStore]:
    """The product's embedded chDB store holding ``data``; closed after the test (one chDB path per process)."""
    s = open_store(Settings(data_dir=tmp_path / "data"), dim=CONFIG.dim)
    try:
        s.ensure_schema()
        s.insert(data.batch())
        yield s
    finally:
        s.close()


def _votes(data: SyntheticData, concept: int, ids: list[str]) -> dict[str, int]:
    positives = set(np.asarray(data.ids)[data.labels == concept])
    return {i: 1 if i in positives else -1 for i in ids}


def _precision(data: SyntheticData, concept: int, ids: list[str]) -> float:
    label = dict(zip(data.ids, data.labels.tolist(), strict=True))
    return float(np.mean([label[i] == concept for i in ids]))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_rounds_never_show_an_image_twice(store: ClickHouseStore, data: SyntheticData, strategy: str) -> None:
    explorer = Explorer(store, strategy=strategy)  # type: ignore[arg-type]
    session = explorer.start_vector("concept", data.text_vectors[0])
    votes: dict[str, int] = {}
    for _ in range(4):
        batch = explorer.next_batch(session, 9)
        ids = [h.id for h in batch]
        assert len(ids) == 9 and len(set(ids)) == 9
        assert not set(ids) & votes.keys(), "a round showed an image that was already voted on"
        votes.update(_votes(data, 0, ids))
        explorer.fit(session, votes)


def test_fit_learns_from_every_vote_so_far(store: ClickHouseStore, data: SyntheticData) -> None:
    explorer = Explorer(store)
    session = explorer.start_vector("concept", data.text_vectors[1])
    votes: dict[str, int] = {}
    for _ in range(2):
        votes.update(_votes(data, 1, [h.id for h in explorer.next_batch(session, 9)]))
        explorer.fit(session, {**votes, "never-stored": 1})
    votes_with_skips = {**votes, next(iter(votes)): 0}  # 0 = "not labelled": dropped
    weight = explorer.fit(session, votes_with_skips)
    kept = {i: v for i, v in votes_with_skips.items() if v}
    assert session.labels == kept
    ids, X = store.vectors(list(kept))
    expected = LinearClassifier(data.text_vectors[1]).fit(X, np.array([kept[i] > 0 for i in ids]))
    np.testing.assert_allclose(weight, expected.weight, atol=1e-5)


def test_top_puts_liked_images_first_and_leaves_out_rejected(
    store: ClickHouseStore, data: SyntheticData
) -> None:
    explorer = Explorer(store)
    concept = 2
    session = explorer.start_vector("concept", data.text_vectors[concept])
    zero_shot = _precision(data, concept, [s.id for s in explorer.top(session, 9)])
    votes: dict[str, int] = {}
    for _ in range(3):
        votes.update(_votes(data, concept, [h.id for h in explorer.next_batch(session, 9)]))
        explorer.fit(session, votes)
    top = explorer.top(session, 9)
    assert [s.score for s in top] == sorted((s.score for s in top), reverse=True)
    assert not {s.id for s in top} & {i for i, v in votes.items() if v < 0}
    assert _precision(data, concept, [s.id for s in top]) >= max(zero_shot, 0.8)
    # Ranked by the classifier alone, every liked image scores above every rejected one.
    ranked = [s.id for s in explorer.top(session, 300, include_rejected=True)]
    liked = [ranked.index(i) for i, v in votes.items() if v > 0 and i in ranked]
    rejected = [ranked.index(i) if i in ranked else len(ranked) for i, v in votes.items() if v < 0]
    assert liked and max(liked) < min(rejected)


@pytest.mark.parametrize(
    ("params", "strategy"), [(ClassifierParams(), "mixed"), (ClassifierParams(method="original"), "hard")]
)
def test_votes_never_make_results_worse_than_zero_shot(
    store: ClickHouseStore, data: SyntheticData, params: ClassifierParams, strategy: str
) -> None:
    explorer = Explorer(store, params=params, strategy=strategy)  # type: ignore[arg-type]
    gains = []
    for concept in range(0, 12, 2):
        session = explorer.start_vector(f"c{concept}", data.text_vectors[concept])
        zero_shot = _precision(data, concept, [s.id for s in explorer.top(session, 9, include_rejected=True)])
        votes: dict[str, int] = {}
        for _ in range(3):
            votes.update(_votes(data, concept, [h.id for h in explorer.next_batch(session, 9)]))
            explorer.fit(session, votes)
            p9 = _precision(data, concept, [s.id for s in explorer.top(session, 9, include_rejected=True)])
            assert p9 >= zero_shot
        gains.append(p9 - zero_shot)
    if params.method == "prior":
        assert np.mean(gains) >= 0.15


def test_a_resumed_session_continues_where_it_stopped(store: ClickHouseStore, data: SyntheticData) -> None:
    explorer = Explorer(store, strategy="boundary")
    session = explorer.start_vector("concept", data.text_vectors[3])
    votes: dict[str, int] = {}
    for _ in range(2):
        votes.update(_votes(data, 3, [h.id for h in explorer.next_batch(session, 9)]))
        explorer.fit(session, votes)
    # What the bot persists: prior, weights and labels (the decision threshold is recomputed).
    resumed = explorer.resume(session.concept, session.prior, session.weights, session.labels)
    assert [h.id for h in explorer.next_batch(resumed, 9)] == [h.id for h in explorer.next_batch(session, 9)]
    assert [s.id for s in explorer.top(resumed, 9)] == [s.id for s in explorer.top(session, 9)]


def test_bad_strategy_and_empty_collection_are_clear_errors(tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path / "empty"), dim=CONFIG.dim)
    try:
        store.ensure_schema()
        explorer = Explorer(store)
        session = explorer.start_vector("anything", np.ones(CONFIG.dim, dtype=np.float32))
        for strategy in STRATEGIES:
            with pytest.raises(EmptyDataset):
                explorer.next_batch(session, 9, strategy=strategy)  # type: ignore[arg-type]
        with pytest.raises(EmptyDataset):
            explorer.top(session, 9)
        with pytest.raises(ValueError, match="unknown round strategy"):
            explorer.next_batch(session, 9, strategy="nearest")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown round strategy"):
            Explorer(store, strategy="nearest")  # type: ignore[arg-type]
    finally:
        store.close()


def test_the_match_estimate_counts_the_whole_collection(store: ClickHouseStore, data: SyntheticData) -> None:
    """"About N images match" is the exact count above the boundary, also past the best 1000: 👎 left
    out, 👍 counted even below the boundary; the in-memory store gives the same count."""
    from core.synthetic import NumpyStore

    explorer = Explorer(store)
    session = explorer.start_vector("concept", data.text_vectors[0])
    explorer.fit(session, _votes(data, 0, [h.id for h in explorer.next_batch(session, 9)]))
    assert session.boundary is not None
    # A boundary low enough that well over 1000 of the 1500 images score above it.
    session.boundary = float(np.quantile(data.vectors @ session.weights, 0.1))
    estimate = explorer.estimate_matches(session)
    assert estimate is not None
    scores = dict(zip(data.ids, (data.vectors @ session.weights).tolist(), strict=True))
    expected = {i for i, s in scores.items() if s > session.boundary}
    expected -= {i for i, v in session.labels.items() if v < 0}
    expected |= {i for i, v in session.labels.items() if v > 0}
    assert estimate.count == len(expected) > 1000
    memory = NumpyStore(CONFIG.dim)
    memory.insert(data.batch())
    in_memory = Explorer(memory)
    assert in_memory.estimate_matches(session) == estimate
