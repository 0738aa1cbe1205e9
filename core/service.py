"""The ``vdx`` commands served by the process that holds the embedded database (``vdx bot``).

An embedded chDB directory opens in one process at a time. While ``vdx bot`` runs it serves
``vdx ingest``, ``search``, ``info`` and ``index`` over a unix socket in the data directory, with
its own open store and encoder: the CLI finds the socket, sends the parsed command, prints what
comes back and exits with the command's status. Rows ingested this way are in the bot's store at
once (its in-memory search copy included), so they show up in the next rounds, and each stored
batch is published on the bot's :class:`~core.events.CollectionEvents`.

Wire format: one JSON line from the client, ``{"command": NAME, "args": {...}}``; then JSON lines
from the server, ``{"out": TEXT}`` / ``{"err": TEXT}``, and last ``{"exit": CODE}``. The client
closing the connection stops the command as Ctrl-C would. Only the user that runs the server may
connect (the socket file is private, and the peer's uid is checked).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import socket
import socketserver
import struct
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from core.config import Settings

log = logging.getLogger(__name__)

SERVED = ("ingest", "search", "info", "index")
_SUN_PATH_MAX = 100  # sockaddr_un holds 108 bytes on Linux; keep a margin


def socket_path(settings: Settings) -> Path:
    """Where the bot serving ``settings.data_dir`` listens: ``DATA_DIR/vdx.sock``, or a private temp
    folder when that path is too long for a unix socket."""
    data = settings.data_dir.resolve()
    path = data / "vdx.sock"
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return path
    digest = hashlib.sha1(os.fsencode(data)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"vdx-{os.getuid()}" / f"{digest}.sock"


class _Lines(io.StringIO):
    """A text stream that sends each write to the client as a JSON line (``{"out": …}``)."""

    def __init__(self, send: Callable[[dict[str, Any]], None], key: str) -> None:
        self._send = send
        self._key = key

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self._send({self._key: text})
        return len(text)


Runner = Callable[[str, argparse.Namespace, TextIO, TextIO, threading.Event], int]


class CommandServer:
    """Serve ``vdx`` commands on :func:`socket_path` from a thread; ``run`` executes one command."""

    def __init__(self, settings: Settings, run: Runner) -> None:
        self.path = socket_path(settings)
        self._run = run
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen (a stale socket file of a dead process is replaced)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.path.exists():
            if _answers(self.path):
                raise OSError(f"another vdx process already serves {self.path}")
            self.path.unlink()
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                outer._handle(self.connection)

        server = socketserver.ThreadingUnixStreamServer(str(self.path), Handler, bind_and_activate=False)
        server.daemon_threads = True
        old = os.umask(0o177)  # the socket file is created private: srw-------
        try:
            server.server_bind()
        finally:
            os.umask(old)
        server.server_activate()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="vdx-commands", daemon=True)
        self._thread.start()
        log.info("serving vdx commands on %s", self.path)

    def close(self) -> None:
        """Stop listening and remove the socket file."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _handle(self, conn: socket.socket) -> None:
        if not _same_user(conn):
            return
        reader = conn.makefile("rb")
        line = reader.readline(1 << 20)
        try:
            request = json.loads(line)
            command = str(request["command"])
            args = argparse.Namespace(**request["args"])
        except (ValueError, KeyError, TypeError):
            return
        if command not in SERVED:
            return
        for key in ("path", "image"):
            if isinstance(getattr(args, key, None), str):
                setattr(args, key, Path(getattr(args, key)))
        stop = threading.Event()
        send_lock = threading.Lock()

        def send(message: dict[str, Any]) -> None:
            data = (json.dumps(message) + "\n").encode()
            with send_lock:
                try:
                    conn.sendall(data)
                except OSError:
                    stop.set()  # the client went away: stop the command

        def watch() -> None:
            with contextlib.suppress(OSError):
                reader.read(1)  # returns at EOF: the client closed (Ctrl-C) or finished
            stop.set()

        threading.Thread(target=watch, name="vdx-command-watch", daemon=True).start()
        try:
            out, err = _Lines(send, "out"), _Lines(send, "err")
            code = self._run(command, args, out, err, stop)  # type: ignore[arg-type]
        except Exception:  # the command runner translates domain errors; anything else is a bug
            log.exception("served command %s failed", command)
            send({"err": "vdx: error: the bot failed to run the command; see its log\n"})
            code = 2
        send({"exit": code})


def _same_user(conn: socket.socket) -> bool:
    with contextlib.suppress(OSError, AttributeError):
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid == os.getuid()
    return False


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def connect(settings: Settings) -> socket.socket | None:
    """A connection to the process serving ``settings.data_dir``, or None when none is running."""
    path = socket_path(settings)
    if not path.exists():
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
    except OSError:
        s.close()
        return None  # a socket file left by a process that died
    return s


def forward(conn: socket.socket, command: str, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Send one command over ``conn``, copy its output to ``out``/``err``, return its exit status."""
    payload = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    with conn:
        conn.sendall((json.dumps({"command": command, "args": payload}) + "\n").encode())
        for raw in conn.makefile("rb"):
            message = json.loads(raw)
            if "out" in message:
                out.write(message["out"])
                out.flush()
            elif "err" in message:
                err.write(message["err"])
                err.flush()
            elif "exit" in message:
                return int(message["exit"])
    print("vdx: error: the bot stopped before the command finished", file=sys.stderr)
    return 2
