"""Golden SQL of both dialects, and ``VDX_DB_URL`` parsing (no database needed)."""

from __future__ import annotations

import pytest

from core.errors import StoreError
from core.store import (
    HnswParams,
    create_table_sql,
    dim_from_ddl,
    index_create_sql,
    index_drop_sql,
    index_status_sql,
    knn_sql,
    matches_sql,
    parse_db_url,
)


def test_create_table_clickhouse() -> None:
    assert create_table_sql("clickhouse", "images", 512) == (
        "CREATE TABLE IF NOT EXISTS images (id String, url String, caption String, "
        "source LowCardinality(String), added_at DateTime DEFAULT now(), vector Array(Float32) CODEC(NONE), "
        "CONSTRAINT vec_len CHECK length(vector) = 512) ENGINE = MergeTree ORDER BY id"
    )


def test_create_table_myscale_says_cosine() -> None:
    assert create_table_sql("myscale", "photos", 768) == (
        "CREATE TABLE IF NOT EXISTS photos (id String, url String, caption String, "
        "source LowCardinality(String), added_at DateTime DEFAULT now(), vector Array(Float32) CODEC(NONE), "
        "CONSTRAINT vec_len CHECK length(vector) = 768) ENGINE = MergeTree ORDER BY id "
        "SETTINGS vector_search_metric_type = 'Cosine'"
    )


def test_knn_myscale() -> None:
    assert knn_sql("myscale", "images") == (
        "SELECT id, url, caption, source, distance(vector, {v:Array(Float32)}) AS dist FROM images "
        "WHERE id NOT IN {ex:Array(String)} ORDER BY dist LIMIT {k:UInt32}"
    )


def test_knn_clickhouse_takes_the_nearest_then_drops_the_excluded() -> None:
    assert knn_sql("clickhouse", "images") == (
        "SELECT id, url, caption, source, dist FROM (SELECT id, url, caption, source, "
        "1 - dotProduct(vector, {v:Array(Float32)}) AS dist FROM images ORDER BY dist LIMIT {m:UInt32}) "
        "WHERE id NOT IN {ex:Array(String)} ORDER BY dist LIMIT {k:UInt32}"
    )
    cosine = (
        "SELECT id, url, caption, source, dist FROM (SELECT id, url, caption, source, "
        "cosineDistance(vector, {v:Array(Float32)}) AS dist FROM images ORDER BY dist LIMIT {m:UInt32}) "
        "WHERE id NOT IN {ex:Array(String)} ORDER BY dist LIMIT {k:UInt32}"
    )
    assert knn_sql("clickhouse", "images", metric="cosine") == cosine
    assert (
        knn_sql("clickhouse", "images", indexed=True) == cosine
    )  # the HNSW index serves cosineDistance only


def test_index_ddl_myscale() -> None:
    assert index_create_sql("myscale", "images", 512) == [
        "ALTER TABLE images ADD VECTOR INDEX vidx vector TYPE MSTG('metric_type=Cosine')"
    ]
    assert index_drop_sql("myscale", "images") == "ALTER TABLE images DROP VECTOR INDEX vidx"
    assert index_status_sql("myscale") == (
        "SELECT type, status FROM system.vector_indices "
        "WHERE database = currentDatabase() AND table = {t:String} AND name = {i:String}"
    )


def test_index_ddl_clickhouse() -> None:
    assert index_create_sql("clickhouse", "images", 512, HnswParams(m=16, ef_construction=128)) == [
        "ALTER TABLE images ADD INDEX IF NOT EXISTS vidx vector TYPE vector_similarity("
        "'hnsw', 'cosineDistance', 512, 'bf16', 16, 128)",
        "ALTER TABLE images MATERIALIZE INDEX vidx SETTINGS mutations_sync = 2",
    ]
    assert index_drop_sql("clickhouse", "images") == "ALTER TABLE images DROP INDEX IF EXISTS vidx"
    assert "system.data_skipping_indices" in index_status_sql("clickhouse")


def test_values_are_never_part_of_the_sql_text() -> None:
    for dialect in ("clickhouse", "myscale"):
        for indexed in (False, True):
            sql = knn_sql(dialect, "images", indexed)  # type: ignore[arg-type]
            assert "{v:Array(Float32)}" in sql and "{ex:Array(String)}" in sql and "{k:UInt32}" in sql


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
    tail = (
        "FROM images) WHERE score > {t:Float64} AND id NOT IN {ex:Array(String)} "
        "ORDER BY score DESC, id LIMIT {n:UInt64} OFFSET {o:UInt64}"
    )
    head = "SELECT id, url, caption, source, score, count() OVER () AS total FROM (SELECT id, url, caption, source, "
    assert (
        matches_sql("clickhouse", "images")
        == head + "dotProduct(vector, {w:Array(Float32)}) AS score " + tail
    )
    assert matches_sql("myscale", "images") == (
        head + "arraySum(arrayMap((x, y) -> x * y, vector, {w:Array(Float32)})) AS score " + tail
    )
