"""The store against the strict loopback server (tests/chhttp.py) in its ClickHouse and MyScale modes, a
one-node cluster, and the real limits: 128 KiB per HTTP parameter, 20,000 ids, background index builds."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import numpy as np
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from core.config import Settings
from core.errors import IndexBuildFailed, StoreError
from core.records import IndexStatus
from core.store import ClickHouseStore, open_store
from tests.chhttp import ChHttpServer
from tests.integration.test_store import DIM, NASTY, batch, exact, unit

MODES = ["clickhouse", "myscale"]


def serve(tmp_path: Path, **options: object) -> ChHttpServer:
    return ChHttpServer(tmp_path / "server", password="pw-8", **options)  # type: ignore[arg-type]


def client(server: ChHttpServer, **kw: object) -> clickhouse_connect.driver.Client:
    return clickhouse_connect.get_client(
        host="127.0.0.1", port=server.port, password=server.password, autogenerate_session_id=False, **kw
    )


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(tmp_path: Path, mode: str) -> Iterator[ChHttpServer]:
    with serve(tmp_path, myscale=mode == "myscale", build_s=0.05) as srv:
        yield srv


def http_store(server: ChHttpServer, tmp_path: Path, **changes: object) -> ClickHouseStore:
    cfg = Settings(data_dir=tmp_path / "data", db_url=server.url).with_(**changes)
    return open_store(cfg, dim=DIM)


# -- the stand-in is as strict as the server -------------------------------------------------------------


def test_a_parameter_over_128_kib_is_refused_as_the_server_does(tmp_path: Path) -> None:
    with serve(tmp_path) as srv:
        c = client(srv)
        ids = [f"id-{i:07d}" for i in range(12_000)]  # ~170 KiB as an Array(String) literal
        with pytest.raises(DatabaseError, match="Field value too long"):
            c.query(
                "SELECT count() FROM numbers(1) WHERE toString(number) IN {ids:Array(String)}", {"ids": ids}
            )
        assert c.query("SELECT {x:String}", {"x": "a" * 100_000}).result_rows == [("a" * 100_000,)]
        with pytest.raises(DatabaseError, match="Max query size exceeded"):
            c.query("SELECT length('" + "a" * 300_000 + "')")


def test_temporary_tables_outlive_a_request_only_inside_a_session(tmp_path: Path) -> None:
    with serve(tmp_path) as srv:
        plain = client(srv)
        plain.command("CREATE TEMPORARY TABLE t1 (x UInt8) ENGINE = Memory")
        with pytest.raises(DatabaseError, match="UNKNOWN_TABLE|does not exist|Unknown table"):
            plain.query("SELECT count() FROM t1")
        session = client(srv, session_id="vdx-test-session")
        session.command("CREATE TEMPORARY TABLE t2 (x UInt8) ENGINE = Memory")
        session.command("INSERT INTO t2 VALUES (1), (2)")
        assert session.query("SELECT count() FROM t2").result_rows == [(2,)]


def test_a_session_runs_one_query_at_a_time(tmp_path: Path) -> None:
    with serve(tmp_path) as srv:
        errors: list[str] = []

        def slow() -> None:
            try:
                client(srv, session_id="busy").query("SELECT sleep(1)")
            except DatabaseError as e:
                errors.append(str(e))

        threads = [threading.Thread(target=slow) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(errors) == 1 and "SESSION_IS_LOCKED" in errors[0]


# -- the store in both modes -------------------------------------------------------------------------------


def test_http_store_in_both_modes(server: ChHttpServer, tmp_path: Path, mode: str) -> None:
    X = unit(np.random.default_rng(7), 200)
    ids = [f"h{i}" for i in range(200)]
    with http_store(server, tmp_path) as s:
        assert (s.backend, s.dialect.name) == ("http", mode)
        s.insert(batch(ids[:150], X[:150]))
        s.insert(batch(ids[150:] + NASTY, np.vstack([X[150:], unit(np.random.default_rng(8), len(NASTY))])))
        assert s.count() == 200 + len(NASTY)
        q = X[3]
        hits = s.knn(q, 9, [ids[3], NASTY[0]])
        assert [h.id for h in hits] == [ids[i] for i in exact(X, q, 9, {3})]
        np.testing.assert_allclose([h.distance for h in hits], 1 - X[exact(X, q, 9, {3})] @ q, atol=1e-5)
        assert [h.id for h in s.get(NASTY)] == NASTY


def test_20000_ids_and_20000_exclusions_over_http(server: ChHttpServer, tmp_path: Path) -> None:
    n = 20_500
    X = unit(np.random.default_rng(11), n)
    ids = [f"photo-{i:06d}-{'é' if i % 7 == 0 else 'x'}" for i in range(n)]
    with http_store(server, tmp_path) as s:
        for i in range(0, n, 5000):
            s.insert(batch(ids[i : i + 5000], X[i : i + 5000]))
        asked = ids[:20_000]
        assert s.ids_present(asked + ["missing"]) == set(asked)
        assert [h.id for h in s.get(asked)] == asked
        got, V = s.vectors(asked)
        assert got == asked and V.shape == (20_000, DIM)
        q = X[20_100]
        skip = set(range(20_000))
        hits = s.knn(q, 9, asked)
        assert [h.id for h in hits] == [ids[i] for i in exact(X, q, 9, skip)]


def test_a_failed_open_of_an_unknown_cluster_is_one_line(tmp_path: Path) -> None:
    with serve(tmp_path, cluster="vdx") as srv, pytest.raises(StoreError) as err:
        http_store(srv, tmp_path, db_cluster="other").ensure_schema()
    assert "CLUSTER_DOESNT_EXIST" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("cluster_mode", MODES)
def test_a_cluster_reads_and_writes_through_the_distributed_table(tmp_path: Path, cluster_mode: str) -> None:
    X = unit(np.random.default_rng(12), 120)
    ids = [f"c{i}" for i in range(120)]
    with serve(tmp_path, cluster="vdx", myscale=cluster_mode == "myscale", build_s=0.02) as srv:
        with http_store(srv, tmp_path, db_cluster="vdx") as s:
            s.insert(batch(ids, X))
            assert s.count() == 120 and s.ids_present(ids[:5]) == set(ids[:5])
            q = X[9]
            assert [h.id for h in s.knn(q, 5, [ids[9]])] == [ids[i] for i in exact(X, q, 5, {9})]
            assert s.index_create().built
            assert s.info().cluster == "vdx" and s.info().table == "images"
        with http_store(srv, tmp_path, db_cluster="vdx") as s:
            assert s.dim == DIM and s.count() == 120  # the vector size is read from the local table
        rows = (
            client(srv)
            .query("SELECT name, engine FROM system.tables WHERE database = 'default' ORDER BY name")
            .result_rows
        )
        assert ("images_local", "MergeTree") in rows and ("images", "View") in rows  # the emulation's forms


# -- MyScale -----------------------------------------------------------------------------------------------


@pytest.fixture
def myscale(tmp_path: Path) -> Iterator[ChHttpServer]:
    with serve(tmp_path, myscale=True, build_s=0.05) as srv:
        yield srv


def test_myscale_without_brute_force_finds_nothing_before_the_index(
    myscale: ChHttpServer, tmp_path: Path
) -> None:
    X = unit(np.random.default_rng(13), 50)
    with http_store(myscale, tmp_path) as s:
        s.insert(batch([f"m{i}" for i in range(50)], X))
        raw = "SELECT id, distance(vector, {v:Array(Float32)}) AS d FROM images ORDER BY d LIMIT 5"
        assert client(myscale).query(raw, {"v": X[0].tolist()}).result_rows == []  # the server's default
        assert [h.id for h in s.knn(X[0], 5)][0] == "m0"  # the store asks for brute force


def test_myscale_cosine_ranking_is_the_same_before_and_after_the_index(
    myscale: ChHttpServer, tmp_path: Path
) -> None:
    X = unit(np.random.default_rng(14), 300)
    ids = [f"m{i}" for i in range(300)]
    seen: list[IndexStatus] = []
    with http_store(myscale, tmp_path) as s:
        for i in range(0, 300, 100):  # three parts
            s.insert(batch(ids[i : i + 100], X[i : i + 100]))
        q = X[17]
        before = s.knn(q, 9, [ids[17]])
        status = s.index_create(progress=seen.append)
        assert status.built and (status.parts_built, status.parts_total) == (3, 3)
        assert any(st.state == "InProgress" for st in seen)  # it waited, with progress
        after = s.knn(q, 9, [ids[17]])
        assert [h.id for h in before] == [h.id for h in after] == [ids[i] for i in exact(X, q, 9, {17})]
        np.testing.assert_allclose([h.distance for h in before], [h.distance for h in after], atol=1e-6)
        np.testing.assert_allclose([h.distance for h in after], 1 - X[exact(X, q, 9, {17})] @ q, atol=1e-5)
        s.insert(batch(["late"], unit(np.random.default_rng(15), 1)))  # a new part, not indexed yet
        assert s.knn(s.vectors(["late"])[1][0], 1)[0].id == "late"
        assert s.index_status().state in ("InProgress", "Built")
        assert not s.index_drop().exists


def test_myscale_where_the_old_metric_setting_is_still_live(tmp_path: Path) -> None:
    X = unit(np.random.default_rng(16), 40)
    with serve(tmp_path, myscale=True, myscale_old_metric=True) as srv, http_store(srv, tmp_path) as s:
        assert s.dialect.metric_setting == "vector_search_metric_type"  # type: ignore[attr-defined]
        s.insert(batch([f"o{i}" for i in range(40)], X))
        hits = s.knn(X[2], 3)
        np.testing.assert_allclose([h.distance for h in hits], 1 - X[exact(X, X[2], 3)] @ X[2], atol=1e-5)


def test_myscale_table_made_with_the_obsolete_setting_is_upgraded(
    myscale: ChHttpServer, tmp_path: Path
) -> None:
    X = unit(np.random.default_rng(17), 30)
    c = client(myscale)
    c.command(
        "CREATE TABLE images (id String, url String, caption String, source LowCardinality(String), "
        "added_at DateTime DEFAULT now(), vector Array(Float32) CODEC(NONE), "
        f"CONSTRAINT vec_len CHECK length(vector) = {DIM}) ENGINE = MergeTree ORDER BY id "
        "SETTINGS vector_search_metric_type = 'Cosine'"
    )
    with http_store(myscale, tmp_path) as s:
        s.insert(batch([f"u{i}" for i in range(30)], X))
        hits = s.knn(X[4], 3)
        # Without the upgrade the server would rank by L2 and report squared L2 (twice the cosine distance).
        np.testing.assert_allclose([h.distance for h in hits], 1 - X[exact(X, X[4], 3)] @ X[4], atol=1e-5)


def test_myscale_failed_build_is_reported_with_its_reason(tmp_path: Path) -> None:
    fail = "Code: 36. MSTG needs 1000 rows"
    with serve(tmp_path, myscale=True, build_s=0.02, fail_builds=fail) as srv, http_store(srv, tmp_path) as s:
        s.insert(batch(["a", "b"], unit(np.random.default_rng(18), 2)))
        started = s.index_create(wait=False)
        assert started.exists and started.state in ("InProgress", "Error")
        with pytest.raises(IndexBuildFailed, match="MSTG needs 1000 rows"):
            s.index_wait()
        status = s.index_status()
        assert status.state == "Error" and status.detail.startswith("Error 0/1 parts")
        assert len(s.knn(np.ones(DIM, np.float32), 2)) == 2  # brute force still answers


# -- ClickHouse builds -------------------------------------------------------------------------------------


def test_clickhouse_status_reads_only_its_own_mutation(tmp_path: Path) -> None:
    with open_store(Settings(data_dir=tmp_path / "data"), dim=DIM) as s:
        s.insert(batch([f"f{i}" for i in range(20)], unit(np.random.default_rng(19), 20)))
        assert s.index_create().built
        # A later mutation of the table that fails for ever is not the index's business.
        s._command(
            "ALTER TABLE images UPDATE caption = toString(throwIf(1, 'boom')) WHERE 1 SETTINGS mutations_sync = 0"
        )
        assert s.index_status().built


def test_clickhouse_failed_build_is_reported_with_its_reason(tmp_path: Path) -> None:
    with open_store(Settings(data_dir=tmp_path / "data"), dim=DIM) as s:
        s.insert(batch([f"f{i}" for i in range(20)], unit(np.random.default_rng(19), 20)))
        # An index declared for the wrong vector size (as by hand): its mutation fails, and stays failed.
        s._command(
            "ALTER TABLE images ADD INDEX vidx vector TYPE vector_similarity('hnsw', 'cosineDistance', 8)"
        )
        s._command("ALTER TABLE images MATERIALIZE INDEX vidx SETTINGS mutations_sync = 0")
        with pytest.raises(IndexBuildFailed, match="expects 8 elements") as err:
            s.index_wait()
        assert "\n" not in str(err.value) and len(str(err.value)) < 400
        assert s.index_status().state == "Error"
        assert len(s.knn(np.ones(DIM, np.float32), 3)) == 3  # search still answers


def test_myscale_on_the_embedded_database_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as err:
        open_store(Settings(data_dir=tmp_path / "data", db_dialect="myscale"), dim=DIM)
    assert "needs a MyScale server" in str(err.value) and len(str(err.value)) < 300


# -- live servers, only when named ------------------------------------------------------------------------


@pytest.mark.skipif(
    not (os.environ.get("VDX_TEST_CLICKHOUSE_URL") and os.environ.get("VDX_TEST_CLICKHOUSE_CLUSTER")),
    reason="set VDX_TEST_CLICKHOUSE_URL and VDX_TEST_CLICKHOUSE_CLUSTER to run",
)
def test_live_cluster(tmp_path: Path) -> None:
    table = f"vdx_test_{os.getpid()}"
    cfg = Settings(
        data_dir=tmp_path / "data",
        db_url=os.environ["VDX_TEST_CLICKHOUSE_URL"],
        db_cluster=os.environ["VDX_TEST_CLICKHOUSE_CLUSTER"],
        table=table,
    )
    X = unit(np.random.default_rng(20), 500)
    ids = [f"l{i}" for i in range(500)]
    with open_store(cfg, dim=DIM) as s:
        try:
            s.insert(batch(ids, X))
            assert s.count() == 500
            q = X[0]
            assert [h.id for h in s.knn(q, 5, [ids[0]])] == [ids[i] for i in exact(X, q, 5, {0})]
            assert s.index_create().built
        finally:
            for sql in s.layout.drop_sql():
                s._command(sql)


def test_optimize_over_http_reports_progress_and_merges(server: ChHttpServer, tmp_path: Path) -> None:
    seen: list[float] = []
    with http_store(server, tmp_path) as s:
        for i in range(3):
            s.insert(batch([f"p{i}-{j}" for j in range(50)], unit(np.random.default_rng(30 + i), 50)))
        s.optimize(progress=seen.append)
        parts = client(server).query(
            "SELECT count() FROM system.parts WHERE table = 'images' AND active AND database = 'default'"
        )
        assert parts.result_rows == [(1,)] and seen[-1] == 1.0 and s.count() == 150


def test_a_search_error_never_holds_the_query_vector(
    tmp_path: Path, tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.cli import main

    with serve(tmp_path) as srv:  # a ClickHouse server, told it is MyScale: distance() is unknown there
        with http_store(srv, tmp_path) as s:
            s.insert(batch(["a", "b"], unit(np.random.default_rng(21), 2)))
        for name, value in {
            "VDX_DB_URL": srv.url,
            "VDX_DB_DIALECT": "myscale",
            "VDX_CLIP_MODEL": str(tiny_clip_dir),
            "VDX_DEVICE": "cpu",
            "VDX_TORCH_THREADS": "1",
        }.items():
            monkeypatch.setenv(name, value)
        code = main(["search", "a cat on a sofa"])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("vdx: error:"), err
    assert len(lines[0]) <= 400 and not re.search(r"(-?\d\.\d+,\s*){5}", err) and "pw-8" not in err


def test_vdx_index_create_waits_with_progress_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.cli import main

    with serve(tmp_path, myscale=True, build_s=0.3) as srv:
        with http_store(srv, tmp_path) as s:
            for i in range(3):
                s.insert(batch([f"i{i}-{j}" for j in range(10)], unit(np.random.default_rng(40 + i), 10)))
        monkeypatch.setenv("VDX_DB_URL", srv.url)
        assert main(["index", "create", "--no-wait"]) == 0
        out, _ = capsys.readouterr()
        assert out.startswith("index: MSTG InProgress ") and out.strip().endswith("/3 parts")
        assert main(["index", "create"]) == 0
        out, err = capsys.readouterr()
        assert out.strip() == "index: MSTG Built 3/3 parts"
        assert "index: building, " in err and "/3 parts done" in err
        assert (
            main(["index", "status"]) == 0 and capsys.readouterr()[0].strip() == "index: MSTG Built 3/3 parts"
        )
