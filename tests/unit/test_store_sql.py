"""Golden SQL of both dialects, and ``VDX_DB_URL`` parsing (no database needed)."""

from __future__ import annotations

import pytest

from core.dialects import (
    EXCLUDED_PARAM,
    EXCLUDED_TABLE,
    ClickHouseDialect,
    HnswParams,
    MyScaleDialect,
    TableLayout,
    short_reason,
)
from core.errors import StoreError
from core.records import IndexStatus
from core.store import _chunks, _param_bytes, _row_binary, dim_from_ddl, parse_db_url

CH = ClickHouseDialect()
MS = MyScaleDialect()
ONE = TableLayout("images")
CLUSTER = TableLayout("images", "vectors", "vdx")
COLS = (
    "id String, url String, caption String, source LowCardinality(String), added_at DateTime DEFAULT now(), "
    "vector Array(Float32) CODEC(NONE), CONSTRAINT vec_len CHECK length(vector) = {dim}"
)


def test_create_table_clickhouse() -> None:
    assert CH.create_table_sql(ONE, 512) == [
        f"CREATE TABLE IF NOT EXISTS images ({COLS.format(dim=512)}) ENGINE = MergeTree ORDER BY id"
    ]


def test_create_table_myscale_sets_the_brute_force_metric_it_has() -> None:
    want = (
        f"CREATE TABLE IF NOT EXISTS photos ({COLS.format(dim=768)}) ENGINE = MergeTree ORDER BY id SETTINGS "
    )
    assert MS.create_table_sql(TableLayout("photos"), 768) == [
        want + "float_vector_search_metric_type = 'Cosine'"
    ]
    old = MyScaleDialect(metric_setting="vector_search_metric_type")
    assert old.create_table_sql(TableLayout("photos"), 768) == [want + "vector_search_metric_type = 'Cosine'"]


def test_myscale_probe_prefers_the_current_setting_and_skips_an_obsolete_one() -> None:
    def server(rows: list[tuple[str, str]]) -> MyScaleDialect:
        d = MyScaleDialect()
        d.probe(lambda sql, params: [r for r in rows if r[0] in params["names"]])
        return d

    current = ("float_vector_search_metric_type", "Default metric type for Float vector brute force search")
    obsolete = ("vector_search_metric_type", "Obsolete setting, does nothing.")
    live_old = ("vector_search_metric_type", "Default metric type for vector search")
    assert server([current, obsolete]).metric_setting == "float_vector_search_metric_type"
    assert server([live_old]).metric_setting == "vector_search_metric_type"
    assert server([obsolete]).metric_setting == ""
    assert server([obsolete]).create_table_sql(ONE, 4)[0].endswith("ORDER BY id")


def test_myscale_upgrades_a_table_made_with_the_obsolete_setting() -> None:
    old_ddl = "CREATE TABLE default.images (...) ENGINE = MergeTree ORDER BY id SETTINGS vector_search_metric_type = 'Cosine'"
    assert MS.upgrade_table_sql(ONE, old_ddl) == [
        "ALTER TABLE images MODIFY SETTING float_vector_search_metric_type = 'Cosine'"
    ]
    assert MS.upgrade_table_sql(ONE, old_ddl + ", float_vector_search_metric_type = 'Cosine'") == []
    assert CH.upgrade_table_sql(ONE, old_ddl) == []


def test_knn_myscale_asks_for_brute_force_and_filters_in_prewhere() -> None:
    q = MS.knn("images", EXCLUDED_PARAM, 3, 9, layout=ONE)
    assert q.sql == (
        "SELECT id, url, caption, source, distance(vector, {v:Array(Float32)}) AS dist FROM images "
        "PREWHERE id NOT IN {ex:Array(String)} ORDER BY dist LIMIT {k:UInt32}"
    )
    assert q.settings == {"enable_brute_force_vector_search": 1} and q.params == {}
    assert "PREWHERE" not in MS.knn("images", EXCLUDED_PARAM, 0, 9, layout=ONE).sql
    ext = MS.knn("images", EXCLUDED_TABLE, 30_000, 9, layout=ONE).sql
    assert "PREWHERE id NOT IN vdx_excluded ORDER BY" in ext
    # On a cluster each shard needs the initiator's external table: GLOBAL.
    assert (
        "PREWHERE id GLOBAL NOT IN vdx_excluded"
        in MS.knn("images", EXCLUDED_TABLE, 30_000, 9, layout=CLUSTER).sql
    )


def test_knn_clickhouse_takes_the_nearest_then_drops_the_excluded() -> None:
    q = CH.knn("images", EXCLUDED_PARAM, 4, 9, layout=ONE)
    assert q.sql == (
        "SELECT id, url, caption, source, dist FROM (SELECT id, url, caption, source, "
        "1 - dotProduct(vector, {v:Array(Float32)}) AS dist FROM images ORDER BY dist LIMIT {m:UInt32}) "
        "WHERE id NOT IN {ex:Array(String)} ORDER BY dist LIMIT {k:UInt32}"
    )
    assert q.params == {"m": 13} and q.settings == {}
    cosine = (
        "SELECT id, url, caption, source, dist FROM (SELECT id, url, caption, source, "
        "cosineDistance(vector, {v:Array(Float32)}) AS dist FROM images ORDER BY dist LIMIT {m:UInt32}) "
        "WHERE id NOT IN {ex:Array(String)} ORDER BY dist LIMIT {k:UInt32}"
    )
    assert CH.knn("images", EXCLUDED_PARAM, 4, 9, layout=ONE, metric="cosine").sql == cosine
    indexed = CH.knn("images", EXCLUDED_PARAM, 4, 9, layout=ONE, indexed=True)
    assert indexed.sql == cosine  # the HNSW index serves cosineDistance only
    assert indexed.params == {"m": 26} and indexed.settings["vector_search_with_rescoring"] == 1
    ext = CH.knn("images", EXCLUDED_TABLE, 30_000, 9, layout=CLUSTER).sql
    assert "WHERE id NOT IN vdx_excluded ORDER BY" in ext  # filtered on the initiator: no GLOBAL needed


def test_index_ddl_myscale() -> None:
    assert MS.index_create_sql(ONE, 512) == [
        "ALTER TABLE images ADD VECTOR INDEX vidx vector TYPE MSTG('metric_type=Cosine')"
    ]
    assert MS.index_drop_sql(ONE) == "ALTER TABLE images DROP VECTOR INDEX vidx"
    assert MS.index_sql(ONE) == (
        "SELECT type, status, parts_with_vector_index, small_parts, total_parts, latest_fail_reason "
        "FROM system.vector_indices "
        "WHERE database = currentDatabase() AND table = {t:String} AND name = {i:String}"
    )


def test_index_ddl_clickhouse_builds_in_the_background() -> None:
    assert CH.index_create_sql(ONE, 512, HnswParams(m=16, ef_construction=128)) == [
        "ALTER TABLE images ADD INDEX IF NOT EXISTS vidx vector TYPE vector_similarity("
        "'hnsw', 'cosineDistance', 512, 'bf16', 16, 128)",
        "ALTER TABLE images MATERIALIZE INDEX vidx SETTINGS mutations_sync = 0",
    ]
    assert CH.index_drop_sql(ONE) == "ALTER TABLE images DROP INDEX IF EXISTS vidx"
    assert "system.data_skipping_indices" in CH.index_sql()
    # Only this index's own mutation counts (a row deletion is a mutation of the same table).
    assert "replaceRegexpAll(command, '[()`]', '') = {cmd:String}" in CH.mutation_sql(ONE)


def test_clickhouse_status_from_its_own_mutation() -> None:
    def status(mutations: list[tuple[int, int, str]]) -> IndexStatus:
        def q(sql: str, params: dict[str, object]) -> list[tuple[object, ...]]:
            if "data_skipping_indices" in sql:
                return [("vector_similarity", "vector_similarity('hnsw', 'cosineDistance', 16)")]
            if "system.parts" in sql:
                return [(4,)]
            assert params["cmd"] == "MATERIALIZE INDEX vidx"
            return list(mutations)

        return CH.index_status(q, ONE)

    assert (status([]).state, status([]).parts_built, status([]).parts_total) == ("Built", 4, 4)
    s = status([(0, 3, "")])
    assert (s.state, s.parts_built) == ("InProgress", 1) and s.detail.startswith("InProgress 1/4 parts")
    failed = status(
        [(0, 4, "Code: 117. DB::Exception: Array values have 4 elements, expects 8. (INCORRECT_DATA)")]
    )
    assert failed.state == "Error" and "expects 8" in failed.error and failed.detail.startswith("Error 0/4")
    assert status([(1, 0, "")]).built


def test_myscale_status_counts_parts_and_reports_the_failure() -> None:
    def status(rows: list[tuple[object, ...]]) -> IndexStatus:
        return MS.index_status(lambda sql, params: rows, ONE)

    assert not status([]).exists
    s = status([("MSTG", "InProgress", 1, 0, 3, "")])
    assert (s.state, s.parts_built, s.parts_total, s.kind) == ("InProgress", 1, 3, "MSTG")
    e = status([("MSTG", "Error", 1, 0, 3, "Code: 36. bad parameter")])
    assert e.state == "Error" and e.error == "Code: 36. bad parameter"
    # A replica still building keeps the whole index in progress.
    c = status([("MSTG", "Built", 2, 0, 2, ""), ("MSTG", "InProgress", 0, 1, 2, "")])
    assert (c.state, c.parts_built, c.parts_total) == ("InProgress", 3, 4)


def test_cluster_layout_creates_replicated_tables_behind_a_distributed_one() -> None:
    assert CH.create_table_sql(CLUSTER, 8) == [
        f"CREATE TABLE IF NOT EXISTS images_local ON CLUSTER vdx ({COLS.format(dim=8)}) "
        "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/vectors/images_local', '{replica}') ORDER BY id",
        "CREATE TABLE IF NOT EXISTS images ON CLUSTER vdx AS images_local "
        "ENGINE = Distributed(vdx, vectors, images_local, cityHash64(id))",
    ]
    assert MS.create_table_sql(CLUSTER, 8)[0].endswith(
        "ORDER BY id SETTINGS float_vector_search_metric_type = 'Cosine'"
    )
    assert CH.index_create_sql(CLUSTER, 8)[1] == (
        "ALTER TABLE images_local ON CLUSTER vdx MATERIALIZE INDEX vidx SETTINGS mutations_sync = 0"
    )
    assert MS.index_drop_sql(CLUSTER) == "ALTER TABLE images_local ON CLUSTER vdx DROP VECTOR INDEX vidx"
    assert "FROM clusterAllReplicas(vdx, system.mutations)" in CH.mutation_sql(CLUSTER)
    assert "FROM clusterAllReplicas(vdx, system.vector_indices)" in MS.index_sql(CLUSTER)
    assert CLUSTER.insert_settings == {"insert_distributed_sync": 1} and ONE.insert_settings == {}
    assert CLUSTER.drop_sql() == [
        "DROP TABLE IF EXISTS images ON CLUSTER vdx SYNC",
        "DROP TABLE IF EXISTS images_local ON CLUSTER vdx SYNC",
    ]


def test_values_are_never_part_of_the_sql_text() -> None:
    for dialect in (CH, MS):
        for indexed in (False, True):
            sql = dialect.knn("images", EXCLUDED_PARAM, 2, 9, layout=ONE, indexed=indexed).sql
            assert "{v:Array(Float32)}" in sql and "{ex:Array(String)}" in sql and "{k:UInt32}" in sql


def test_id_chunks_stay_under_the_byte_budget() -> None:
    ids = [f"photo-{i:06d}" for i in range(20_000)] + ["'quote'", "é" * 50, "back\\slash"]
    chunks = list(_chunks(ids, budget=4096))
    assert [i for c in chunks for i in c] == ids
    assert all(_param_bytes(c) <= 4096 for c in chunks) and len(chunks) > 1
    assert _param_bytes(["a'b"]) == len("['a\\'b']")  # quoted and escaped as the server reads it


def test_row_binary_encodes_lengths_as_leb128() -> None:
    assert _row_binary(["ab", ""]) == b"\x02ab\x00"
    assert _row_binary(["x" * 300])[:2] == bytes([0xAC, 0x02])


def test_short_reason_drops_traces_versions_and_vectors() -> None:
    vec = "[" + ", ".join(["0.0123"] * 512) + "]"
    msg = f"Code: 46. DB::Exception: Unknown function distance: while processing distance(vector, {vec}) (version 25.8.1)\n0. trace"
    out = short_reason(msg, 300)
    assert "0.0123, 0.0123" not in out and "version" not in out and "trace" not in out and len(out) <= 300


def test_dim_from_ddl_reads_the_constraint() -> None:
    ddl = (
        "CREATE TABLE default.images (`id` String, `vector` Array(Float32) CODEC(NONE), "
        "CONSTRAINT vec_len CHECK length(vector) = 512) ENGINE = MergeTree ORDER BY id"
    )
    assert dim_from_ddl(ddl) == 512
    assert dim_from_ddl("CREATE TABLE t (id String) ENGINE = Memory") is None


def test_parse_chdb_url() -> None:
    t = parse_db_url("chdb:///srv/vdx/data/chdb")
    assert (t.backend, t.path, t.safe_url) == ("chdb", "/srv/vdx/data/chdb", "chdb:///srv/vdx/data/chdb")


def test_parse_http_url_keeps_the_password_out_of_the_safe_url() -> None:
    t = parse_db_url("http://alice:p%40ss%3Aw0rd@db.example.org:8124/vectors")
    assert (t.backend, t.host, t.port, t.username, t.password, t.database, t.secure) == (
        "http",
        "db.example.org",
        8124,
        "alice",
        "p@ss:w0rd",
        "vectors",
        False,
    )
    assert t.safe_url == "http://alice@db.example.org:8124/vectors"
    assert "w0rd" not in t.safe_url


def test_parse_https_defaults() -> None:
    t = parse_db_url("https://msc-1234.aws.myscale.com")
    assert (t.port, t.username, t.password, t.database, t.secure) == (8443, "default", "", "default", True)
    assert parse_db_url("http://localhost").port == 8123


@pytest.mark.parametrize(
    "url",
    ["chdb://relative/path", "ftp://host/db", "http://", "http://host:99999/db", "http://host/db;drop"],
)
def test_bad_urls_are_clear_errors(url: str) -> None:
    with pytest.raises(StoreError):
        parse_db_url(url)


def test_matches_score_every_row_in_one_scan_with_the_weight_as_a_parameter() -> None:
    head = "SELECT id, url, caption, source, score, count() OVER () AS total FROM (SELECT id, url, caption, source, "
    tail = (
        "FROM images) WHERE score > {t:Float64} AND id NOT IN {ex:Array(String)} "
        "ORDER BY score DESC, id LIMIT {n:UInt64} OFFSET {o:UInt64}"
    )
    assert CH.matches("images", EXCLUDED_PARAM, layout=ONE) == (
        head + "dotProduct(vector, {w:Array(Float32)}) AS score " + tail
    )
    assert MS.matches("images", EXCLUDED_PARAM, layout=ONE) == (
        head + "arraySum(arrayMap((x, y) -> x * y, vector, {w:Array(Float32)})) AS score " + tail
    )
    # Only the images added in a span of seconds (alerts); on a cluster a long exclusion list travels as
    # an external table, which every shard must receive.
    added = CH.matches("images", EXCLUDED_TABLE, layout=CLUSTER, added=True)
    assert "FROM images WHERE added_at BETWEEN toDateTime({a0:UInt32}) AND toDateTime({a1:UInt32})) " in added
    assert "id GLOBAL NOT IN vdx_excluded" in added
