"""Vector store: the ``VectorStore`` protocol and its ClickHouse/MyScale implementation.

One clickhouse-connect client talks to either an embedded chDB directory (``chdb:///abs/path``) or a
server over HTTP (``http(s)://user:password@host:port/database``). The SQL differs by dialect only in
the distance function and the vector index DDL; the builders below are pure so they can be tested
as golden strings.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import clickhouse_connect
import numpy as np
import pyarrow as pa
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, Error, OperationalError

from core.config import Settings
from core.errors import DatabaseLocked, DimensionMismatch, StoreError, StoreUnavailable
from core.records import Hit, ImageBatch, IndexStatus, ModelIdentity, StoreInfo

SqlDialect = Literal["clickhouse", "myscale"]
T = TypeVar("T")

INDEX_NAME = "vidx"
# Large id lists travel as one Array(String) parameter; chunks keep a request well under server limits.
ID_CHUNK = 10_000
# The in-memory copy of a 512-d table takes ~2 KiB a row (2 GiB at 1M rows).
HOT_COPY_MAX_ROWS = 2_000_000
UNKNOWN_TABLE = 60
UNKNOWN_DATABASE = 81


class VectorStore(Protocol):
    """What the rest of vdx needs from a vector database. Every method is blocking and thread-safe."""

    dim: int

    def ensure_schema(self) -> None:
        """Create the image table if it does not exist (idempotent)."""

    def insert(self, batch: ImageBatch) -> int:
        """Insert rows in columnar form; returns the number inserted."""

    def knn(self, vector: np.ndarray, k: int, exclude_ids: Iterable[str] = ()) -> list[Hit]:
        """The ``k`` nearest images by cosine distance, nearest first, skipping ``exclude_ids``."""

    def vectors(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Stored vectors of ``ids`` (those that exist, in the order given) as float32 ``(n, dim)``."""

    def get(self, ids: Sequence[str]) -> list[Hit]:
        """Rows of ``ids`` (those that exist, in the order given) with distance 0."""

    def ids_present(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are stored already."""

    def count(self) -> int:
        """Number of stored images."""

    def delete(self, ids: Sequence[str]) -> int:
        """Remove the rows of ``ids``; returns how many of them were stored."""

    def urls_with_prefix(self, prefix: str) -> list[tuple[str, str]]:
        """``(id, url)`` of every row whose url starts with ``prefix`` (a folder's ``file://`` URI)."""

    def all_rows(self) -> list[Hit]:
        """Every row (without vectors), ordered by id."""

    def sibling(self, suffix: str) -> VectorStore:
        """A store on the table ``<table><suffix>`` over the same connection."""

    def replace_with(self, other: VectorStore) -> None:
        """Make ``other``'s rows this table's rows; ``other``'s table is gone after."""

    def drop(self) -> None:
        """Drop this table and its model record."""

    def model(self) -> ModelIdentity | None:
        """The model recorded with the vectors, or None for a collection that has no record."""

    def record_model(self, identity: ModelIdentity) -> None:
        """Record ``identity`` as the model that embedded the collection."""

    def index_create(self) -> IndexStatus:
        """Build the vector index for the dialect (HNSW or MSTG)."""

    def index_status(self) -> IndexStatus:
        """Whether a vector index exists, and its state."""

    def index_drop(self) -> IndexStatus:
        """Drop the vector index if there is one."""

    def info(self) -> StoreInfo:
        """Backend, dialect, table, row count, dimension and index status."""

    def close(self) -> None:
        """Release the connection (and the embedded database's lock)."""


# --------------------------------------------------------------------------------------------------
# Connection targets


@dataclass(frozen=True)
class DbTarget:
    """A parsed ``VDX_DB_URL``: embedded path or server address, with the password kept apart."""

    backend: Literal["chdb", "http"]
    path: str = ""  # chdb only
    host: str = ""
    port: int = 0
    username: str = "default"
    password: str = ""
    database: str = "default"
    secure: bool = False

    @property
    def safe_url(self) -> str:
        """The URL without the password, for messages and ``vdx info``."""
        if self.backend == "chdb":
            return f"chdb://{self.path}"
        scheme = "https" if self.secure else "http"
        return f"{scheme}://{self.username}@{self.host}:{self.port}/{self.database}"


def parse_db_url(url: str) -> DbTarget:
    """Split ``chdb:///abs/path`` or ``http(s)://user:password@host:port/database`` into a target."""
    if url.startswith("chdb://"):
        path = url[len("chdb://") :]
        if not path.startswith("/"):
            raise StoreError(
                f"an embedded database URL needs an absolute path (chdb:///abs/path), got {url!r}"
            )
        return DbTarget(backend="chdb", path=path)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreError(
            "VDX_DB_URL must look like chdb:///abs/path or http(s)://user:password@host:port/database"
        )
    secure = parts.scheme == "https"
    try:
        port = parts.port or (8443 if secure else 8123)
    except ValueError:
        raise StoreError(f"VDX_DB_URL has an invalid port: {parts.netloc.rpartition('@')[2]!r}") from None
    database = parts.path.strip("/") or "default"
    if not database.replace("_", "").isalnum():
        raise StoreError(f"VDX_DB_URL names an invalid database {database!r}")
    return DbTarget(
        backend="http",
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else "default",
        password=unquote(parts.password) if parts.password else "",
        database=database,
        secure=secure,
    )


# --------------------------------------------------------------------------------------------------
# SQL, by dialect. Identifiers (table, index name) come from validated settings; values are parameters.


@dataclass(frozen=True)
class HnswParams:
    """ClickHouse ``vector_similarity`` HNSW parameters (see bench/results/knn.md for the choice)."""

    m: int = 16
    ef_construction: int = 128
    quantization: str = "bf16"
    ef_search: int = 256  # ClickHouse's default hnsw_candidate_list_size_for_search


def create_table_sql(dialect: SqlDialect, table: str, dim: int) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for the image table."""
    # MyScale's brute-force distance() uses the table's metric (L2 unless told), so say Cosine.
    tail = " SETTINGS vector_search_metric_type = 'Cosine'" if dialect == "myscale" else ""
    return (
        f"CREATE TABLE IF NOT EXISTS {table} ("
        "id String, url String, caption String, source LowCardinality(String), "
        "added_at DateTime DEFAULT now(), vector Array(Float32) CODEC(NONE), "
        f"CONSTRAINT vec_len CHECK length(vector) = {int(dim)}"
        f") ENGINE = MergeTree ORDER BY id{tail}"
    )


def knn_sql(
    dialect: SqlDialect, table: str, indexed: bool = False, metric: Literal["dot", "cosine"] = "dot"
) -> str:
    """Nearest rows to ``{v}`` that are not in ``{ex}``, as ``id, url, caption, source, dist``."""
    cols = "id, url, caption, source"
    if dialect == "myscale":
        # MyScale filters inside its vector search, with or without an MSTG index.
        return (
            f"SELECT {cols}, distance(vector, {{v:Array(Float32)}}) AS dist FROM {table} "
            "WHERE id NOT IN {ex:Array(String)} ORDER BY dist LIMIT {k:UInt32}"
        )
    # The nearest m rows first, the excluded ids filtered outside: a WHERE inside makes the HNSW index
    # post-filter its m hits (it can return nothing), and slows a brute-force scan ~2x (bench/knn.py).
    # With m >= k + |excluded| a scan stays exact.
    if indexed or metric == "cosine":
        dist = "cosineDistance(vector, {v:Array(Float32)})"  # the index serves only its own metric
    else:
        dist = "1 - dotProduct(vector, {v:Array(Float32)})"  # unit vectors: the same number, a faster scan
    return (
        f"SELECT {cols}, dist FROM (SELECT {cols}, {dist} AS dist FROM {table} ORDER BY dist LIMIT {{m:UInt32}}) "
        "WHERE id NOT IN {ex:Array(String)} ORDER BY dist LIMIT {k:UInt32}"
    )


def index_create_sql(
    dialect: SqlDialect, table: str, dim: int, params: HnswParams | None = None
) -> list[str]:
    """Statements that add and build the vector index."""
    if dialect == "myscale":
        return [f"ALTER TABLE {table} ADD VECTOR INDEX {INDEX_NAME} vector TYPE MSTG('metric_type=Cosine')"]
    p = params or HnswParams()
    return [
        f"ALTER TABLE {table} ADD INDEX IF NOT EXISTS {INDEX_NAME} vector TYPE vector_similarity("
        f"'hnsw', 'cosineDistance', {int(dim)}, '{p.quantization}', {int(p.m)}, {int(p.ef_construction)})",
        f"ALTER TABLE {table} MATERIALIZE INDEX {INDEX_NAME} SETTINGS mutations_sync = 2",
    ]


def index_drop_sql(dialect: SqlDialect, table: str) -> str:
    """Statement that drops the vector index."""
    if dialect == "myscale":
        return f"ALTER TABLE {table} DROP VECTOR INDEX {INDEX_NAME}"
    return f"ALTER TABLE {table} DROP INDEX IF EXISTS {INDEX_NAME}"


def index_status_sql(dialect: SqlDialect) -> str:
    """Query returning ``(kind, detail)`` of the vector index on ``{t}``, no row when there is none."""
    if dialect == "myscale":
        return (
            "SELECT type, status FROM system.vector_indices "
            "WHERE database = currentDatabase() AND table = {t:String} AND name = {i:String}"
        )
    return (
        "SELECT type, type_full FROM system.data_skipping_indices "
        "WHERE database = currentDatabase() AND table = {t:String} AND name = {i:String}"
    )


# The collection's model: one small table per image table, in the same database as the vectors, so a
# copied or shared database carries it. The latest row is the record; older rows are its history.


def model_table(table: str) -> str:
    """Name of the table holding ``table``'s model record."""
    return f"{table}__model"


def create_model_table_sql(table: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for the model record (the same on ClickHouse and MyScale)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {model_table(table)} (name String, dim UInt32, fingerprint String, "
        "recorded_at DateTime64(6) DEFAULT now64(6)) ENGINE = MergeTree ORDER BY recorded_at"
    )


def read_model_sql(table: str) -> str:
    """The latest model record as ``name, dim, fingerprint``."""
    return f"SELECT name, dim, fingerprint FROM {model_table(table)} ORDER BY recorded_at DESC LIMIT 1"


def swap_tables_sql(table: str, replacement: str) -> list[str]:
    """Statements that put ``replacement`` in the place of ``table`` (and drop the old one)."""
    old = f"{table}__replaced"
    return [
        f"DROP TABLE IF EXISTS {old}",
        f"RENAME TABLE {table} TO {old}, {replacement} TO {table}",
        f"DROP TABLE IF EXISTS {old}",
    ]


def delete_sql(dialect: SqlDialect, table: str) -> str:
    """Remove the rows whose id is in ``{ids}`` (a lightweight delete on both engines)."""
    return f"DELETE FROM {table} WHERE id IN {{ids:Array(String)}}"


_DIM_RE = re.compile(r"CONSTRAINT\s+`?vec_len`?\s+CHECK\s+length\(`?vector`?\)\s*=\s*(\d+)", re.IGNORECASE)


def dim_from_ddl(create_table_query: str) -> int | None:
    """The vector size declared by the ``vec_len`` constraint of a ``CREATE TABLE`` text."""
    m = _DIM_RE.search(create_table_query)
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------------------------------
# The store


class ClickHouseStore:
    """``VectorStore`` over one clickhouse-connect client (embedded chDB or HTTP), two SQL dialects."""

    def __init__(
        self,
        client: Client,
        target: DbTarget,
        dialect: SqlDialect,
        table: str,
        dim: int = 0,
        hnsw: HnswParams | None = None,
        hot_copy: bool | None = None,
    ) -> None:
        self._client = client
        self._target = target
        self.dialect: SqlDialect = dialect
        self.table = table
        self.dim = dim
        self.hnsw = hnsw or HnswParams()
        # chDB runs one query at a time per engine anyway (see bench/results/knn.md), and its client
        # is not meant for concurrent use; an HTTP server runs queries side by side.
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if target.backend == "chdb" else contextlib.nullcontext()
        )
        self._indexed: bool | None = None
        self._indexed_at = 0.0
        self.brute_metric: Literal["dot", "cosine"] = "dot"  # the scan used without an index
        # Embedded only: knn scans an in-memory copy (a temporary Memory table) of the searchable columns. Reading
        # Array(Float32) back from MergeTree costs ~4x the distance computation itself (measured in
        # bench/results/knn.md); a server keeps its own caches, and a Memory table there would be empty
        # after a server restart, so HTTP stores always scan the MergeTree table.
        self.hot_copy = target.backend == "chdb" if hot_copy is None else hot_copy
        self._hot_ready = False

    # -- plumbing ----------------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """``chdb`` or ``http``."""
        return self._target.backend

    @property
    def url(self) -> str:
        """The database URL without its password."""
        return self._target.safe_url

    def _scrub(self, text: str) -> str:
        pw = self._target.password
        return text.replace(pw, "***") if pw else text

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one client call under the lock, turning driver errors into domain errors."""
        with self._lock:
            return self._call_unlocked(fn)

    def _call_unlocked(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except OperationalError as e:
            raise StoreUnavailable(self.url, self._scrub(_first_line(e))) from None
        except Error as e:
            if self._target.backend == "chdb" and "closed" in str(e).lower():
                raise StoreUnavailable(self.url, "the store is closed") from None
            raise _StoreQueryError(self._scrub(str(e)), getattr(e, "code", None)) from None

    def _query(
        self, sql: str, parameters: dict[str, Any] | None = None, **kw: Any
    ) -> Sequence[Sequence[Any]]:
        return self._call(functools.partial(self._rows, sql, parameters, **kw))

    def _rows(self, sql: str, parameters: dict[str, Any] | None = None, **kw: Any) -> Sequence[Sequence[Any]]:
        """One query's rows, without the lock (the caller holds it where it is needed)."""
        return self._client.query(sql, parameters=parameters, **kw).result_rows

    def _command(self, sql: str, parameters: dict[str, Any] | None = None, **kw: Any) -> Any:
        return self._call(lambda: self._client.command(sql, parameters=parameters, **kw))

    @contextlib.contextmanager
    def _missing_table_is_empty(self) -> Iterator[None]:
        """Reads of a table that does not exist yet behave as reads of an empty one."""
        try:
            yield
        except _StoreQueryError as e:
            if e.code in (UNKNOWN_TABLE, UNKNOWN_DATABASE):
                raise _MissingTable from None
            raise

    def _table_ddl(self) -> str | None:
        rows = self._query(
            "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
            {"t": self.table},
        )
        return rows[0][0] if rows else None

    def _read_dim(self) -> int | None:
        ddl = self._table_ddl()
        if ddl is None:
            return None
        dim = dim_from_ddl(ddl)
        if dim is None:
            rows = self._query(f"SELECT length(vector) FROM {self.table} LIMIT 1")
            dim = int(rows[0][0]) if rows else None
        return dim

    def _check_vector_dim(self, got: int, where: str) -> None:
        if self.dim and got != self.dim:
            raise DimensionMismatch(self.dim, got, where)

    # -- schema ------------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the image table if it does not exist (idempotent)."""
        if not self.dim:
            raise StoreError(
                f"cannot create table {self.table!r}: the vector size is unknown (open the store with a dim)"
            )
        self._command(create_table_sql(self.dialect, self.table, self.dim))

    def insert(self, batch: ImageBatch) -> int:
        """Insert rows in columnar form (Arrow); returns the number inserted."""
        n = len(batch)
        if n == 0:
            return 0
        X = np.ascontiguousarray(batch.vectors, dtype=np.float32)
        if X.ndim != 2 or X.shape[0] != n:
            raise StoreError(f"a batch of {n} ids needs an (n, dim) vector matrix, got shape {X.shape}")
        if not (len(batch.urls) == len(batch.captions) == len(batch.sources) == n):
            raise StoreError("ids, urls, captions and sources of a batch must have the same length")
        self._check_vector_dim(X.shape[1], f"insert into {self.table}")
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            raise StoreError("a batch holds zero or non-finite vectors; nothing was inserted")
        self.dim = self.dim or X.shape[1]  # a store opened before any table exists takes the first batch's
        X = X / norms  # the brute-force scan relies on unit vectors (1 - dot = cosine distance)
        dim = X.shape[1]
        offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
        vectors = pa.ListArray.from_arrays(offsets, pa.array(X.reshape(-1)))
        arrow = pa.table(
            {
                "id": pa.array(batch.ids, pa.string()),
                "url": pa.array(batch.urls, pa.string()),
                "caption": pa.array(batch.captions, pa.string()),
                "source": pa.array(batch.sources, pa.string()),
                "vector": vectors,
            }
        )
        self.ensure_schema()
        with self._lock:
            self._call_unlocked(lambda: self._client.insert_arrow(self.table, arrow))
            if self._hot_ready:
                self._call_unlocked(lambda: self._client.insert_arrow(self._hot, arrow))
        return n

    @property
    def _hot(self) -> str:
        return f"{self.table}__hot"

    def _ensure_hot(self) -> None:
        """Fill the in-memory copy from the table, once per process (the caller holds the lock)."""
        if self._hot_ready:
            return
        rows = self._call_unlocked(functools.partial(self._rows, f"SELECT count() FROM {self.table}"))
        if rows[0][0] > HOT_COPY_MAX_ROWS:
            self.hot_copy = False  # 2 KiB a row: past this, RAM matters more than the faster scan
            return
        # A temporary table lives in this client's session only: no name clash with another store on
        # the same database, nothing left behind when the process ends.
        self._call_unlocked(lambda: self._client.command(f"DROP TEMPORARY TABLE IF EXISTS {self._hot}"))
        self._call_unlocked(
            lambda: self._client.command(
                f"CREATE TEMPORARY TABLE {self._hot} (id String, url String, caption String, "
                "source LowCardinality(String), vector Array(Float32)) ENGINE = Memory"
            )
        )
        self._call_unlocked(
            lambda: self._client.command(
                f"INSERT INTO {self._hot} SELECT id, url, caption, source, vector FROM {self.table}"
            )
        )
        self._hot_ready = True

    def optimize(self) -> None:
        """Merge the table's parts (after a bulk insert a scan over one part is fastest)."""
        with contextlib.suppress(_MissingTable), self._missing_table_is_empty():
            self._command(f"OPTIMIZE TABLE {self.table} FINAL")

    # -- reads -------------------------------------------------------------------------------------

    def knn(self, vector: np.ndarray, k: int, exclude_ids: Iterable[str] = ()) -> list[Hit]:
        """The ``k`` nearest images by cosine distance, nearest first, skipping ``exclude_ids``."""
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if k <= 0 or not self.dim:
            return []
        self._check_vector_dim(v.shape[0], "knn query")
        norm = float(np.linalg.norm(v))
        if not np.isfinite(norm) or norm == 0:
            raise StoreError("the query vector is zero or not finite")
        v = v / norm
        ex = list(dict.fromkeys(str(i) for i in exclude_ids))
        # Embedded, the in-memory scan beat the HNSW index at every size measured (bench/results/knn.md):
        # hard-negative rounds exclude the nearest ids, so the index must return k + |excluded| rows.
        # The index serves tables too big for the copy, and servers.
        indexed = self.dialect == "clickhouse" and not self.hot_copy and self._is_indexed()
        params: dict[str, Any] = {"v": v.tolist(), "ex": ex, "k": int(k)}
        if self.dialect == "clickhouse":
            params["m"] = int(k) + len(ex)
        settings: dict[str, Any] = {}
        if indexed:
            # Excluded ids are mostly the query's nearest, so the k wanted rows sit at the far end of
            # the index's answer, where HNSW recall is lowest: fetch twice as many as strictly needed.
            m = 2 * (int(k) + len(ex))
            params["m"] = m
            settings = {
                "hnsw_candidate_list_size_for_search": max(self.hnsw.ef_search, m),
                "max_limit_for_vector_search_queries": max(1000, m),
                # Re-rank the index's candidates by their exact Float32 distance (the index holds bf16):
                # the k rows wanted lie where bf16 rounding reorders them most.
                "vector_search_with_rescoring": 1,
            }
        try:
            with self._missing_table_is_empty(), self._lock:
                hot = self.hot_copy and not indexed and self.dialect == "clickhouse"
                if hot:
                    self._ensure_hot()
                    hot = self._hot_ready
                sql = knn_sql(self.dialect, self._hot if hot else self.table, indexed, self.brute_metric)
                rows = self._call_unlocked(functools.partial(self._rows, sql, params, settings=settings))
        except _MissingTable:
            return []
        return [Hit(id=r[0], url=r[1], distance=float(r[4]), caption=r[2], source=r[3]) for r in rows]

    def vectors(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Stored vectors of ``ids`` (those that exist, in the order given) as float32 ``(n, dim)``."""
        found: dict[str, Any] = {}
        try:
            for chunk in _chunks(list(dict.fromkeys(ids))):
                with self._missing_table_is_empty(), self._lock:
                    # Every refit reads its voted vectors: from the in-memory copy when knn has filled
                    # it, that is ~3 ms instead of ~25 ms from MergeTree at 25k rows (2-core CPU).
                    sql = f"SELECT id, vector FROM {self._hot if self._hot_ready else self.table} WHERE id IN {{ids:Array(String)}}"
                    rows = self._call_unlocked(functools.partial(self._rows, sql, {"ids": chunk}))
                found.update((r[0], r[1]) for r in rows)
        except _MissingTable:
            pass
        order = [i for i in ids if i in found]
        if not order:
            return [], np.zeros((0, self.dim), dtype=np.float32)
        return order, np.asarray([found[i] for i in order], dtype=np.float32)

    def get(self, ids: Sequence[str]) -> list[Hit]:
        """Rows of ``ids`` (those that exist, in the order given) with distance 0."""
        found: dict[str, Sequence[Any]] = {}
        try:
            for chunk in _chunks(list(dict.fromkeys(ids))):
                with self._missing_table_is_empty():
                    rows = self._query(
                        f"SELECT id, url, caption, source FROM {self.table} WHERE id IN {{ids:Array(String)}}",
                        {"ids": chunk},
                    )
                found.update((r[0], r) for r in rows)
        except _MissingTable:
            pass
        return [
            Hit(id=i, url=found[i][1], distance=0.0, caption=found[i][2], source=found[i][3])
            for i in ids
            if i in found
        ]

    def ids_present(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are stored already."""
        present: set[str] = set()
        try:
            for chunk in _chunks(list(dict.fromkeys(ids))):
                with self._missing_table_is_empty():
                    rows = self._query(
                        f"SELECT id FROM {self.table} WHERE id IN {{ids:Array(String)}}", {"ids": chunk}
                    )
                present.update(r[0] for r in rows)
        except _MissingTable:
            pass
        return present

    def count(self) -> int:
        """Number of stored images (0 when the table does not exist yet)."""
        try:
            with self._missing_table_is_empty():
                return int(self._query(f"SELECT count() FROM {self.table}")[0][0])
        except _MissingTable:
            return 0

    def delete(self, ids: Sequence[str]) -> int:
        """Remove the rows of ``ids`` (and their copies in memory); returns how many were stored."""
        doomed = sorted(self.ids_present(ids))
        if not doomed:
            return 0
        with self._lock:
            sql = delete_sql(self.dialect, self.table)
            for chunk in _chunks(doomed):
                self._call_unlocked(functools.partial(self._client.command, sql, parameters={"ids": chunk}))
            if self._hot_ready:
                # The in-memory copy is rebuilt on the next search: deletes are rare, a rebuild is one scan.
                self._call_unlocked(
                    lambda: self._client.command(f"DROP TEMPORARY TABLE IF EXISTS {self._hot}")
                )
                self._hot_ready = False
        return len(doomed)

    def urls_with_prefix(self, prefix: str) -> list[tuple[str, str]]:
        """``(id, url)`` of every row whose url starts with ``prefix``."""
        try:
            with self._missing_table_is_empty():
                rows = self._query(
                    f"SELECT id, url FROM {self.table} WHERE startsWith(url, {{p:String}})", {"p": prefix}
                )
        except _MissingTable:
            return []
        return [(str(r[0]), str(r[1])) for r in rows]

    def all_rows(self) -> list[Hit]:
        """Every row (without vectors), ordered by id."""
        try:
            with self._missing_table_is_empty():
                rows = self._query(f"SELECT id, url, caption, source FROM {self.table} ORDER BY id")
        except _MissingTable:
            return []
        return [Hit(id=r[0], url=r[1], distance=0.0, caption=r[2], source=r[3]) for r in rows]

    def sibling(self, suffix: str) -> ClickHouseStore:
        """A store on the table ``<table><suffix>`` over the same connection (for a re-embed)."""
        other = ClickHouseStore(
            self._client, self._target, self.dialect, f"{self.table}{suffix}", 0, self.hnsw, hot_copy=False
        )
        other._lock = self._lock
        other.dim = other._read_dim() or 0
        return other

    def replace_with(self, other: VectorStore) -> None:
        """Make ``other``'s rows this table's rows (an atomic rename); ``other``'s table is gone after."""
        assert isinstance(other, ClickHouseStore)
        with self._lock:
            for sql in swap_tables_sql(self.table, other.table):
                self._call_unlocked(functools.partial(self._client.command, sql))
            if self._hot_ready:
                self._call_unlocked(
                    lambda: self._client.command(f"DROP TEMPORARY TABLE IF EXISTS {self._hot}")
                )
                self._hot_ready = False
        self.dim = other.dim
        self._indexed = None

    def drop(self) -> None:
        """Drop this table and its model record."""
        for table in (self.table, model_table(self.table)):
            self._command(f"DROP TABLE IF EXISTS {table}")

    # -- the collection's model --------------------------------------------------------------------

    def model(self) -> ModelIdentity | None:
        """The model recorded with the vectors, or None for a collection that has no record yet."""
        try:
            with self._missing_table_is_empty():
                rows = self._query(read_model_sql(self.table))
        except _MissingTable:
            return None
        if not rows:
            return None
        name, dim, fingerprint = rows[0]
        return ModelIdentity(str(name), int(dim), str(fingerprint))

    def record_model(self, identity: ModelIdentity) -> None:
        """Record ``identity`` as the model of the collection (a new latest row)."""
        self._command(create_model_table_sql(self.table))
        self._command(
            f"INSERT INTO {model_table(self.table)} (name, dim, fingerprint) "
            "VALUES ({n:String}, {d:UInt32}, {f:String})",
            {"n": identity.name, "d": int(identity.dim), "f": identity.fingerprint},
        )

    # -- vector index ------------------------------------------------------------------------------

    def index_create(self) -> IndexStatus:
        """Build the vector index for the dialect (HNSW or MSTG); blocks until it is built.

        An embedded store keeps answering from its in-memory copy while the table fits in it: that scan
        is exact and was faster than the index at every size measured (bench/results/knn.md).
        """
        if self._table_ddl() is None:
            raise StoreError(f"table {self.table!r} does not exist yet: ingest some images first")
        if self.dialect == "myscale" and self.index_status().exists:
            return self.index_status()
        for sql in index_create_sql(self.dialect, self.table, self.dim, self.hnsw):
            self._command(sql)
        self._indexed = None
        return self.index_status()

    def index_status(self) -> IndexStatus:
        """Whether a vector index exists, and its state."""
        rows = self._query(index_status_sql(self.dialect), {"t": self.table, "i": INDEX_NAME})
        self._indexed, self._indexed_at = bool(rows), time.monotonic()
        if not rows:
            return IndexStatus(exists=False)
        kind, detail = str(rows[0][0]), str(rows[0][1])
        if self.dialect == "clickhouse":
            kind = "hnsw" if kind == "vector_similarity" else kind
            pending = self._query(
                "SELECT count() FROM system.mutations WHERE database = currentDatabase() "
                "AND table = {t:String} AND NOT is_done",
                {"t": self.table},
            )
            detail = f"{'InProgress' if pending[0][0] else 'Built'}: {detail}"
        return IndexStatus(exists=True, kind=kind, detail=detail)

    def index_drop(self) -> IndexStatus:
        """Drop the vector index if there is one."""
        if self.index_status().exists:
            self._command(index_drop_sql(self.dialect, self.table))
        return self.index_status()

    def _is_indexed(self) -> bool:
        # Another process (vdx index create against a server) may add the index; look again now and then.
        if self._indexed is None or time.monotonic() - self._indexed_at > 60:
            self.index_status()
        return bool(self._indexed)

    # -- misc --------------------------------------------------------------------------------------

    def info(self) -> StoreInfo:
        """Backend, dialect, table, row count, dimension and index status."""
        return StoreInfo(
            backend=self.backend,
            url=self.url,
            dialect=self.dialect,
            table=self.table,
            rows=self.count(),
            dim=self.dim,
            index=self.index_status(),
            model=self.model(),
        )

    def close(self) -> None:
        """Release the connection (and the embedded database's lock)."""
        with self._lock:
            self._hot_ready = False  # the in-memory copy goes with the client's session
            self._client.close()

    def __enter__(self) -> ClickHouseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _StoreQueryError(StoreError):
    """The server rejected a query; ``code`` is ClickHouse's error code when known."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


class _MissingTable(Exception):
    """Internal signal: the image table does not exist yet."""


def _chunks(items: list[str], size: int = ID_CHUNK) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _first_line(e: BaseException) -> str:
    """A short reason: the transport's cause when there is one, else the message's first line."""
    text = str(e).strip() or type(e).__name__
    for cause in ("Connection refused", "timed out", "Name or service not known", "Connection reset"):
        if cause in text:
            return cause.lower()
    return text.splitlines()[0][:300]


def _embedded_dir_locked(path: str) -> bool:
    """Whether another process holds ClickHouse's lock on ``path/status`` (the same flock it takes)."""
    status = Path(path) / "status"
    if not status.exists():
        return False
    with open(status, "rb") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False


def _connect(target: DbTarget) -> Client:
    if target.backend == "chdb":
        Path(target.path).mkdir(parents=True, exist_ok=True)
        if _embedded_dir_locked(target.path):  # ask first: chDB would print its own error to stderr
            raise DatabaseLocked(target.path)
        try:
            return clickhouse_connect.get_client(interface="chdb", path=target.path)
        except Error as e:
            if _embedded_dir_locked(target.path):
                raise DatabaseLocked(target.path) from None
            raise StoreUnavailable(target.safe_url, _first_line(e)) from None
    try:
        return clickhouse_connect.get_client(
            host=target.host,
            port=target.port,
            username=target.username,
            password=target.password,
            database=target.database,
            secure=target.secure,
            connect_timeout=5,
            # No HTTP session: queries from several worker threads may then run side by side.
            autogenerate_session_id=False,
        )
    except OperationalError as e:
        raise StoreUnavailable(
            target.safe_url, _first_line(e).replace(target.password or "\0", "***")
        ) from None
    except DatabaseError as e:
        msg = str(e).replace(target.password or "\0", "***")
        raise StoreUnavailable(target.safe_url, msg.splitlines()[0] if msg else "connection failed") from None


def _probe_dialect(client: Client) -> SqlDialect:
    """MyScale has ``system.vector_indices``; upstream ClickHouse and chDB do not."""
    rows = client.query(
        "SELECT count() FROM system.tables WHERE database = 'system' AND name = 'vector_indices'"
    ).result_rows
    return "myscale" if rows and rows[0][0] else "clickhouse"


def open_store(settings: Settings, dim: int | None = None, hnsw: HnswParams | None = None) -> ClickHouseStore:
    """Connect to ``settings.effective_db_url``, pick the dialect and read the table's vector size.

    ``dim`` is the encoder's vector size, when known: a table made for another size raises
    :class:`DimensionMismatch`.
    """
    target = parse_db_url(settings.effective_db_url)
    client = _connect(target)
    try:
        store = ClickHouseStore(client, target, "clickhouse", settings.table, 0, hnsw)
        if settings.db_dialect == "auto":
            store.dialect = store._call(lambda: _probe_dialect(client))
        else:
            store.dialect = settings.db_dialect
        existing = store._read_dim()
        if existing is not None and dim is not None and existing != dim:
            raise DimensionMismatch(existing, dim, f"table {settings.table!r} at {target.safe_url}")
        store.dim = existing or dim or 0
    except BaseException:
        client.close()
        raise
    return store
