"""Every image a classifier accepts, computed in chDB, against numpy on the same vectors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.config import Settings
from core.dialects import MyScaleDialect
from core.records import ImageBatch, Scored
from core.store import ClickHouseStore, open_store
from core.synthetic import NumpyStore

DIM = 16


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_ranking(
    X: np.ndarray, ids: list[str], w: np.ndarray, threshold: float | None
) -> list[tuple[str, float]]:
    """What numpy says: ids scoring above ``threshold``, best first, ties by id."""
    s = X @ (w / np.linalg.norm(w))
    keep = [i for i in range(len(ids)) if threshold is None or s[i] > threshold]
    keep.sort(key=lambda i: (-s[i], ids[i]))
    return [(ids[i], float(s[i])) for i in keep]


def same_ranking(got: list[Scored], want: list[tuple[str, float]]) -> None:
    """Equal id order; where two scores are within float32 rounding of each other either order is right."""
    assert len(got) == len(want)
    scores = dict(want)
    for a, b in zip(got, want, strict=True):
        assert a.score == pytest.approx(scores[a.id], abs=1e-5)
        if a.id != b[0]:
            assert abs(scores[a.id] - b[1]) < 1e-5, (a, b)


@pytest.fixture
def data() -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(3)
    X = unit(rng, 1500)
    X[1000:1100] = X[900:1000]  # exact ties: a page boundary must still be the same on every call
    return [f"m{i:05d}" for i in range(len(X))], X


@pytest.fixture(params=["hot", "mergetree", "myscale-sql"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, data: tuple[list[str], np.ndarray]
) -> Iterator[ClickHouseStore]:
    """The embedded store scanning its in-memory copy, its MergeTree table, or with MyScale's SQL."""
    ids, X = data
    s = open_store(Settings(data_dir=tmp_path / "data"), dim=DIM)
    s.ensure_schema()
    s.insert(
        ImageBatch(
            ids, [f"https://e.org/{i}" for i in ids], X, [f"c {i}" for i in ids], ["folder"] * len(ids)
        )
    )
    if request.param != "hot":
        s.hot_copy = False
    if request.param == "myscale-sql":
        s.dialect = MyScaleDialect()  # MyScale's score expression, run here on chDB
    yield s
    s.close()


def all_pages(
    store: ClickHouseStore | NumpyStore, w: np.ndarray, threshold: float | None, size: int, **kw: object
) -> tuple[list[Scored], set[int]]:
    out: list[Scored] = []
    totals = set()
    offset = 0
    while True:
        page = store.matches(w, threshold, size, offset, **kw)  # type: ignore[arg-type]
        totals.add(page.total)
        if not page.items:
            return out, totals
        assert page.offset == offset
        out += page.items
        offset += len(page.items)


def test_matches_in_sql_equal_numpys_ranking(
    store: ClickHouseStore, data: tuple[list[str], np.ndarray]
) -> None:
    ids, X = data
    rng = np.random.default_rng(11)
    for w, threshold in [(X[0] + X[1], 0.35), (unit(rng, 1)[0], 0.2), (X[950], -0.1)]:
        want = numpy_ranking(X, ids, w, threshold)
        assert len(want) > 9
        page = store.matches(w, threshold, len(ids))
        assert page.total == len(want) and page.threshold == threshold
        same_ranking(page.items, want)
        assert all(m.score > threshold for m in page.items)
        assert page.items[0].url == f"https://e.org/{page.items[0].id}" and page.items[0].caption


def test_paging_never_repeats_or_skips(store: ClickHouseStore, data: tuple[list[str], np.ndarray]) -> None:
    ids, X = data
    w = X[950] + 0.3 * X[10]  # scores X[950]'s duplicate pair alike: ties straddle page boundaries
    want = numpy_ranking(X, ids, w, 0.0)
    for size in (9, 10, 7):
        pages, totals = all_pages(store, w, 0.0, size)
        assert totals == {len(want)}  # the count is stated the same on every page, even past the end
        assert len({m.id for m in pages}) == len(pages) == len(want)
        same_ranking(pages, want)
    # Asking twice gives the same page, tie order included.
    assert store.matches(w, 0.0, 9, 45).items == store.matches(w, 0.0, 9, 45).items


def test_without_a_boundary_the_top_n(store: ClickHouseStore, data: tuple[list[str], np.ndarray]) -> None:
    ids, X = data
    w = X[5]
    pages, totals = all_pages(store, w, None, 9, cap=100)
    assert totals == {100}
    same_ranking(pages, numpy_ranking(X, ids, w, None)[:100])


def test_excluded_images_are_neither_listed_nor_counted(
    store: ClickHouseStore, data: tuple[list[str], np.ndarray]
) -> None:
    ids, X = data
    w = X[7]
    want = numpy_ranking(X, ids, w, 0.3)
    rejected = [want[0][0], want[3][0], "not-an-image"]
    page = store.matches(w, 0.3, 1000, exclude_ids=rejected)
    assert page.total == len(want) - 2
    assert [m.id for m in page.items] == [i for i, _ in want if i not in rejected]


def test_numpy_store_agrees(data: tuple[list[str], np.ndarray]) -> None:
    ids, X = data
    ref = NumpyStore(DIM)
    ref.insert(ImageBatch(ids, ids, X, ids, ["folder"] * len(ids)))
    pages, totals = all_pages(ref, X[2], 0.25, 9)
    want = numpy_ranking(X, ids, X[2], 0.25)
    assert totals == {len(want)} and [m.id for m in pages] == [i for i, _ in want]


def test_an_empty_or_missing_table_has_no_matches(tmp_path: Path) -> None:
    with open_store(Settings(data_dir=tmp_path / "data"), dim=DIM) as s:
        page = s.matches(np.ones(DIM, np.float32), 0.1, 9)
        assert page.total == 0 and page.items == []
