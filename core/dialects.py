"""One object per database engine: the SQL, settings and index bookkeeping where ClickHouse and MyScale differ.

The store never branches on the engine; it asks its :class:`Dialect`. Where the rows live (one table, or
replicated local tables behind a ``Distributed`` table on a cluster) is a :class:`TableLayout`, shared by
both dialects. Identifiers come from validated settings; every value is a query parameter.

Sources for the MyScale rules (MyScaleDB, github.com/myscale/MyScaleDB):
- ``enable_brute_force_vector_search`` is false by default (``src/Core/Settings.h``): parts without a built
  vector index return no rows from ``distance() … ORDER BY … LIMIT`` unless a query turns it on.
- The brute-force metric is the table setting ``float_vector_search_metric_type`` (default ``L2``); the
  older ``vector_search_metric_type`` is "Obsolete setting, does nothing" in
  ``src/Storages/MergeTree/MergeTreeSettings.h``. An index's own ``metric_type`` wins on indexed parts.
- ``system.vector_indices`` (``src/Storages/System/StorageSystemVectorIndices.cpp``) has ``status``
  (``Built``, ``InProgress``, ``Error``), ``total_parts``, ``parts_with_vector_index``, ``small_parts``
  and ``latest_fail_reason``.
- Filters go in ``PREWHERE`` so the vector scan skips them (MyScale's own integrations write it; the
  optimizer's ``optimize_move_to_prewhere_for_vector_search`` is a setting that can be off).

ClickHouse (clickhouse.com/docs): ``MATERIALIZE INDEX`` is a mutation that runs in the background when
``mutations_sync = 0`` and is tracked in ``system.mutations`` (``is_done``, ``parts_to_do``,
``latest_fail_reason``; a failing mutation is retried and never becomes done).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from core.records import IndexStatus

INDEX_NAME = "vidx"
COLUMNS = "id, url, caption, source"
# Knn exclusion lists too big for one HTTP parameter travel as external data under this table name.
EXCLUDED_TABLE = "vdx_excluded"
EXCLUDED_PARAM = "{ex:Array(String)}"

Metric = Literal["dot", "cosine"]
QueryFn = Callable[[str, dict[str, Any]], Sequence[Sequence[Any]]]


@dataclass(frozen=True)
class HnswParams:
    """ClickHouse ``vector_similarity`` HNSW parameters (see bench/results/knn.md for the choice)."""

    m: int = 16
    ef_construction: int = 128
    quantization: str = "bf16"
    ef_search: int = 256  # ClickHouse's default hnsw_candidate_list_size_for_search


@dataclass(frozen=True)
class TableLayout:
    """Where the image rows live: one ``MergeTree`` table, or on a cluster (``VDX_DB_CLUSTER``) one
    ``ReplicatedMergeTree`` table per replica (``<table>_local``) behind a ``Distributed`` table ``<table>``
    that every read and write goes through."""

    table: str
    database: str = "default"
    cluster: str = ""

    @property
    def data_table(self) -> str:
        """The table that holds the parts, the constraint and the vector index."""
        return f"{self.table}_local" if self.cluster else self.table

    @property
    def on_cluster(self) -> str:
        """`` ON CLUSTER name`` for DDL, or nothing."""
        return f" ON CLUSTER {self.cluster}" if self.cluster else ""

    @property
    def engine(self) -> str:
        """The data table's engine; ``{shard}`` and ``{replica}`` are the servers' own macros."""
        if not self.cluster:
            return "MergeTree"
        return f"ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{self.database}/{self.data_table}', '{{replica}}')"

    def system(self, name: str) -> str:
        """A system table as seen from every replica of the cluster, or from this server."""
        return f"clusterAllReplicas({self.cluster}, system.{name})" if self.cluster else f"system.{name}"

    def not_in(self, external: bool) -> str:
        """``NOT IN``; ``GLOBAL NOT IN`` where a shard must receive the initiator's external table."""
        return "GLOBAL NOT IN" if self.cluster and external else "NOT IN"

    @property
    def insert_settings(self) -> dict[str, Any]:
        """A ``Distributed`` insert waits until the shards have the rows, so the next read sees them."""
        return {"insert_distributed_sync": 1} if self.cluster else {}

    def create_sql(self, columns: str, settings: str = "", order_by: str = "id") -> list[str]:
        """``CREATE TABLE IF NOT EXISTS`` for the data table, and the ``Distributed`` table on a cluster."""
        stmts = [
            f"CREATE TABLE IF NOT EXISTS {self.data_table}{self.on_cluster} ({columns}) "
            f"ENGINE = {self.engine} ORDER BY {order_by}{settings}"
        ]
        if self.cluster:
            stmts.append(
                f"CREATE TABLE IF NOT EXISTS {self.table}{self.on_cluster} AS {self.data_table} "
                f"ENGINE = Distributed({self.cluster}, {self.database}, {self.data_table}, cityHash64(id))"
            )
        return stmts

    def drop_sql(self) -> list[str]:
        """Statements that drop every table of the layout (tests and clean-up)."""
        tables = [self.table, self.data_table] if self.cluster else [self.table]
        return [f"DROP TABLE IF EXISTS {t}{self.on_cluster} SYNC" for t in tables]

    # -- rows removed, the collection's model, a table swapped in (the same SQL on both engines) ----

    def delete_sql(self) -> str:
        """Remove the rows whose id is in ``{ids}``: a lightweight ``DELETE`` on the data table(s)."""
        return f"DELETE FROM {self.data_table}{self.on_cluster} WHERE id IN {{ids:Array(String)}}"

    @property
    def model(self) -> TableLayout:
        """The layout of the table that records the collection's model, beside the vectors."""
        return TableLayout(f"{self.table}__model", self.database, self.cluster)

    def create_model_sql(self) -> list[str]:
        """Create the model record table (one row per recorded model; the latest is the record)."""
        return self.model.create_sql(
            "name String, dim UInt32, fingerprint String, recorded_at DateTime64(6) DEFAULT now64(6)",
            order_by="recorded_at",
        )

    def read_model_sql(self) -> str:
        """The latest model record as ``name, dim, fingerprint``."""
        return f"SELECT name, dim, fingerprint FROM {self.model.table} ORDER BY recorded_at DESC LIMIT 1"

    def insert_model_sql(self) -> str:
        """Record ``{n}``, ``{d}``, ``{f}`` as the latest model."""
        return (
            f"INSERT INTO {self.model.table} (name, dim, fingerprint) "
            "VALUES ({n:String}, {d:UInt32}, {f:String})"
        )

    def swap_sql(self, replacement: TableLayout) -> list[str]:
        """Put ``replacement``'s table in this one's place in one ``RENAME`` and drop the old one."""
        if self.cluster:
            raise ValueError("swapping tables on a cluster is not supported")
        old = f"{self.table}__replaced"
        return [
            f"DROP TABLE IF EXISTS {old}",
            f"RENAME TABLE {self.table} TO {old}, {replacement.table} TO {self.table}",
            f"DROP TABLE IF EXISTS {old}",
        ]


def table_columns(dim: int) -> str:
    """The image table's columns; the constraint records the vector size."""
    return (
        "id String, url String, caption String, source LowCardinality(String), "
        "added_at DateTime DEFAULT now(), vector Array(Float32) CODEC(NONE), "
        f"CONSTRAINT vec_len CHECK length(vector) = {int(dim)}"
    )


@dataclass(frozen=True)
class KnnQuery:
    """A nearest-neighbour query: SQL over ``{v}``, ``{k}`` and the exclusions, its extra parameters and settings."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


class Dialect(ABC):
    """What differs between engines. Pure SQL builders, plus :meth:`probe` and :meth:`index_status`, which
    run the queries they build through the store's ``q(sql, params)``."""

    name: ClassVar[str]
    index_kind: ClassVar[str]

    def probe(self, q: QueryFn) -> None:  # noqa: B027 - most dialects have nothing to learn
        """Learn what this server supports (called once when the store opens)."""

    @abstractmethod
    def create_table_sql(self, layout: TableLayout, dim: int) -> list[str]:
        """Statements that create the image table(s)."""

    def upgrade_table_sql(self, layout: TableLayout, ddl: str) -> list[str]:
        """Statements that bring a table made by an older vdx up to date (``ddl`` is its CREATE text)."""
        return []

    @abstractmethod
    def knn(
        self,
        source: str,
        excluded: str,
        n_excluded: int,
        k: int,
        *,
        layout: TableLayout,
        indexed: bool = False,
        metric: Metric = "dot",
        hnsw: HnswParams | None = None,
    ) -> KnnQuery:
        """Nearest rows of ``source`` to ``{v}``, skipping ids in ``excluded`` (the parameter
        ``{ex:Array(String)}`` or the external table ``vdx_excluded``), as ``id, url, caption, source, dist``."""

    # Cosine score of unit vectors with the weight ``{w}`` (each engine's fastest exact expression).
    score: ClassVar[str] = "dotProduct(vector, {w:Array(Float32)})"

    def matches(self, source: str, excluded: str, *, layout: TableLayout, added: bool = False) -> str:
        """One page of the rows scoring above ``{t}``, skipping ids in ``excluded``, best first (ties by id,
        so a page boundary is the same on every call), in one scan: ``id, url, caption, source, score,
        total``, where ``count() OVER ()`` counts every accepted row before ``LIMIT {n} OFFSET {o}``.
        ``added`` keeps only rows added from ``{a0}`` to ``{a1}`` (Unix seconds, inclusive)."""
        where = " WHERE added_at BETWEEN toDateTime({a0:UInt32}) AND toDateTime({a1:UInt32})" if added else ""
        return (
            f"SELECT {COLUMNS}, score, count() OVER () AS total "
            f"FROM (SELECT {COLUMNS}, {self.score} AS score FROM {source}{where}) "
            f"WHERE score > {{t:Float64}} AND id {layout.not_in(excluded == EXCLUDED_TABLE)} {excluded} "
            "ORDER BY score DESC, id LIMIT {n:UInt64} OFFSET {o:UInt64}"
        )

    @abstractmethod
    def index_create_sql(self, layout: TableLayout, dim: int, hnsw: HnswParams | None = None) -> list[str]:
        """Statements that add the vector index and start building it; none of them waits for the build."""

    @abstractmethod
    def index_drop_sql(self, layout: TableLayout) -> str:
        """Statement that drops the vector index."""

    @abstractmethod
    def index_status(self, q: QueryFn, layout: TableLayout) -> IndexStatus:
        """Whether the index exists, how many parts have it, and the last build failure."""


def _status(kind: str, state: str, built: int, total: int, error: str, extra: str = "") -> IndexStatus:
    detail = (
        f"{state} {built}/{total} parts" + (f": {error}" if error else "") + (f"; {extra}" if extra else "")
    )
    return IndexStatus(
        exists=True, kind=kind, detail=detail, state=state, parts_built=built, parts_total=total, error=error
    )


def short_reason(text: str, limit: int = 200) -> str:
    """One line of a server's message, without stack traces, version tails or long number lists."""
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    line = re.sub(r"\[[-+0-9.eE,\s]{40,}\]", "[…]", line)
    line = re.sub(r"\s*\((?:version|for url) [^)]*\)", "", line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


class ClickHouseDialect(Dialect):
    """Upstream ClickHouse and chDB: ``cosineDistance``, a ``vector_similarity`` HNSW skip index."""

    name = "clickhouse"
    index_kind = "hnsw"

    def create_table_sql(self, layout: TableLayout, dim: int) -> list[str]:
        """``CREATE TABLE IF NOT EXISTS`` (and the ``Distributed`` table on a cluster)."""
        return layout.create_sql(table_columns(dim))

    def knn(
        self,
        source: str,
        excluded: str,
        n_excluded: int,
        k: int,
        *,
        layout: TableLayout,
        indexed: bool = False,
        metric: Metric = "dot",
        hnsw: HnswParams | None = None,
    ) -> KnnQuery:
        """The nearest ``m`` rows first, the excluded ids filtered outside.

        A WHERE inside makes the HNSW index post-filter its m hits (it can return nothing) and slows a
        brute-force scan ~2x (bench/knn.py). With m >= k + |excluded| a scan stays exact.
        """
        if indexed or metric == "cosine":
            dist = "cosineDistance(vector, {v:Array(Float32)})"  # the index serves only its own metric
        else:
            dist = (
                "1 - dotProduct(vector, {v:Array(Float32)})"  # unit vectors: the same number, a faster scan
            )
        sql = (
            f"SELECT {COLUMNS}, dist FROM (SELECT {COLUMNS}, {dist} AS dist FROM {source} "
            f"ORDER BY dist LIMIT {{m:UInt32}}) WHERE id {layout.not_in(False)} {excluded} "
            "ORDER BY dist LIMIT {k:UInt32}"
        )
        m = int(k) + int(n_excluded)
        if not indexed:
            return KnnQuery(sql, {"m": m})
        # Excluded ids are mostly the query's nearest, so the k wanted rows sit at the far end of the
        # index's answer, where HNSW recall is lowest: fetch twice as many as strictly needed.
        m *= 2
        p = hnsw or HnswParams()
        settings = {
            "hnsw_candidate_list_size_for_search": max(p.ef_search, m),
            "max_limit_for_vector_search_queries": max(1000, m),
            # Re-rank the index's candidates by their exact Float32 distance (the index holds bf16):
            # the k rows wanted lie where bf16 rounding reorders them most.
            "vector_search_with_rescoring": 1,
        }
        return KnnQuery(sql, {"m": m}, settings)

    def index_create_sql(self, layout: TableLayout, dim: int, hnsw: HnswParams | None = None) -> list[str]:
        """``ADD INDEX`` then ``MATERIALIZE INDEX`` as a background mutation (``mutations_sync = 0``)."""
        p = hnsw or HnswParams()
        t = f"{layout.data_table}{layout.on_cluster}"
        return [
            f"ALTER TABLE {t} ADD INDEX IF NOT EXISTS {INDEX_NAME} vector TYPE vector_similarity("
            f"'hnsw', 'cosineDistance', {int(dim)}, '{p.quantization}', {int(p.m)}, {int(p.ef_construction)})",
            f"ALTER TABLE {t} MATERIALIZE INDEX {INDEX_NAME} SETTINGS mutations_sync = 0",
        ]

    def index_drop_sql(self, layout: TableLayout) -> str:
        """``DROP INDEX IF EXISTS``."""
        return f"ALTER TABLE {layout.data_table}{layout.on_cluster} DROP INDEX IF EXISTS {INDEX_NAME}"

    def index_sql(self) -> str:
        """The index's definition, no row when there is none."""
        return (
            "SELECT type, type_full FROM system.data_skipping_indices "
            "WHERE database = currentDatabase() AND table = {t:String} AND name = {i:String}"
        )

    def mutation_sql(self, layout: TableLayout) -> str:
        """The newest ``MATERIALIZE INDEX vidx`` mutation per replica; other mutations of the table do not count."""
        return (
            "SELECT is_done, parts_to_do, latest_fail_reason "
            f"FROM {layout.system('mutations')} WHERE database = currentDatabase() AND table = {{t:String}} "
            "AND replaceRegexpAll(command, '[()`]', '') = {cmd:String} "
            "ORDER BY create_time DESC LIMIT 1 BY hostName()"
        )

    def parts_sql(self, layout: TableLayout) -> str:
        """Active parts of the data table, on every replica."""
        return (
            f"SELECT count() FROM {layout.system('parts')} "
            "WHERE database = currentDatabase() AND table = {t:String} AND active"
        )

    def index_status(self, q: QueryFn, layout: TableLayout) -> IndexStatus:
        """Built, InProgress or Error from this index's own mutation, with parts built of all parts."""
        t = layout.data_table
        rows = q(self.index_sql(), {"t": t, "i": INDEX_NAME})
        if not rows:
            return IndexStatus(exists=False)
        kind = "hnsw" if rows[0][0] == "vector_similarity" else str(rows[0][0])
        total = int(q(self.parts_sql(layout), {"t": t})[0][0])
        muts = q(self.mutation_sql(layout), {"t": t, "cmd": f"MATERIALIZE INDEX {INDEX_NAME}"})
        to_do = sum(int(r[1]) for r in muts if not r[0])
        error = next((short_reason(r[2]) for r in muts if not r[0] and r[2]), "")
        state = "Error" if error else ("InProgress" if to_do else "Built")
        return _status(kind, state, max(0, total - to_do), total, error, str(rows[0][1]))


class MyScaleDialect(Dialect):
    """MyScale: ``distance()`` with an MSTG vector index, brute force asked for per query, ``PREWHERE`` filters."""

    name = "myscale"
    index_kind = "MSTG"
    # Scoring every row is not a vector search (distance() wants ORDER BY ... LIMIT on itself and cannot
    # be filtered on); arrayMap and arraySum exist in every ClickHouse release MyScale is built on.
    score = "arraySum(arrayMap((x, y) -> x * y, vector, {w:Array(Float32)}))"
    CURRENT_METRIC_SETTING = "float_vector_search_metric_type"
    OLD_METRIC_SETTING = "vector_search_metric_type"

    def __init__(self, metric_setting: str = CURRENT_METRIC_SETTING) -> None:
        # The table setting that sets the brute-force metric on this server ("" when it has none).
        self.metric_setting = metric_setting

    def probe(self, q: QueryFn) -> None:
        """Which table setting sets the brute-force metric: current MyScale marks the old one obsolete."""
        rows = q(
            "SELECT name, description FROM system.merge_tree_settings WHERE name IN {names:Array(String)}",
            {"names": [self.CURRENT_METRIC_SETTING, self.OLD_METRIC_SETTING]},
        )
        found = {str(r[0]): str(r[1]) for r in rows}
        if self.CURRENT_METRIC_SETTING in found:
            self.metric_setting = self.CURRENT_METRIC_SETTING
        elif self.OLD_METRIC_SETTING in found and "obsolete" not in found[self.OLD_METRIC_SETTING].lower():
            self.metric_setting = self.OLD_METRIC_SETTING
        else:
            self.metric_setting = ""

    def _metric_clause(self) -> str:
        return f" SETTINGS {self.metric_setting} = 'Cosine'" if self.metric_setting else ""

    def create_table_sql(self, layout: TableLayout, dim: int) -> list[str]:
        """The table, with the brute-force metric set to Cosine so search agrees before and after the index."""
        return layout.create_sql(table_columns(dim), self._metric_clause())

    def upgrade_table_sql(self, layout: TableLayout, ddl: str) -> list[str]:
        """A table made with only the obsolete setting gets the current one (``MODIFY SETTING``)."""
        if not self.metric_setting or re.search(rf"\b{self.metric_setting}\s*=\s*'Cosine'", ddl, re.I):
            return []
        return [
            f"ALTER TABLE {layout.data_table}{layout.on_cluster} MODIFY SETTING {self.metric_setting} = 'Cosine'"
        ]

    def knn(
        self,
        source: str,
        excluded: str,
        n_excluded: int,
        k: int,
        *,
        layout: TableLayout,
        indexed: bool = False,
        metric: Metric = "dot",
        hnsw: HnswParams | None = None,
    ) -> KnnQuery:
        """``distance()`` over indexed parts and, by brute force, the parts not indexed yet."""
        where = f"PREWHERE id {layout.not_in(excluded == EXCLUDED_TABLE)} {excluded} " if n_excluded else ""
        sql = (
            f"SELECT {COLUMNS}, distance(vector, {{v:Array(Float32)}}) AS dist FROM {source} "
            f"{where}ORDER BY dist LIMIT {{k:UInt32}}"
        )
        return KnnQuery(sql, {}, {"enable_brute_force_vector_search": 1})

    def index_create_sql(self, layout: TableLayout, dim: int, hnsw: HnswParams | None = None) -> list[str]:
        """``ADD VECTOR INDEX … MSTG`` with the Cosine metric; MyScale builds it in the background."""
        return [
            f"ALTER TABLE {layout.data_table}{layout.on_cluster} ADD VECTOR INDEX {INDEX_NAME} vector "
            "TYPE MSTG('metric_type=Cosine')"
        ]

    def index_drop_sql(self, layout: TableLayout) -> str:
        """``DROP VECTOR INDEX``."""
        return f"ALTER TABLE {layout.data_table}{layout.on_cluster} DROP VECTOR INDEX {INDEX_NAME}"

    def index_sql(self, layout: TableLayout) -> str:
        """One row per replica from ``system.vector_indices``."""
        return (
            "SELECT type, status, parts_with_vector_index, small_parts, total_parts, latest_fail_reason "
            f"FROM {layout.system('vector_indices')} "
            "WHERE database = currentDatabase() AND table = {t:String} AND name = {i:String}"
        )

    def index_status(self, q: QueryFn, layout: TableLayout) -> IndexStatus:
        """``system.vector_indices``: parts with the index (small parts need none) of all parts."""
        rows = q(self.index_sql(layout), {"t": layout.data_table, "i": INDEX_NAME})
        if not rows:
            return IndexStatus(exists=False)
        states = {str(r[1]) for r in rows}
        error = next((short_reason(r[5]) for r in rows if r[5]), "")
        state = "Error" if "Error" in states else ("Built" if states == {"Built"} else "InProgress")
        built = sum(int(r[2]) + int(r[3]) for r in rows)
        total = sum(int(r[4]) for r in rows)
        return _status(str(rows[0][0]), state, min(built, total), total, error if state == "Error" else "")


DIALECTS: dict[str, type[Dialect]] = {"clickhouse": ClickHouseDialect, "myscale": MyScaleDialect}


def dialect_for(name: str) -> Dialect:
    """A fresh dialect object for ``clickhouse`` or ``myscale``."""
    return DIALECTS[name]()
