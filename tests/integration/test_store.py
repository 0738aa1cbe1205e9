"""The ClickHouse store on real chDB, embedded and through the loopback HTTP server (tests/chhttp.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import core.store
from core.config import Settings
from core.errors import DatabaseLocked, DimensionMismatch, StoreError, StoreUnavailable
from core.records import ImageBatch
from core.store import ClickHouseStore, open_store
from tests.chhttp import ChHttpServer

DIM = 16
NASTY = [
    "'); DROP TABLE images; --",
    'quote " and \\ backslash',
    "{v:Array(Float32)} braces",
    "emoji 🐱 and RTL שלום",
    "tab\tnew\nline",
]


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def batch(ids: list[str], X: np.ndarray, captions: list[str] | None = None) -> ImageBatch:
    return ImageBatch(
        ids=ids,
        urls=[f"https://example.org/{i}.jpg" for i in ids],
        vectors=X,
        captions=captions or [f"caption of {i}" for i in ids],
        sources=["folder"] * len(ids),
    )


def exact(X: np.ndarray, q: np.ndarray, k: int, skip: set[int] = frozenset()) -> list[int]:  # type: ignore[assignment]
    order = np.argsort(-(X @ q), kind="stable")
    return [int(i) for i in order if int(i) not in skip][:k]


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def store(cfg: Settings) -> Iterator[ClickHouseStore]:
    s = open_store(cfg, dim=DIM)
    s.ensure_schema()
    yield s
    s.close()


@pytest.fixture
def filled(store: ClickHouseStore) -> tuple[ClickHouseStore, list[str], np.ndarray]:
    X = unit(np.random.default_rng(1), 400)
    ids = [f"img{i:04d}" for i in range(len(X))]
    store.insert(batch(ids, X))
    return store, ids, X


# -- embedded chDB ------------------------------------------------------------------------------------


def test_schema_is_idempotent_and_remembers_the_dimension(cfg: Settings) -> None:
    with open_store(cfg, dim=DIM) as s:
        s.ensure_schema()
        s.ensure_schema()
        assert s.count() == 0 and s.info().dim == DIM
    with open_store(cfg) as s:  # no dim given: read from the table
        assert s.dim == DIM and s.info().rows == 0


def test_a_missing_table_reads_as_empty(cfg: Settings) -> None:
    with open_store(cfg) as s:
        assert s.dim == 0
        assert s.count() == 0
        assert s.knn(np.ones(DIM, np.float32), 9) == []
        assert s.ids_present(["a"]) == set() and s.get(["a"]) == []
        assert s.vectors(["a"])[0] == []
        with pytest.raises(StoreError, match="vector size is unknown"):
            s.ensure_schema()
    with open_store(cfg, dim=DIM) as s:
        assert s.knn(np.ones(DIM, np.float32), 9) == [] and s.count() == 0


def test_insert_then_knn_matches_numpy_exact(filled: tuple[ClickHouseStore, list[str], np.ndarray]) -> None:
    store, ids, X = filled
    assert store.count() == len(ids)
    for q in unit(np.random.default_rng(2), 5):
        hits = store.knn(q, 9)
        assert [h.id for h in hits] == [ids[i] for i in exact(X, q, 9)]
        np.testing.assert_allclose([h.distance for h in hits], 1 - X[exact(X, q, 9)] @ q, atol=1e-5)
        assert (
            hits[0].url.endswith(".jpg")
            and hits[0].caption.startswith("caption")
            and hits[0].source == "folder"
        )


def test_knn_skips_excluded_ids(filled: tuple[ClickHouseStore, list[str], np.ndarray]) -> None:
    store, ids, X = filled
    q = X[7]
    first = store.knn(q, 9)
    assert first[0].id == ids[7] and first[0].distance == pytest.approx(0, abs=1e-5)
    labelled = [h.id for h in first] + ["no-such-id"]
    second = store.knn(q, 9, labelled)
    assert not {h.id for h in second} & set(labelled)
    assert [h.id for h in second] == [ids[i] for i in exact(X, q, 9, {ids.index(h.id) for h in first})]


def test_new_rows_are_searchable_at_once(filled: tuple[ClickHouseStore, list[str], np.ndarray]) -> None:
    store, _, _ = filled
    v = unit(np.random.default_rng(3), 1)
    store.knn(v[0], 3)  # search before the insert, so a cached copy would go stale
    store.insert(batch(["late-arrival"], v))
    assert store.knn(v[0], 1)[0].id == "late-arrival"


def test_a_table_too_big_to_copy_is_scanned_in_place(
    filled: tuple[ClickHouseStore, list[str], np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ids, X = filled
    monkeypatch.setattr(core.store, "HOT_COPY_MAX_ROWS", 10)
    q = X[20]
    assert [h.id for h in store.knn(q, 9, [ids[20]])] == [ids[i] for i in exact(X, q, 9, {20})]
    assert store.hot_copy is False


def test_ids_present_get_and_vectors(filled: tuple[ClickHouseStore, list[str], np.ndarray]) -> None:
    store, ids, X = filled
    asked = [f"missing{i}" for i in range(12_000)] + ids[:3]  # more than one chunk
    assert store.ids_present(asked) == set(ids[:3])
    assert [h.id for h in store.get([ids[5], "nope", ids[2]])] == [ids[5], ids[2]]
    got_ids, V = store.vectors([ids[9], "nope", ids[1]])
    assert got_ids == [ids[9], ids[1]] and V.dtype == np.float32
    np.testing.assert_allclose(V, X[[9, 1]], atol=1e-6)


def test_sql_looking_text_is_stored_verbatim(store: ClickHouseStore) -> None:
    X = unit(np.random.default_rng(4), len(NASTY))
    store.insert(batch(NASTY, X, captions=NASTY))
    assert store.count() == len(NASTY)
    assert [(h.id, h.caption) for h in store.get(NASTY)] == list(zip(NASTY, NASTY, strict=True))
    assert store.ids_present(NASTY) == set(NASTY)
    hits = store.knn(X[0], 3, exclude_ids=[NASTY[0]])
    assert NASTY[0] not in {h.id for h in hits} and len(hits) == 3


def test_wrong_dimensions_are_refused_and_nothing_is_lost(cfg: Settings) -> None:
    with open_store(cfg, dim=DIM) as s:
        s.insert(batch(["a"], unit(np.random.default_rng(5), 1)))
        with pytest.raises(DimensionMismatch, match="expected 16-d vectors, got 8-d"):
            s.insert(batch(["b"], unit(np.random.default_rng(5), 1, dim=8)))
        with pytest.raises(DimensionMismatch):
            s.knn(np.ones(8, np.float32), 3)
        with pytest.raises(StoreError, match="zero or non-finite"):
            s.insert(batch(["c"], np.zeros((1, DIM), np.float32)))
        assert s.count() == 1
    with pytest.raises(DimensionMismatch, match="expected 16-d vectors, got 512-d"):
        open_store(cfg, dim=512)
    with open_store(cfg, dim=DIM) as s:  # the failed open released the database
        assert s.count() == 1


def test_a_second_process_gets_a_clear_locked_error(store: ClickHouseStore, cfg: Settings) -> None:
    code = (
        "import sys; from pathlib import Path\n"
        "from core.config import Settings\nfrom core.store import open_store\n"
        "from core.errors import DatabaseLocked\n"
        "try:\n    open_store(Settings(data_dir=Path(sys.argv[1])))\n"
        "except DatabaseLocked as e:\n    print('LOCKED', e)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code, str(cfg.data_dir)], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.startswith("LOCKED"), out.stderr[-2000:]
    assert "in use by another vdx process" in out.stdout and "VDX_DB_URL" in out.stdout
    assert issubclass(DatabaseLocked, StoreUnavailable)


def test_index_create_status_drop(filled: tuple[ClickHouseStore, list[str], np.ndarray]) -> None:
    store, ids, X = filled
    assert not store.index_status().exists
    status = store.index_create()
    assert status.exists and status.kind == "hnsw" and status.detail.startswith("Built")
    assert store.info().index.exists
    q = X[11]
    labelled = [h.id for h in store.knn(q, 9)]
    store.hot_copy = False  # as for a table too big to copy into memory: the index answers
    hits = store.knn(q, 9, labelled)
    assert len(hits) == 9 and not {h.id for h in hits} & set(labelled)
    want = {ids[i] for i in exact(X, q, 9, {ids.index(i) for i in labelled})}
    assert len(want & {h.id for h in hits}) >= 7  # approximate search
    assert not store.index_drop().exists
    assert [h.id for h in store.knn(q, 9, labelled)] == [
        ids[i] for i in exact(X, q, 9, {ids.index(i) for i in labelled})
    ]


def test_index_on_a_missing_table_is_a_clear_error(cfg: Settings) -> None:
    with open_store(cfg, dim=DIM) as s, pytest.raises(StoreError, match="does not exist yet"):
        s.index_create()


def test_threads_get_their_own_answers(filled: tuple[ClickHouseStore, list[str], np.ndarray]) -> None:
    store, _, X = filled
    queries = unit(np.random.default_rng(6), 8)
    want = [[h.id for h in store.knn(q, 5)] for q in queries]
    got: dict[int, list[list[str]]] = {}

    def worker(t: int) -> None:
        got[t] = [[h.id for h in store.knn(q, 5)] for q in queries]

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(got[t] == want for t in range(4))


def test_info_names_the_backend(filled: tuple[ClickHouseStore, list[str], np.ndarray], cfg: Settings) -> None:
    store, ids, _ = filled
    info = store.info()
    assert (info.backend, info.dialect, info.table, info.rows, info.dim) == (
        "chdb",
        "clickhouse",
        "images",
        len(ids),
        DIM,
    )
    assert info.url == cfg.effective_db_url


def test_a_call_after_close_is_a_store_error(cfg: Settings) -> None:
    s = open_store(cfg, dim=DIM)
    s.close()
    with pytest.raises(StoreError):
        s.count()


# -- HTTP, through the loopback server ------------------------------------------------------------------


@pytest.fixture(params=["clickhouse", "myscale"])
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ChHttpServer]:
    """The strict loopback server, as ClickHouse and as MyScale (see tests/chhttp.py)."""
    with ChHttpServer(tmp_path / "server", password="s3cr3t-pw", myscale=request.param == "myscale") as srv:
        srv.dialect = request.param  # type: ignore[attr-defined]
        yield srv


def test_http_store_works_like_the_embedded_one(server: ChHttpServer, tmp_path: Path) -> None:
    cfg = Settings(data_dir=tmp_path / "data", db_url=server.url)
    X = unit(np.random.default_rng(7), 200)
    ids = [f"h{i}" for i in range(200)]
    with open_store(cfg, dim=DIM) as s:
        assert (s.backend, s.dialect.name) == ("http", server.dialect)  # type: ignore[attr-defined]
        s.insert(batch(ids[:150], X[:150]))
        s.insert(batch(ids[150:] + NASTY, np.vstack([X[150:], unit(np.random.default_rng(8), len(NASTY))])))
        assert s.count() == 200 + len(NASTY)
        q = X[3]
        assert [h.id for h in s.knn(q, 9, [ids[3]])] == [ids[i] for i in exact(X, q, 9, {3})]
        assert [h.id for h in s.get(NASTY)] == NASTY
        info = s.info()
        assert "s3cr3t-pw" not in repr(info) and info.url == f"http://default@127.0.0.1:{server.port}/default"
    with open_store(cfg) as s:
        assert s.dim == DIM


def test_http_outage_is_reported_and_recovers(server: ChHttpServer, tmp_path: Path) -> None:
    cfg = Settings(data_dir=tmp_path / "data", db_url=server.url)
    with open_store(cfg, dim=DIM) as s:
        s.insert(batch(["a", "b"], unit(np.random.default_rng(9), 2)))
        server.stop()
        with pytest.raises(StoreUnavailable) as err:
            s.knn(np.ones(DIM, np.float32), 2)
        assert "s3cr3t-pw" not in str(err.value) and err.value.url == s.url
        with pytest.raises(StoreUnavailable):
            s.count()
        server.start()
        assert s.count() == 2
        assert len(s.knn(np.ones(DIM, np.float32), 2)) == 2


def test_http_open_fails_clearly_when_the_server_is_down_or_refuses(
    server: ChHttpServer, tmp_path: Path
) -> None:
    wrong = Settings(data_dir=tmp_path / "data", db_url=server.url.replace("s3cr3t-pw", "guess"))
    with pytest.raises(StoreUnavailable) as err:
        open_store(wrong)
    assert "guess" not in str(err.value) and "Authentication failed" in str(err.value)
    server.stop()
    with pytest.raises(StoreUnavailable, match="connection refused") as err:
        open_store(Settings(data_dir=tmp_path / "data", db_url=server.url))
    assert "s3cr3t-pw" not in str(err.value)


def test_explicit_dialect_is_kept(cfg: Settings) -> None:
    with open_store(cfg.with_(db_dialect="clickhouse"), dim=DIM) as s:
        assert s.dialect.name == "clickhouse"
    with open_store(cfg, dim=DIM) as s:  # auto: chDB has no system.vector_indices
        assert s.dialect.name == "clickhouse"


# -- live servers, only when one is named -----------------------------------------------------------------


def _live(url_var: str, dialect: str, tmp_path: Path) -> None:
    """Search before the index, wait for it, the same cosine ranking after, 20,000 exclusions, drop."""
    table = f"vdx_test_{os.getpid()}"
    cfg = Settings(data_dir=tmp_path / "data", db_url=os.environ[url_var], table=table)
    n = 21_000
    X = unit(np.random.default_rng(10), n)
    ids = [f"m{i}" for i in range(n)]
    with open_store(cfg, dim=DIM) as s:
        try:
            assert s.dialect.name == dialect
            for i in range(0, n, 7000):
                s.insert(batch(ids[i : i + 7000], X[i : i + 7000]))
            q = X[0]
            want = [ids[i] for i in exact(X, q, 5, {0})]
            before = s.knn(q, 5, [ids[0]])
            assert [h.id for h in before] == want
            np.testing.assert_allclose(
                [h.distance for h in before], 1 - X[exact(X, q, 5, {0})] @ q, atol=1e-4
            )
            assert s.index_create().built
            after = s.knn(q, 5, [ids[0]])
            assert len(after) == 5 and len({h.id for h in after} & set(want)) >= 4  # approximate search
            skip = ids[:20_000]
            assert s.ids_present(skip) == set(skip)
            far = s.knn(X[20_500], 5, skip)
            assert len(far) == 5 and not {h.id for h in far} & set(skip)
            assert not s.index_drop().exists
        finally:
            s._command(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.skipif(not os.environ.get("VDX_TEST_MYSCALE_URL"), reason="set VDX_TEST_MYSCALE_URL to run")
def test_live_myscale(tmp_path: Path) -> None:
    _live("VDX_TEST_MYSCALE_URL", "myscale", tmp_path)


@pytest.mark.skipif(
    not os.environ.get("VDX_TEST_CLICKHOUSE_URL"), reason="set VDX_TEST_CLICKHOUSE_URL to run"
)
def test_live_clickhouse(tmp_path: Path) -> None:
    _live("VDX_TEST_CLICKHOUSE_URL", "clickhouse", tmp_path)


def test_http_store_deletes_rows_records_the_model_and_swaps_a_table(
    server: ChHttpServer, tmp_path: Path
) -> None:
    from core.records import ModelIdentity

    cfg = Settings(data_dir=tmp_path / "data", db_url=server.url)
    X = unit(np.random.default_rng(11), 6)
    with open_store(cfg, dim=DIM) as s:
        s.insert(batch([f"d{i}" for i in range(6)], X))
        assert s.model() is None
        s.record_model(ModelIdentity("first", DIM, "sha256:1"))
        s.record_model(ModelIdentity("second", DIM, "sha256:2"))
        assert s.model() == ModelIdentity("second", DIM, "sha256:2")  # the latest record wins
        assert s.delete(["d0", "d5", "never"]) == 2
        assert s.count() == 4 and "d0" not in {h.id for h in s.knn(X[0], 6)}
        side = s.sibling("__reembed")
        side.dim = DIM
        side.insert(batch(["n1", "n2"], X[:2]))
        s.replace_with(side)
        assert s.ids_present(["d1", "n1", "n2"]) == {"n1", "n2"} and s.count() == 2
