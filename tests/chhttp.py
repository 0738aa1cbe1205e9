"""Test fixture over chDB: a loopback HTTP server that speaks the ClickHouse HTTP interface as strictly as
clickhouse-connect's HTTP client can meet it, and optionally MyScale's vector search on top.

It is not a ClickHouse server. Each request's SQL (from the ``query`` URL/form field or the body), its
``param_*`` values and its settings are run on an embedded chDB database, and chDB's output in the
requested ``FORMAT`` is sent back; errors come back as ClickHouse sends them (HTTP 500, the
``X-ClickHouse-Exception-Code`` header, ``Code: N. DB::Exception: …`` as the body). Inserts whose data
follows the statement run as ``INSERT … FROM INFILE``, as clickhouse-connect's own chDB backend does.

Rules of the real server it enforces (ClickHouse):
- Every URL parameter and every form field value is at most ``http_max_field_value_size`` = 128 KiB
  (131072 bytes, decoded), else ``Field value too long`` (code 1000); the URL is at most
  ``http_max_uri_size`` = 1 MiB. https://clickhouse.com/docs/reference/settings/session-settings/http-max
  The SQL text itself is at most ``max_query_size`` = 256 KiB (262144 bytes; the data after an
  ``INSERT … FORMAT`` does not count), else a syntax error "Max query size exceeded" (code 62).
  (the same defaults are in chDB's ``system.settings``; ``HTMLForm`` in ClickHouse's ``src/Server/HTTP``
  throws the message).
- External data: ``multipart/form-data`` file parts become temporary tables named after the part, typed by
  the ``<name>_structure`` / ``<name>_types`` / ``<name>_format`` URL parameters, for that query only.
  https://clickhouse.com/docs/engines/table-engines/special/external-data
- Sessions: a temporary table outlives its request only inside a ``session_id`` session
  (https://clickhouse.com/docs/interfaces/http, "sessions"; without one the next request gets "Unknown
  table", github.com/ClickHouse/clickhouse-js/issues/194). A session runs one query at a time
  (``SESSION_IS_LOCKED``, code 373), expires after ``session_timeout`` seconds (default 60), and
  ``session_check=1`` on an unknown session is ``SESSION_NOT_FOUND`` (code 372).
  Known gap: temporary tables of different sessions share one namespace here.

``cluster=NAME`` emulates a one-shard, one-replica cluster: ``ON CLUSTER NAME`` and
``clusterAllReplicas(NAME, …)`` are checked against the name (else ``CLUSTER_DOESNT_EXIST``, code 701) and
dropped, ``ReplicatedMergeTree(path, replica)`` must use defined macros (``{shard}``, ``{replica}``,
``{database}``, ``{table}``) and becomes ``MergeTree``, and a ``Distributed(NAME, db, local, key)`` table
becomes a view over its local table through which reads and writes are routed. Replication, sharding and
distributed DDL queues are not emulated.

``myscale=True`` emulates MyScale's vector search (MyScaleDB, github.com/myscale/MyScaleDB):
- ``distance(column, query)`` uses the column's vector index ``metric_type`` if it has one, else the table
  setting ``float_vector_search_metric_type`` (default ``L2``; ``MergeTreeSettings.h``), and needs
  ``ORDER BY`` and ``LIMIT`` (docs.myscale.com, vector search). ``vector_search_metric_type`` is
  accepted and does nothing ("Obsolete setting, does nothing."), unless ``myscale_old_metric=True``
  emulates a release where it was the metric setting and the new name does not exist.
- ``enable_brute_force_vector_search`` is off by default (``src/Core/Settings.h``): parts whose vector
  index is not built yet contribute no rows to a ``distance()`` query unless a query turns it on.
- ``ALTER TABLE … ADD VECTOR INDEX name col TYPE MSTG('metric_type=…')`` (the column needs a
  ``CHECK length(col) = N`` constraint) or ``VECTOR INDEX`` in ``CREATE TABLE`` adds an index that a
  background builder builds part by part (``build_s`` seconds each); new parts wait for it again.
  ``system.vector_indices`` shows ``status`` (``Built``/``InProgress``/``Error``), ``total_parts``,
  ``parts_with_vector_index``, ``small_parts``, ``latest_failed_part`` and ``latest_fail_reason``
  (``StorageSystemVectorIndices.cpp``); ``fail_builds=REASON`` makes every build fail with that reason.
  ``SYSTEM WAIT BUILDING VECTOR INDICES t`` blocks until built.
- A ``WHERE`` filter of a ``distance()`` query is applied after the top-k when
  ``optimize_move_to_prewhere_for_vector_search = 0``; ``PREWHERE`` always filters first.
- ``system.merge_tree_settings`` lists MyScale's vector settings, and ``system.tables`` knows
  ``system.vector_indices``.

The server runs in a child process (chDB opens one database path per process, and a test must be able to
stop the "database server" and start it again on the same port): use :class:`ChHttpServer`, or
``python -m tests.chhttp --path DIR --port N [--password PW] [--myscale] [--cluster NAME]``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import email.parser
import email.policy
import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MAX_FIELD_VALUE = 128 * 1024  # http_max_field_value_size
MAX_URI = 1024 * 1024  # http_max_uri_size
MAX_QUERY = 256 * 1024  # max_query_size: the SQL text, not the data of an INSERT
DEFAULT_SESSION_TIMEOUT = 60

# URL parameters that are not ClickHouse settings, or settings of the HTTP interface that chDB lacks.
_NOT_SETTINGS = {
    "wait_end_of_query",
    "send_progress_in_http_headers",
    "http_headers_progress_interval_ms",
    "enable_http_compression",
    "buffer_size",
    "query",
    "database",
    "query_id",
    "session_id",
    "session_timeout",
    "session_check",
    "compress",
    "decompress",
    "user",
    "password",
    "client_protocol_version",
}
# MyScale settings chDB does not know: the emulation honours them itself.
_MYSCALE_QUERY_SETTINGS = {"enable_brute_force_vector_search", "optimize_move_to_prewhere_for_vector_search"}
_MYSCALE_TABLE_SETTINGS = {
    "float_vector_search_metric_type": ("L2", "Default metric type for Float vector brute force search"),
    "binary_vector_search_metric_type": (
        "HAMMING",
        "Default metric type for Binary vector brute force search",
    ),
    "min_rows_to_build_vector_index": ("0", "The minimum row size of data part to build vector index"),
    "vector_search_metric_type": ("L2", "Obsolete setting, does nothing."),
}
_METRIC_FUNCTIONS = {"cosine": "cosineDistance", "l2": "L2SquaredDistance", "ip": "dotProduct"}

_INSERT_FORMAT = re.compile(
    rb"^\s*(INSERT\s+INTO\s+.*?\bFORMAT\s+(\w+))[ \t]*\r?\n", re.IGNORECASE | re.DOTALL
)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_CODE = re.compile(r"Code:\s*(\d+)")
_CREATE_TEMP = re.compile(r"^\s*CREATE\s+TEMPORARY\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?`?(\w+)`?", re.I)


class ServerError(Exception):
    """An error the emulated server returns as ClickHouse does."""

    def __init__(self, code: int, message: str, status: int = 500) -> None:
        super().__init__(f"Code: {code}. DB::Exception: {message}")
        self.code = code
        self.status = status


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class _Session:
    lock: threading.Lock = field(default_factory=threading.Lock)
    timeout: float = DEFAULT_SESSION_TIMEOUT
    last_used: float = field(default_factory=time.monotonic)
    temp_tables: set[str] = field(default_factory=set)


class Engine:
    """The emulated server's state: one chDB connection, sessions, the cluster map and MyScale's indices."""

    def __init__(
        self,
        path: str,
        *,
        myscale: bool = False,
        myscale_old_metric: bool = False,
        cluster: str = "",
        build_s: float = 0.3,
        fail_builds: str = "",
    ) -> None:
        import chdb

        self.conn = chdb.connect(path)
        # One chDB connection shared by request threads: queries run one at a time (a shared handle
        # returned wrong results for concurrent parameterised queries).
        self.lock = threading.RLock()
        self.sessions: dict[str, _Session] = {}
        self.sessions_lock = threading.Lock()
        self.myscale = myscale
        self.old_metric = myscale_old_metric
        self.cluster = cluster
        self.build_s = build_s
        self.fail_builds = fail_builds
        self.state_file = Path(path) / "emulation.json"
        self.state: dict[str, Any] = {"distributed": {}, "tables": {}}
        if self.state_file.exists():
            self.state = json.loads(self.state_file.read_text())
        if myscale:
            self._setup_myscale()
            threading.Thread(target=self._builder, daemon=True).start()

    # -- plumbing ----------------------------------------------------------------------------------

    def _save(self) -> None:
        self.state_file.write_text(json.dumps(self.state))

    def raw(self, sql: str, fmt: str = "CSV", params: dict[str, str] | None = None) -> bytes:
        """Run one statement on chDB (the caller holds the lock)."""
        try:
            result = self.conn.query(sql, fmt, params=params or {})
        except Exception as e:
            msg = str(e).strip()
            m = _CODE.search(msg)
            msg = re.split(r"\n\s*0\. ", msg)[0].strip()  # a server sends no stack trace
            raise ServerError(int(m.group(1)) if m else 1, msg.split("DB::Exception: ", 1)[-1]) from None
        return result.bytes() or b""

    def rows(self, sql: str) -> list[list[Any]]:
        out = self.raw(sql, "JSONCompact")
        return json.loads(out)["data"] if out else []

    # -- sessions ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def session(self, params: dict[str, str]) -> Any:
        sid = params.get("session_id", "")
        if not sid:
            yield None
            return
        now = time.monotonic()
        with self.sessions_lock:
            for key, s in list(self.sessions.items()):
                if now - s.last_used > s.timeout and not s.lock.locked():
                    self._drop_temp(s.temp_tables)
                    del self.sessions[key]
            s = self.sessions.get(sid)
            if s is None:
                if params.get("session_check") == "1":
                    raise ServerError(372, f"Session {sid} not found. (SESSION_NOT_FOUND)", 404)
                s = self.sessions[sid] = _Session()
            if "session_timeout" in params:
                s.timeout = float(params["session_timeout"])
            if not s.lock.acquire(blocking=False):
                raise ServerError(373, f"Session {sid} is locked by a concurrent client. (SESSION_IS_LOCKED)")
        try:
            yield s
        finally:
            s.last_used = time.monotonic()
            s.lock.release()

    def _drop_temp(self, names: set[str]) -> None:
        with self.lock:
            for name in names:
                with contextlib.suppress(ServerError):
                    self.raw(f"DROP TEMPORARY TABLE IF EXISTS {name}")

    # -- one request ---------------------------------------------------------------------------------

    def execute(
        self,
        sql: str,
        out_format: str,
        bind: dict[str, str],
        settings: dict[str, str],
        externals: list[tuple[str, str, str, bytes]],
        session: _Session | None,
        data_file: str | None,
    ) -> bytes:
        """Run one request's statement with its settings and external tables."""
        sql = self.rewrite_cluster(sql)
        query_settings = {k: v for k, v in settings.items() if k not in _MYSCALE_QUERY_SETTINGS}
        if self.myscale:
            handled = self.myscale_statement(sql)
            if handled is not None:
                return handled
        with self.lock:
            temp = _CREATE_TEMP.match(sql)
            created: list[str] = []
            try:
                for name, structure, fmt, data in externals:
                    with tempfile.NamedTemporaryFile(delete=False, suffix=".ext") as f:
                        f.write(data)
                    try:
                        self.raw(f"CREATE TEMPORARY TABLE {name} ({structure}) ENGINE = Memory")
                        created.append(name)
                        if data:
                            self.raw(f"INSERT INTO {name} FROM INFILE '{f.name}' FORMAT {fmt}")
                    finally:
                        Path(f.name).unlink(missing_ok=True)
                if self.myscale:
                    sql = self.rewrite_myscale(sql, settings)
                if data_file:
                    m = re.search(r"\bFORMAT\s+(\w+)\s*$", sql, re.IGNORECASE)
                    if m is None:
                        raise ServerError(62, "data sent without an INSERT ... FORMAT")
                    sql = f"{sql[: m.start()]}FROM INFILE '{data_file}' FORMAT {m.group(1)}"
                for k, v in query_settings.items():
                    self.raw(f"SET {k} = {_quote(v)}")
                try:
                    out = self.raw(sql, out_format, bind)
                finally:
                    for k in query_settings:
                        with contextlib.suppress(ServerError):
                            self.raw(f"SET {k} = DEFAULT")
                if temp:
                    if session is None:
                        created.append(temp.group(1))  # lives for this request only
                    else:
                        session.temp_tables.add(temp.group(1))
                return out
            finally:
                self._drop_temp(set(created))

    # -- cluster -----------------------------------------------------------------------------------

    def _check_cluster(self, name: str) -> None:
        if not self.cluster or name.strip("'`\"") != self.cluster:
            raise ServerError(701, f"Requested cluster '{name}' not found. (CLUSTER_DOESNT_EXIST)")

    def rewrite_cluster(self, sql: str) -> str:
        """One shard, one replica: strip what a cluster adds, route reads and writes to the local table."""
        for m in re.finditer(r"\bON\s+CLUSTER\s+([`'\"]?\w+[`'\"]?)", sql, re.I):
            self._check_cluster(m.group(1))
        sql = re.sub(r"\s+ON\s+CLUSTER\s+[`'\"]?\w+[`'\"]?", "", sql, flags=re.I)
        for m in re.finditer(
            r"clusterAllReplicas\(\s*([`'\"]?\w+[`'\"]?)\s*,\s*(system\.\w+)\s*\)", sql, re.I
        ):
            self._check_cluster(m.group(1))
        sql = re.sub(
            r"clusterAllReplicas\(\s*[`'\"]?\w+[`'\"]?\s*,\s*(system\.\w+)\s*\)", r"\1", sql, flags=re.I
        )
        m = re.search(r"ReplicatedMergeTree\(\s*'([^']*)'\s*,\s*'([^']*)'\s*\)", sql)
        if m:
            for macro in re.findall(r"\{(\w+)\}", m.group(1) + m.group(2)):
                if macro not in ("shard", "replica", "database", "table", "uuid"):
                    raise ServerError(62, f"No macro '{macro}' in config. (SYNTAX_ERROR)")
            sql = sql[: m.start()] + "MergeTree" + sql[m.end() :]
        d = re.match(
            r"^\s*CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)\s+AS\s+(\w+)\s+ENGINE\s*=\s*"
            r"Distributed\(\s*([`'\"]?\w+[`'\"]?)\s*,\s*'?(\w+)'?\s*,\s*'?(\w+)'?",
            sql,
            re.I,
        )
        if d:
            self._check_cluster(d.group(4))
            name, local = d.group(2), d.group(6)
            self.state["distributed"][name] = local
            self._save()
            return f"CREATE VIEW {d.group(1) or ''}{name} AS SELECT * FROM {local}"
        for name, local in self.state["distributed"].items():
            sql = re.sub(
                rf"\b(FROM|INTO|JOIN|OPTIMIZE\s+TABLE)\s+((?:`?\w+`?\.)?)`?{name}`?(?!\w)",
                rf"\1 \2{local}",
                sql,
                flags=re.I,
            )
        drop = re.match(r"^\s*DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(\w+)", sql, re.I)
        if drop and drop.group(1) in self.state["distributed"]:
            del self.state["distributed"][drop.group(1)]
            self._save()
        return sql

    # -- MyScale -----------------------------------------------------------------------------------

    def _setup_myscale(self) -> None:
        with self.lock:
            self.raw("CREATE DATABASE IF NOT EXISTS _myscale")
            self.raw("DROP TABLE IF EXISTS _myscale.merge_tree_settings")
            self.raw(
                "CREATE TABLE _myscale.merge_tree_settings ENGINE = Memory AS "
                "SELECT name, value, changed, description, type FROM system.merge_tree_settings"
            )
            for name, (value, description) in _MYSCALE_TABLE_SETTINGS.items():
                if self.old_metric and name == "float_vector_search_metric_type":
                    continue
                if self.old_metric and name == "vector_search_metric_type":
                    description = "Default metric type for vector search"
                self.raw(
                    "INSERT INTO _myscale.merge_tree_settings VALUES "
                    f"({_quote(name)}, {_quote(value)}, 0, {_quote(description)}, 'String')"
                )
            self.raw(
                "CREATE VIEW IF NOT EXISTS _myscale.tables AS SELECT database, name FROM system.tables "
                "UNION ALL SELECT 'system' AS database, 'vector_indices' AS name"
            )
            self.raw(
                "CREATE TABLE IF NOT EXISTS _myscale.vector_indices (database String, table String, name String, "
                "type String, expr String, total_parts Int64, parts_with_vector_index Int64, small_parts Int64, "
                "status String, host_name String, latest_failed_part String, latest_fail_reason String) "
                "ENGINE = Memory"
            )

    def _metric_setting(self) -> str:
        return "vector_search_metric_type" if self.old_metric else "float_vector_search_metric_type"

    def _table(self, name: str) -> dict[str, Any]:
        return self.state["tables"].setdefault(
            name, {"settings": {}, "index": None, "built": [], "error": ""}
        )

    def myscale_statement(self, sql: str) -> bytes | None:
        """MyScale-only statements, answered here; ``None`` for everything else."""
        m = re.match(
            r"^\s*ALTER\s+TABLE\s+(\w+)\s+ADD\s+VECTOR\s+INDEX\s+(\w+)\s+(\w+)\s+TYPE\s+(\w+)(?:\(\s*'([^']*)'\s*\))?\s*$",
            sql,
            re.I,
        )
        if m:
            table, name, column, kind, args = m.groups()
            with self.lock:
                ddl = self.rows(f"SELECT create_table_query FROM system.tables WHERE name = {_quote(table)}")
                if not ddl:
                    raise ServerError(60, f"Table default.{table} does not exist. (UNKNOWN_TABLE)")
                if not re.search(rf"CHECK\s+length\(`?{column}`?\)\s*=", ddl[0][0], re.I):
                    raise ServerError(
                        36,
                        f"vector column {column} needs a CHECK length({column}) = N constraint. (BAD_ARGUMENTS)",
                    )
                t = self._table(table)
                if t["index"] is not None:
                    raise ServerError(36, f"vector index {name} already exists. (BAD_ARGUMENTS)")
                t["index"] = {
                    "name": name,
                    "column": column,
                    "type": kind.upper(),
                    "params": _params(args or ""),
                }
                t["built"], t["error"] = [], ""
                self._save()
            return b""
        m = re.match(r"^\s*ALTER\s+TABLE\s+(\w+)\s+DROP\s+VECTOR\s+INDEX\s+(\w+)\s*$", sql, re.I)
        if m:
            with self.lock:
                t = self._table(m.group(1))
                if t["index"] is None or t["index"]["name"] != m.group(2):
                    raise ServerError(36, f"vector index {m.group(2)} does not exist. (BAD_ARGUMENTS)")
                t["index"], t["built"], t["error"] = None, [], ""
                self._save()
            return b""
        m = re.match(r"^\s*ALTER\s+TABLE\s+(\w+)\s+MODIFY\s+SETTING\s+(\w+)\s*=\s*'([^']*)'\s*$", sql, re.I)
        if m and m.group(2) in _MYSCALE_TABLE_SETTINGS:
            self._check_setting(m.group(2))
            with self.lock:
                self._table(m.group(1))["settings"][m.group(2)] = m.group(3)
                self._save()
            return b""
        m = re.match(r"^\s*SYSTEM\s+WAIT\s+BUILDING\s+VECTOR\s+INDICES\s+(\w+)\s*$", sql, re.I)
        if m:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self._index_rows(m.group(1))[0][8] == "InProgress":
                time.sleep(0.05)
            return b""
        return None

    def _check_setting(self, name: str) -> None:
        if self.old_metric and name == "float_vector_search_metric_type":
            raise ServerError(115, f"Unknown setting '{name}'. (UNKNOWN_SETTING)")

    def rewrite_myscale(self, sql: str, settings: dict[str, str]) -> str:
        """CREATE TABLE with MyScale settings and indices, system tables, and ``distance()`` (lock held)."""
        c = re.match(r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", sql, re.I)
        if c and not re.search(r"\bENGINE\s*=\s*Memory\b", sql, re.I):
            table = c.group(1)
            exists = self.rows(
                f"SELECT 1 FROM system.tables WHERE name = {_quote(table)} AND database = currentDatabase()"
            )
            index = re.search(
                r",\s*VECTOR\s+INDEX\s+(\w+)\s+(\w+)\s+TYPE\s+(\w+)(?:\(\s*'([^']*)'\s*\))?", sql, re.I
            )
            if index:
                sql = sql[: index.start()] + sql[index.end() :]
            found: dict[str, str] = {}
            tail = re.search(r"\bSETTINGS\s+(.*)$", sql, re.I | re.S)
            if tail:
                keep = []
                for item in re.findall(r"(\w+)\s*=\s*('[^']*'|\w+)", tail.group(1)):
                    if item[0] in _MYSCALE_TABLE_SETTINGS:
                        self._check_setting(item[0])
                        found[item[0]] = item[1].strip("'")
                    else:
                        keep.append(f"{item[0]} = {item[1]}")
                sql = sql[: tail.start()] + (f"SETTINGS {', '.join(keep)}" if keep else "")
            if not exists:
                t = self.state["tables"][table] = {"settings": found, "index": None, "built": [], "error": ""}
                if index:
                    name, column, kind, args = index.groups()
                    t["index"] = {
                        "name": name,
                        "column": column,
                        "type": kind.upper(),
                        "params": _params(args or ""),
                    }
                self._save()
        if "system.tables" in sql and "'vector_indices'" in sql:  # "is there a system.vector_indices?"
            sql = sql.replace("system.tables", "_myscale.tables")
        if "system.vector_indices" in sql:
            self._refresh_vector_indices()
            sql = sql.replace("system.vector_indices", "_myscale.vector_indices")
        sql = sql.replace("system.merge_tree_settings", "_myscale.merge_tree_settings")
        if re.search(r"\bdistance\s*\(", sql):
            sql = self._rewrite_distance(sql, settings)
        return sql

    def _rewrite_distance(self, sql: str, settings: dict[str, str]) -> str:
        m = re.search(r"\bFROM\s+(\w+)", sql, re.I)
        if m is None or not re.search(r"\bORDER\s+BY\b", sql, re.I) or not re.search(r"\bLIMIT\b", sql, re.I):
            raise ServerError(36, "vector search with distance() needs ORDER BY and LIMIT. (BAD_ARGUMENTS)")
        table = m.group(1)
        t = self._table(table)
        metric = (t["index"] or {}).get("params", {}).get("metric_type") or t["settings"].get(
            self._metric_setting(), "L2"
        )
        fn = _METRIC_FUNCTIONS.get(metric.lower())
        if fn is None:
            raise ServerError(36, f"unknown metric_type {metric}. (BAD_ARGUMENTS)")
        sql = re.sub(r"\bdistance\s*\(", f"{fn}(", sql)
        post_filter = ""
        moves = settings.get("optimize_move_to_prewhere_for_vector_search", "1") not in ("0", "false")
        w = re.search(r"\bWHERE\b(.*?)\bORDER\s+BY\b", sql, re.I | re.S)
        if w and not moves and not re.search(r"\bPREWHERE\b", sql, re.I):
            # The WHERE waits for the top-k: rows it removes are not replaced.
            post_filter = w.group(1).strip()
            sql = sql[: w.start()] + sql[w.end() - len("ORDER BY") :]
        brute = settings.get("enable_brute_force_vector_search", "0") not in ("0", "false", "")
        if not brute:
            built = list(t["built"]) if t["index"] else []
            cond = f"_part IN ({', '.join(_quote(p) for p in built)})" if built else "0"
            if re.search(r"\bPREWHERE\b", sql, re.I):
                sql = re.sub(r"\bPREWHERE\b", f"PREWHERE {cond} AND", sql, count=1, flags=re.I)
            else:
                sql = re.sub(r"\bFROM\s+(\w+)", rf"FROM \1 PREWHERE {cond}", sql, count=1, flags=re.I)
        return f"SELECT * FROM ({sql}) WHERE {post_filter}" if post_filter else sql

    def _parts(self, table: str) -> list[tuple[str, int]]:
        rows = self.rows(
            f"SELECT name, rows FROM system.parts WHERE database = currentDatabase() AND table = {_quote(table)} "
            "AND active ORDER BY name"
        )
        return [(str(r[0]), int(r[1])) for r in rows]

    def _index_rows(self, only: str = "") -> list[list[Any]]:
        out = []
        with self.lock:
            db = self.rows("SELECT currentDatabase()")[0][0]
            for table, t in self.state["tables"].items():
                if t["index"] is None or (only and table != only):
                    continue
                parts = self._parts(table)
                small_rows = int(t["settings"].get("min_rows_to_build_vector_index", 0))
                small = [p for p, n in parts if n < small_rows]
                built = [p for p, _ in parts if p in t["built"] and p not in small]
                status = (
                    "Error"
                    if t["error"]
                    else ("Built" if len(built) + len(small) == len(parts) else "InProgress")
                )
                ix = t["index"]
                args = ", ".join(f"{k}={v}" for k, v in ix["params"].items())
                out.append(
                    [
                        db,
                        table,
                        ix["name"],
                        ix["type"],
                        f"{ix['name']} {ix['column']} TYPE {ix['type']}('{args}')",
                        len(parts),
                        len(built),
                        len(small),
                        status,
                        "localhost",
                        t.get("failed_part", "") if t["error"] else "",
                        t["error"],
                    ]  # fmt: skip
                )
        return out or [["", "", "", "", "", 0, 0, 0, "", "", "", ""]] if only else out

    def _refresh_vector_indices(self) -> None:
        rows = self._index_rows()
        self.raw("TRUNCATE TABLE _myscale.vector_indices")
        if rows:
            values = ", ".join(
                "(" + ", ".join(_quote(v) if isinstance(v, str) else str(v) for v in r) + ")" for r in rows
            )
            self.raw(f"INSERT INTO _myscale.vector_indices VALUES {values}")

    def _builder(self) -> None:
        """MyScale's background build: one part at a time, ``build_s`` each."""
        while True:
            time.sleep(0.05)
            todo: tuple[str, str] | None = None
            with self.lock:
                for table, t in self.state["tables"].items():
                    if t["index"] is None or t["error"]:
                        continue
                    with contextlib.suppress(ServerError):
                        for part, _ in self._parts(table):
                            if part not in t["built"]:
                                todo = (table, part)
                                break
                    if todo:
                        break
            if todo is None:
                continue
            time.sleep(self.build_s)
            with self.lock:
                t = self.state["tables"].get(todo[0])
                if t is None or t["index"] is None:
                    continue
                if self.fail_builds:
                    t["error"], t["failed_part"] = self.fail_builds, todo[1]
                else:
                    t["built"].append(todo[1])
                self._save()


def _params(args: str) -> dict[str, str]:
    """``'metric_type=Cosine, disk_mode=0'`` as a dict."""
    out = {}
    for item in args.split(","):
        key, _, value = item.partition("=")
        if key.strip():
            out[key.strip()] = value.strip()
    return out


def _check_field(name: str, value: str | bytes) -> None:
    size = len(value.encode() if isinstance(value, str) else value)
    if size > MAX_FIELD_VALUE:
        raise ServerError(
            1000,
            f"Field value too long: {name} has {size} bytes, at most {MAX_FIELD_VALUE}. (POCO_EXCEPTION)",
        )


def serve(path: str, port: int, password: str = "", **engine_options: Any) -> None:
    """Serve the database at ``path`` on ``127.0.0.1:port`` until killed."""
    engine = Engine(path, **engine_options)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base
            pass

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorised(self) -> bool:
            if not password:
                return True
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                _, _, given = base64.b64decode(auth[6:]).decode().partition(":")
            else:
                given = self.headers.get("X-ClickHouse-Key", "")
            return given == password

        def do_GET(self) -> None:
            if urlsplit(self.path).path.rstrip("/") in ("/ping", ""):
                self._reply(200, b"Ok.\n")
            else:
                self.do_POST()

        def do_POST(self) -> None:
            body = self._body()
            try:
                out, out_format = self._handle(body)
            except ServerError as e:
                self._reply(e.status, str(e).encode() + b"\n", {"X-ClickHouse-Exception-Code": str(e.code)})
                return
            self._reply(
                200,
                out,
                {
                    "Content-Type": "application/octet-stream",
                    "X-ClickHouse-Format": out_format,
                    "X-ClickHouse-Timezone": "UTC",
                    "X-ClickHouse-Summary": '{"read_rows":"0","written_rows":"0"}',
                },
            )

        def _handle(self, body: bytes) -> tuple[bytes, str]:
            if len(self.path.encode()) > MAX_URI:
                raise ServerError(1000, f"URI is too long (more than {MAX_URI} bytes). (POCO_EXCEPTION)", 414)
            params: dict[str, str] = {}
            for k, v in parse_qsl(urlsplit(self.path).query, keep_blank_values=True):
                _check_field(k, v)
                params[k] = v
            if not self._authorised():
                raise ServerError(516, "default: Authentication failed. (AUTHENTICATION_FAILED)", 403)
            encoding = self.headers.get("Content-Encoding")
            if encoding:
                from clickhouse_connect.driver._backend.chdb_backend import _decompress

                body = _decompress(body, encoding)
            externals: list[tuple[str, str, str, bytes]] = []
            ctype = self.headers.get("Content-Type", "")
            if ctype.startswith("multipart/form-data"):
                msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body
                )
                for part in msg.iter_parts():
                    name = str(part.get_param("name", header="content-disposition") or "")
                    payload = part.get_payload(decode=True) or b""
                    if part.get_filename():
                        types = params.get(f"{name}_types")
                        structure = params.get(f"{name}_structure") or (
                            ", ".join(f"_{i + 1} {t}" for i, t in enumerate(types.split(",")))
                            if types
                            else ""
                        )
                        if not structure:
                            raise ServerError(
                                36,
                                f"Neither structure nor types have not been provided for external table {name}",
                            )
                        externals.append(
                            (name, structure, params.get(f"{name}_format", "TabSeparated"), payload)
                        )
                    else:
                        _check_field(name, payload)
                        params[name] = payload.decode()
                body = b""
            data = b""
            if "query" in params:
                sql, data = params["query"], body
            else:
                m = _INSERT_FORMAT.match(body)
                if m:
                    sql, data = m.group(1).decode(), body[m.end() :]
                else:
                    sql = body.decode()
            ext_params = {f"{n}_{s}" for n, *_ in externals for s in ("structure", "types", "format")}
            bind = {k[len("param_") :]: v for k, v in params.items() if k.startswith("param_")}
            settings = {
                k: v
                for k, v in params.items()
                if k not in _NOT_SETTINGS and k not in ext_params and not k.startswith("param_")
            }
            if len(sql.encode()) > MAX_QUERY:
                raise ServerError(
                    62,
                    f"Syntax error: failed at position {MAX_QUERY}: Max query size exceeded. (SYNTAX_ERROR)",
                )
            fmt_m = _TRAILING_FORMAT.search(sql)
            out_format = fmt_m.group(1) if fmt_m else settings.get("default_format", "TabSeparated")
            tmp: str | None = None
            if data.strip():
                with tempfile.NamedTemporaryFile(delete=False, suffix=".bin") as f:
                    f.write(data)
                    tmp = f.name
            try:
                with engine.session(params) as session:
                    return engine.execute(
                        sql, out_format, bind, settings, externals, session, tmp
                    ), out_format
            finally:
                if tmp:
                    Path(tmp).unlink(missing_ok=True)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChHttpServer:
    """The loopback server in a child process: ``start()``, ``stop()``, ``start()`` again on the same port."""

    def __init__(
        self,
        path: Path,
        port: int | None = None,
        password: str = "",
        *,
        myscale: bool = False,
        myscale_old_metric: bool = False,
        cluster: str = "",
        build_s: float = 0.3,
        fail_builds: str = "",
    ) -> None:
        self.path = Path(path)
        self.port = port or free_port()
        self.password = password
        self.options = {
            "myscale": myscale,
            "myscale_old_metric": myscale_old_metric,
            "cluster": cluster,
            "build_s": build_s,
            "fail_builds": fail_builds,
        }
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://default:PASSWORD@127.0.0.1:PORT/default``, the form ``VDX_DB_URL`` takes."""
        return f"http://default:{self.password}@127.0.0.1:{self.port}/default"

    def start(self, timeout: float = 60.0) -> ChHttpServer:
        """Start the child and wait until it answers ``/ping``."""
        self.path.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "tests.chhttp", "--path", str(self.path), "--port", str(self.port)]
        cmd += ["--options", json.dumps(self.options)]
        if self.password:
            cmd += ["--password", self.password]
        root = Path(__file__).resolve().parent.parent
        self._proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"the loopback ClickHouse server exited: {err[-2000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=1) as r,
            ):
                if r.status == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the loopback ClickHouse server did not start in time")

    def stop(self) -> None:
        """Kill the child (like a crashed server) and wait for it, which frees the port and the lock."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None

    def __enter__(self) -> ChHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """``python -m tests.chhttp --path DIR --port N [--password PW] [--myscale] [--cluster NAME]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--password", default="")
    ap.add_argument("--myscale", action="store_true", help="emulate MyScale's vector search")
    ap.add_argument("--cluster", default="", help="emulate a one-node cluster of this name")
    ap.add_argument("--options", default="{}", help="engine options as JSON (tests)")
    a = ap.parse_args()
    options = json.loads(a.options)
    options["myscale"] = options.get("myscale") or a.myscale
    options["cluster"] = options.get("cluster") or a.cluster
    serve(a.path, a.port, a.password, **options)


if __name__ == "__main__":
    main()
