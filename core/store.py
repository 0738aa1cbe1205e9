"""Vector store: the ``VectorStore`` protocol and its ClickHouse/MyScale implementation.

One clickhouse-connect client talks to either an embedded chDB directory (``chdb:///abs/path``) or a
server over HTTP (``http(s)://user:password@host:port/database``). What differs between ClickHouse and
MyScale (search SQL, index DDL, settings, index status) is owned by a :class:`core.dialects.Dialect`;
where the rows live (one table, or a cluster's ``Distributed`` table) by a :class:`TableLayout`.

Over HTTP every value a server must parse from the URL is bounded (ClickHouse's ``http_max_field_value_size``,
128 KiB): id lists go in chunks of at most :data:`ID_PARAM_BYTES`, and a knn exclusion list too long for
one parameter travels as external data. Index builds and merges run in the background and are polled.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import re
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import clickhouse_connect
import numpy as np
import pyarrow as pa
from clickhouse_connect.driver.binding import format_bind_value
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, Error, OperationalError
from clickhouse_connect.driver.external import ExternalData

from core.config import Settings
from core.dialects import (
    EXCLUDED_PARAM,
    EXCLUDED_TABLE,
    ClickHouseDialect,
    Dialect,
    HnswParams,
    MyScaleDialect,
    TableLayout,
    dialect_for,
    short_reason,
)
from core.errors import DatabaseLocked, DimensionMismatch, IndexBuildFailed, StoreError, StoreUnavailable
from core.records import Hit, ImageBatch, IndexStatus, MatchPage, ModelIdentity, Scored, StoreInfo

__all__ = [
    "ClickHouseStore",
    "DbTarget",
    "HnswParams",
    "TableLayout",
    "VectorStore",
    "open_store",
    "parse_db_url",
]

T = TypeVar("T")
log = logging.getLogger(__name__)

# ClickHouse's HTTP interface refuses a URL or form field value over http_max_field_value_size (128 KiB,
# https://clickhouse.com/docs/operations/settings/settings#http_max_field_value_size): an Array(String)
# parameter is kept to this many bytes as the server reads it (quoted, escaped, comma-separated).
ID_PARAM_BYTES = 96 * 1024
# How often a background index build or merge is polled.
POLL_S = 1.0
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

    def matches(
        self,
        weight: np.ndarray,
        threshold: float | None,
        limit: int,
        offset: int = 0,
        exclude_ids: Iterable[str] = (),
        cap: int | None = None,
        added: tuple[int, int] | None = None,
    ) -> MatchPage:
        """Images scoring above ``threshold`` (cosine with ``weight``), best first, one page of them.

        ``threshold=None`` accepts every image; ``cap`` keeps only the first ``cap`` by score;
        ``added`` only images added in that span of Unix seconds (inclusive).
        """

    def latest_added(self) -> int:
        """When the newest image was added (Unix seconds; 0 for an empty table)."""

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

    def index_create(
        self, wait: bool = True, progress: Callable[[IndexStatus], None] | None = None
    ) -> IndexStatus:
        """Add the vector index (HNSW or MSTG); with ``wait``, return once every part has it."""

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
# Helpers shared by every dialect (the dialects themselves are in core/dialects.py)


_DIM_RE = re.compile(r"CONSTRAINT\s+`?vec_len`?\s+CHECK\s+length\(`?vector`?\)\s*=\s*(\d+)", re.IGNORECASE)


def dim_from_ddl(create_table_query: str) -> int | None:
    """The vector size declared by the ``vec_len`` constraint of a ``CREATE TABLE`` text."""
    m = _DIM_RE.search(create_table_query)
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------------------------------
# The store


class ClickHouseStore:
    """``VectorStore`` over one clickhouse-connect client (embedded chDB or HTTP); the dialect owns the SQL."""

    def __init__(
        self,
        client: Client,
        target: DbTarget,
        dialect: Dialect,
        table: str | TableLayout,
        dim: int = 0,
        hnsw: HnswParams | None = None,
        hot_copy: bool | None = None,
    ) -> None:
        self._client = client
        self._target = target
        self.dialect = dialect
        self.layout = table if isinstance(table, TableLayout) else TableLayout(table, target.database)
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
        # bench/results/knn.md). A server keeps its own caches, and its temporary tables live only inside
        # an HTTP session (one query at a time), so HTTP stores always scan the table itself.
        self.hot_copy = target.backend == "chdb" if hot_copy is None else hot_copy
        self._hot_ready = False

    # -- plumbing ----------------------------------------------------------------------------------

    @property
    def table(self) -> str:
        """The table every read and write goes through (the ``Distributed`` one on a cluster)."""
        return self.layout.table

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
            log.debug("database unreachable: %s", self._scrub(str(e)))
            raise StoreUnavailable(self.url, self._scrub(_first_line(e))) from None
        except Error as e:
            full = self._scrub(str(e))
            log.debug("database error: %s", full)
            if self._target.backend == "chdb" and "closed" in full.lower():
                raise StoreUnavailable(self.url, "the store is closed") from None
            # One line for people: no stack trace, no echo of the query (it can hold the query vector).
            raise _StoreQueryError(short_reason(_server_message(full), 300), _error_code(e, full)) from None

    def _query(
        self, sql: str, parameters: dict[str, Any] | None = None, **kw: Any
    ) -> Sequence[Sequence[Any]]:
        return self._call(functools.partial(self._rows, sql, parameters, **kw))

    def _q(self, sql: str, parameters: dict[str, Any]) -> Sequence[Sequence[Any]]:
        """The query function the dialect runs its own status queries through."""
        return self._query(sql, parameters)

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
            {"t": self.layout.data_table},
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
        for sql in self.dialect.create_table_sql(self.layout, self.dim):
            self._command(sql)

    def upgrade_schema(self) -> None:
        """Bring a table made by an older vdx up to date (e.g. MyScale's brute-force metric setting)."""
        ddl = self._table_ddl()
        for sql in self.dialect.upgrade_table_sql(self.layout, ddl) if ddl else []:
            self._command(sql)

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
        settings = self.layout.insert_settings
        with self._lock:
            self._call_unlocked(lambda: self._client.insert_arrow(self.table, arrow, settings=settings))
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

    def optimize(self, progress: Callable[[float], None] | None = None) -> None:
        """Merge the table's parts (after a bulk insert a scan over one part is fastest).

        Over HTTP the merge can outlast the client's receive timeout: the statement runs in a worker
        thread under a known query id while ``system.merges`` is polled for ``progress`` (0..1); a
        timed-out request is followed until the server has finished the query.
        """
        sql = f"OPTIMIZE TABLE {self.layout.data_table}{self.layout.on_cluster} FINAL"
        with contextlib.suppress(_MissingTable), self._missing_table_is_empty():
            if self.backend == "chdb":
                self._command(sql)
                return
            self._run_polled(sql, progress)

    def _run_polled(self, sql: str, progress: Callable[[float], None] | None) -> None:
        query_id = f"vdx-{uuid.uuid4()}"
        failure: list[BaseException] = []

        def work() -> None:
            try:
                self._command(sql, settings={"query_id": query_id})
            except BaseException as e:  # handed to the polling thread
                failure.append(e)

        worker = threading.Thread(target=work, name="vdx-optimize", daemon=True)
        worker.start()
        merges = (
            f"SELECT min(progress) FROM {self.layout.system('merges')} "
            "WHERE database = currentDatabase() AND table = {t:String}"
        )
        running = f"SELECT count() FROM {self.layout.system('processes')} WHERE query_id = {{q:String}}"
        while worker.is_alive():
            worker.join(POLL_S)
            if progress is not None and worker.is_alive():
                rows = self._query(merges, {"t": self.layout.data_table})
                progress(float(rows[0][0] or 0.0) if rows else 0.0)
        if failure and not isinstance(failure[0], StoreUnavailable):
            raise failure[0]
        if failure:  # the request gave up (receive timeout), the server may still be merging
            while int(self._query(running, {"q": query_id})[0][0]):
                time.sleep(POLL_S)
        if progress is not None:
            progress(1.0)

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
        params: dict[str, Any] = {"v": v.tolist(), "k": int(k)}
        external: ExternalData | None = None
        # A server reads each URL parameter into at most 128 KiB: a longer exclusion list goes as an
        # external table in the request body (embedded chDB takes parameters of any size).
        if self.backend == "http" and _param_bytes(ex) > ID_PARAM_BYTES:
            excluded = EXCLUDED_TABLE
            external = ExternalData(
                file_name=EXCLUDED_TABLE, data=_row_binary(ex), fmt="RowBinary", structure="id String"
            )
        else:
            excluded = EXCLUDED_PARAM
            params["ex"] = ex
        # Embedded, the in-memory scan beat the HNSW index at every size measured (bench/results/knn.md):
        # hard-negative rounds exclude the nearest ids, so the index must return k + |excluded| rows.
        # The index serves tables too big for the copy, and servers.
        indexed = not self.hot_copy and self._is_indexed()
        try:
            with self._missing_table_is_empty(), self._lock:
                hot = self.hot_copy and not indexed
                if hot:
                    self._ensure_hot()
                    hot = self._hot_ready
                query = self.dialect.knn(
                    self._hot if hot else self.table,
                    excluded,
                    len(ex),
                    k,
                    layout=self.layout,
                    indexed=indexed,
                    metric=self.brute_metric,
                    hnsw=self.hnsw,
                )
                kw: dict[str, Any] = {"settings": query.settings}
                if external is not None:
                    kw["external_data"] = external
                rows = self._call_unlocked(
                    functools.partial(self._rows, query.sql, params | query.params, **kw)
                )
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

    def matches(
        self,
        weight: np.ndarray,
        threshold: float | None,
        limit: int,
        offset: int = 0,
        exclude_ids: Iterable[str] = (),
        cap: int | None = None,
        added: tuple[int, int] | None = None,
    ) -> MatchPage:
        """Images scoring above ``threshold`` (cosine with ``weight``), best first, one page of them.

        The whole table is scored inside the database in one scan, the weight travelling as a query
        parameter. ``threshold=None`` accepts every image; ``cap`` keeps only the first ``cap`` by score
        (the top N while a classifier has no decision boundary); ``added`` keeps only the images added
        in that span of Unix seconds (inclusive), read from the stored table (the in-memory copy has
        no insert times).
        """
        w = np.asarray(weight, dtype=np.float32).reshape(-1)
        offset = max(0, int(offset))
        if not self.dim:
            return MatchPage(0, offset, [], threshold)
        self._check_vector_dim(w.shape[0], "classifier weight")
        norm = float(np.linalg.norm(w))
        if not np.isfinite(norm) or norm == 0:
            raise StoreError("the classifier weight is zero or not finite")
        if threshold is not None and not np.isfinite(threshold):
            raise StoreError("the decision boundary is not a finite number")
        n = max(0, int(limit))
        if cap is not None:
            n = max(0, min(n, int(cap) - offset))
        ex = list(dict.fromkeys(str(i) for i in exclude_ids))
        params: dict[str, Any] = {
            "w": (w / norm).tolist(),
            "t": -2.0 if threshold is None else float(threshold),  # cosines are >= -1
            "n": n,
            "o": offset,
        }
        kw: dict[str, Any] = {}
        if self.backend == "http" and _param_bytes(ex) > ID_PARAM_BYTES:  # as knn does: see there
            excluded = EXCLUDED_TABLE
            kw["external_data"] = ExternalData(
                file_name=EXCLUDED_TABLE, data=_row_binary(ex), fmt="RowBinary", structure="id String"
            )
        else:
            excluded = EXCLUDED_PARAM
            params["ex"] = ex
        if added is not None:
            params["a0"], params["a1"] = max(0, int(added[0])), max(0, int(added[1]))
        try:
            with self._missing_table_is_empty(), self._lock:
                hot = self.hot_copy and added is None
                if hot:
                    self._ensure_hot()
                    hot = self._hot_ready
                sql = self.dialect.matches(
                    self._hot if hot else self.table, excluded, layout=self.layout, added=added is not None
                )
                rows = self._call_unlocked(functools.partial(self._rows, sql, params, **kw))
                total = int(rows[0][5]) if rows else 0
                if not rows and (offset or not n):
                    # A page past the end has no row to carry the total: ask for the first row instead.
                    head = self._call_unlocked(
                        functools.partial(self._rows, sql, {**params, "n": 1, "o": 0}, **kw)
                    )
                    total = int(head[0][5]) if head else 0
        except _MissingTable:
            return MatchPage(0, offset, [], threshold)
        if cap is not None:
            total = min(total, int(cap))
        items = [Scored(id=r[0], url=r[1], score=float(r[4]), caption=r[2], source=r[3]) for r in rows]
        return MatchPage(total, offset, items, threshold)

    def latest_added(self) -> int:
        """When the newest image was added (Unix seconds; 0 for an empty or missing table)."""
        try:
            with self._missing_table_is_empty():
                rows = self._query(f"SELECT toUnixTimestamp(max(added_at)), count() FROM {self.table}")
        except _MissingTable:
            return 0
        return int(rows[0][0]) if rows and rows[0][1] else 0

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
        sql = self.layout.delete_sql()
        with self._lock:
            for chunk in _chunks(doomed):
                self._call_unlocked(functools.partial(self._client.command, sql, parameters={"ids": chunk}))
            self._drop_hot()
        return len(doomed)

    def _drop_hot(self) -> None:
        """Forget the in-memory copy (the caller holds the lock); the next search rebuilds it: rows are
        removed rarely, and a rebuild is one scan."""
        if self._hot_ready:
            self._call_unlocked(lambda: self._client.command(f"DROP TEMPORARY TABLE IF EXISTS {self._hot}"))
            self._hot_ready = False

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
        layout = TableLayout(f"{self.table}{suffix}", self.layout.database, self.layout.cluster)
        other = ClickHouseStore(
            self._client, self._target, self.dialect, layout, 0, self.hnsw, hot_copy=False
        )
        other._lock = self._lock
        other.dim = other._read_dim() or 0
        return other

    def replace_with(self, other: VectorStore) -> None:
        """Make ``other``'s rows this table's rows (an atomic rename); ``other``'s table is gone after."""
        assert isinstance(other, ClickHouseStore)
        if self.layout.cluster:
            raise StoreError("re-embedding a collection on a cluster (VDX_DB_CLUSTER) is not supported yet")
        with self._lock:
            for sql in self.layout.swap_sql(other.layout):
                self._call_unlocked(functools.partial(self._client.command, sql))
            self._drop_hot()
        self.dim = other.dim
        self._indexed = None

    def drop(self) -> None:
        """Drop this table and its model record."""
        for sql in [*self.layout.drop_sql(), *self.layout.model.drop_sql()]:
            self._command(sql)

    # -- the collection's model --------------------------------------------------------------------

    def model(self) -> ModelIdentity | None:
        """The model recorded with the vectors, or None for a collection that has no record yet."""
        try:
            with self._missing_table_is_empty():
                rows = self._query(self.layout.read_model_sql())
        except _MissingTable:
            return None
        if not rows:
            return None
        name, dim, fingerprint = rows[0]
        return ModelIdentity(str(name), int(dim), str(fingerprint))

    def record_model(self, identity: ModelIdentity) -> None:
        """Record ``identity`` as the model of the collection (a new latest row)."""
        for sql in self.layout.create_model_sql():
            self._command(sql)
        self._command(
            self.layout.insert_model_sql(),
            {"n": identity.name, "d": int(identity.dim), "f": identity.fingerprint},
            settings=self.layout.insert_settings,
        )

    # -- vector index ------------------------------------------------------------------------------

    def index_create(
        self, wait: bool = True, progress: Callable[[IndexStatus], None] | None = None
    ) -> IndexStatus:
        """Add the dialect's vector index (HNSW or MSTG) and, with ``wait``, poll until every part has it.

        The build runs on the server in the background either way, so neither the HTTP receive timeout
        nor an interrupted ``vdx index create`` stops it; ``progress`` sees each new status while waiting.
        An embedded store keeps answering from its in-memory copy while the table fits in it: that scan
        is exact and was faster than the index at every size measured (bench/results/knn.md).
        """
        if self._table_ddl() is None:
            raise StoreError(f"table {self.table!r} does not exist yet: ingest some images first")
        status = self.index_status()
        if not status.exists:
            for sql in self.dialect.index_create_sql(self.layout, self.dim, self.hnsw):
                self._command(sql)
            self._indexed = None
            status = self.index_status()
        return self.index_wait(progress) if wait else status

    def index_wait(self, progress: Callable[[IndexStatus], None] | None = None) -> IndexStatus:
        """Poll the index status until it is built; a failed build raises :class:`IndexBuildFailed`."""
        last: IndexStatus | None = None
        delay = 0.05  # quick first looks (a small table is built at once), then every POLL_S
        while True:
            status = self.index_status()
            if progress is not None and status != last:
                progress(status)
            last = status
            if not status.exists:
                raise StoreError(f"the vector index on {self.table!r} was dropped while it was being built")
            if status.state == "Error":
                raise IndexBuildFailed(self.table, status.error or "the server gave no reason")
            if status.state == "Built":
                return status
            time.sleep(delay)
            delay = min(POLL_S, delay * 2)

    def index_status(self) -> IndexStatus:
        """Whether a vector index exists, how many parts have it, and the last build failure."""
        status = self.dialect.index_status(self._q, self.layout)
        self._indexed, self._indexed_at = status.exists, time.monotonic()
        return status

    def index_drop(self) -> IndexStatus:
        """Drop the vector index if there is one."""
        if self.index_status().exists:
            self._command(self.dialect.index_drop_sql(self.layout))
        return self.index_status()

    def _is_indexed(self) -> bool:
        # Another process (vdx index create against a server) may add the index; look again now and then.
        if self._indexed is None or time.monotonic() - self._indexed_at > 60:
            try:
                with self._missing_table_is_empty():
                    self.index_status()
            except _MissingTable:
                return False
        return bool(self._indexed)

    # -- misc --------------------------------------------------------------------------------------

    def info(self) -> StoreInfo:
        """Backend, dialect, table, row count, dimension and index status."""
        return StoreInfo(
            backend=self.backend,
            url=self.url,
            dialect=self.dialect.name,
            table=self.table,
            rows=self.count(),
            dim=self.dim,
            index=self.index_status(),
            model=self.model(),
            cluster=self.layout.cluster,
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


def _bound_bytes(value: str) -> int:
    """Bytes of one id inside an ``Array(String)`` parameter as the server reads it, with its comma."""
    return len(format_bind_value(value, top_level=False).encode()) + 1


def _param_bytes(ids: Sequence[str]) -> int:
    return 2 + sum(_bound_bytes(i) for i in ids) - (1 if ids else 0)


def _chunks(items: list[str], budget: int | None = None) -> Iterator[list[str]]:
    """Consecutive runs of ``items`` whose ``Array(String)`` parameter stays within ``budget`` bytes."""
    limit = ID_PARAM_BYTES if budget is None else budget
    chunk: list[str] = []
    size = 2
    for item in items:
        cost = _bound_bytes(item)
        if chunk and size + cost > limit:
            yield chunk
            chunk, size = [], 2
        chunk.append(item)
        size += cost
    if chunk:
        yield chunk


def _row_binary(ids: Sequence[str]) -> bytes:
    """``ids`` as one ``String`` column in ClickHouse's RowBinary format (LEB128 length, then the bytes)."""
    out = bytearray()
    for text in ids:
        raw = text.encode()
        n = len(raw)
        while True:
            byte = n & 0x7F
            n >>= 7
            out += struct.pack("B", byte | (0x80 if n else 0))
            if not n:
                break
        out += raw
    return bytes(out)


_CODE_RE = re.compile(r"Code:\s*(\d+)")
_SERVER_MSG_RE = re.compile(r"(Code:\s*\d+\.\s*DB::Exception:.*)", re.DOTALL)


def _error_code(e: Error, text: str) -> int | None:
    code = getattr(e, "code", None)
    if isinstance(code, int):
        return code
    m = _CODE_RE.search(text)
    return int(m.group(1)) if m else None


def _server_message(text: str) -> str:
    """The server's own ``Code: N. DB::Exception: …`` part of a driver error, when there is one."""
    m = _SERVER_MSG_RE.search(text)
    return m.group(1) if m else text


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


def _probe_dialect(client: Client) -> Dialect:
    """MyScale has ``system.vector_indices``; upstream ClickHouse and chDB do not."""
    rows = client.query(
        "SELECT count() FROM system.tables WHERE database = 'system' AND name = 'vector_indices'"
    ).result_rows
    return MyScaleDialect() if rows and rows[0][0] else ClickHouseDialect()


def open_store(settings: Settings, dim: int | None = None, hnsw: HnswParams | None = None) -> ClickHouseStore:
    """Connect to ``settings.effective_db_url``, pick the dialect and read the table's vector size.

    ``dim`` is the encoder's vector size, when known: a table made for another size raises
    :class:`DimensionMismatch`.
    """
    target = parse_db_url(settings.effective_db_url)
    if target.backend == "chdb" and settings.db_dialect == "myscale":
        raise StoreError(
            "VDX_DB_DIALECT=myscale needs a MyScale server (VDX_DB_URL=http(s)://...); "
            "the embedded database speaks ClickHouse: unset VDX_DB_DIALECT or set it to clickhouse"
        )
    if target.backend == "chdb" and settings.db_cluster:
        raise StoreError(
            "VDX_DB_CLUSTER needs ClickHouse servers (VDX_DB_URL=http(s)://...); the embedded database is one node"
        )
    client = _connect(target)
    try:
        layout = TableLayout(settings.table, target.database, settings.db_cluster)
        store = ClickHouseStore(client, target, ClickHouseDialect(), layout, 0, hnsw)
        if settings.db_dialect == "auto":
            store.dialect = (
                ClickHouseDialect()
                if target.backend == "chdb"
                else store._call(lambda: _probe_dialect(client))
            )
        else:
            store.dialect = dialect_for(settings.db_dialect)
        store.dialect.probe(store._q)
        existing = store._read_dim()
        if existing is not None and dim is not None and existing != dim:
            raise DimensionMismatch(existing, dim, f"table {settings.table!r} at {target.safe_url}")
        store.dim = existing or dim or 0
        if existing is not None:
            store.upgrade_schema()
    except BaseException:
        client.close()
        raise
    return store
