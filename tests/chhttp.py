"""Test fixture over chDB: a loopback HTTP server speaking enough of the ClickHouse HTTP interface for
clickhouse-connect's HTTP client.

It is not a ClickHouse server. Each request's SQL (from the ``query`` URL parameter or the body),
its ``param_*`` values and its settings are run as they are on an embedded chDB database, and chDB's
output in the requested ``FORMAT`` is sent back; errors come back as ClickHouse does (HTTP 500, the
``X-ClickHouse-Exception-Code`` header, the message as the body). Inserts whose data follows the
statement are run as ``INSERT … FROM INFILE``, which is how clickhouse-connect's own chDB backend does it.

The server runs in a child process (chDB opens one database path per process, and a test must be
able to stop the "database server" and start it again on the same port): use :class:`ChHttpServer`,
or ``python -m tests.chhttp --path DIR --port N [--password PW]``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

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
}
_INSERT_FORMAT = re.compile(
    rb"^\s*(INSERT\s+INTO\s+.*?\bFORMAT\s+(\w+))[ \t]*\r?\n", re.IGNORECASE | re.DOTALL
)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_CODE = re.compile(r"Code:\s*(\d+)")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def serve(path: str, port: int, password: str = "") -> None:
    """Serve the database at ``path`` on ``127.0.0.1:port`` until killed."""
    import chdb

    conn = chdb.connect(path)
    # One chDB connection shared by request threads: queries run one at a time (a shared handle
    # returned wrong results for concurrent parameterised queries).
    lock = threading.Lock()

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
            params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
            body = self._body()
            if not self._authorised():
                msg = b"Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)\n"
                self._reply(403, msg, {"X-ClickHouse-Exception-Code": "516"})
                return
            encoding = self.headers.get("Content-Encoding")
            if encoding:
                from clickhouse_connect.driver._backend.chdb_backend import _decompress

                body = _decompress(body, encoding)
            sql: str
            data = b""
            if "query" in params:
                sql, data = params["query"], body
            else:
                m = _INSERT_FORMAT.match(body)
                if m:
                    sql, data = m.group(1).decode(), body[m.end() :]
                else:
                    sql = body.decode()
            bind = {k[len("param_") :]: v for k, v in params.items() if k.startswith("param_")}
            settings = {
                k: v for k, v in params.items() if k not in _NOT_SETTINGS and not k.startswith("param_")
            }
            tmp: str | None = None
            if data.strip():
                with tempfile.NamedTemporaryFile(delete=False, suffix=".bin") as f:
                    f.write(data)
                    tmp = f.name
                fmt_m = re.search(r"\bFORMAT\s+(\w+)\s*$", sql, re.IGNORECASE)
                if fmt_m is None:
                    self._reply(400, b"Code: 62. DB::Exception: data sent without an INSERT ... FORMAT\n")
                    return
                sql = f"{sql[: fmt_m.start()]}FROM INFILE '{tmp}' FORMAT {fmt_m.group(1)}"
            fmt_m = _TRAILING_FORMAT.search(sql)
            out_format = fmt_m.group(1) if fmt_m else settings.get("default_format", "TabSeparated")
            try:
                with lock:
                    try:
                        for k, v in settings.items():
                            conn.query(f"SET {k} = {_quote(v)}")
                        result = conn.query(sql, out_format, params=bind)
                        out = result.bytes() or b""
                    finally:
                        for k in settings:
                            with contextlib.suppress(Exception):
                                conn.query(f"SET {k} = DEFAULT")
            except Exception as e:  # any engine error is the client's to see, as a real server does
                msg = str(e)
                code = _CODE.search(msg)
                self._reply(
                    500, msg.encode() + b"\n", {"X-ClickHouse-Exception-Code": code.group(1) if code else "1"}
                )
                return
            finally:
                if tmp:
                    Path(tmp).unlink(missing_ok=True)
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

    def __init__(self, path: Path, port: int | None = None, password: str = "") -> None:
        self.path = Path(path)
        self.port = port or free_port()
        self.password = password
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://default:PASSWORD@127.0.0.1:PORT/default``, the form ``VDX_DB_URL`` takes."""
        return f"http://default:{self.password}@127.0.0.1:{self.port}/default"

    def start(self, timeout: float = 60.0) -> ChHttpServer:
        """Start the child and wait until it answers ``/ping``."""
        self.path.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "tests.chhttp", "--path", str(self.path), "--port", str(self.port)]
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
    """``python -m tests.chhttp --path DIR --port N [--password PW]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--password", default="")
    a = ap.parse_args()
    serve(a.path, a.port, a.password)


if __name__ == "__main__":
    main()
