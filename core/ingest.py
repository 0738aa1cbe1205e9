"""Ingest: Unsplash Lite TSV, a folder of photos, or precomputed vectors -> thumbnails + rows in the store.

Images flow through a bounded pipeline: a thread pool downloads/reads, decodes, writes the thumbnail
and preprocesses each image while the calling thread embeds finished batches and inserts them, so the
model never waits on I/O. Rows are inserted batch by batch and only after their thumbnails exist, so
an interrupted run leaves a consistent store; a second run skips stored ids.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import io
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent import futures
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from core.errors import DimensionMismatch, IngestError, ModelMismatch, SourceUnreachable
from core.events import CollectionEvents, ImagesIngested
from core.records import ImageBatch

if TYPE_CHECKING:
    from core.config import Settings
    from core.encoder import ClipEncoder, Encoder, Pixels
    from core.store import VectorStore

log = logging.getLogger(__name__)
T = TypeVar("T")

THUMBNAIL_MAX_SIDE = 1280
# A JPEG that the DCT decoder can scale to at least this long side (7/8 of the most) is kept at
# that size: no full-size decode, no resize (a 2500 px photo gets a 1250 px thumbnail).
THUMBNAIL_DRAFT_SIDE = THUMBNAIL_MAX_SIDE * 7 // 8
UNSPLASH_WIDTH = 640  # ask images.unsplash.com for a resized image: plenty for CLIP's 224 px and the bot
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
UNSPLASH_REQUIRED = ("photo_id", "photo_image_url")
UNSPLASH_CAPTION_COLUMNS = (
    "photo_description",
    "ai_description",
    "photographer_first_name",
    "photographer_last_name",
)
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
_ID_CHECK_CHUNK = 5_000


@dataclass(frozen=True)
class SourceImage:
    """One image to ingest: where to read it (``location``: http(s) URL or file path) and its row."""

    id: str
    url: str
    caption: str
    source: str
    location: str


SUMMARY_LINES = 20  # broken files and duplicates listed on screen; the CSV report has them all
UNREACHABLE_AFTER = 20  # this many failed connections before any download works: the host is down


@dataclass
class IngestReport:
    """What an ingest did, counted per file (or Unsplash row) of the source.

    ``new`` and ``changed`` rows were embedded and stored (a changed file's old row and thumbnail
    replaced); ``unchanged`` were stored already; ``removed`` rows were pruned (their file is gone);
    ``gone`` are rows whose file is gone but that were kept (no ``--prune``); ``duplicates`` are
    ``(path, path of the stored copy)`` of byte-identical files; ``broken`` is ``(path or photo_id,
    reason)``. ``rekeyed`` counts changed rows that only had an id of the earlier path-based scheme;
    ``rekeys`` maps each such old id to the content id that took its place, and ``votes_kept``
    counts the chats' votes moved with them.
    """

    source: str
    total: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    gone: int = 0
    rekeys: dict[str, str] = field(default_factory=dict)
    votes_kept: int = 0
    moved: int = 0
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    broken: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    report_path: Path | None = None

    @property
    def rekeyed(self) -> int:
        """Rows stored under their content id in place of a path-based one."""
        return len(set(self.rekeys.values()))

    @property
    def stored(self) -> int:
        """Rows embedded and stored by this run (new and changed)."""
        return self.new + self.changed

    @property
    def skipped_existing(self) -> int:
        """Files or rows that were stored already and left as they were."""
        return self.unchanged

    @property
    def images_per_second(self) -> float:
        """Stored rows per second of wall time."""
        return self.stored / self.seconds if self.seconds > 0 else 0.0

    @property
    def failed(self) -> bool:
        """A non-empty source of which nothing could be stored: every item was broken."""
        return self.total > 0 and len(self.broken) == self.total

    def summary(self, limit: int = SUMMARY_LINES) -> str:
        """At most a screenful: the counts, then the first ``limit`` broken files and duplicates."""
        rate = f" ({self.images_per_second:.1f}/s)" if self.stored else ""
        counts = [
            f"{self.new} new",
            f"{self.changed} changed",
            f"{self.unchanged} unchanged",
            f"{self.removed} removed",
            f"{len(self.duplicates)} duplicate",
            f"{len(self.broken)} broken",
        ]
        lines = [f"{self.source}: {', '.join(counts)}, of {self.total} in {self.seconds:.1f} s{rate}"]
        if self.rekeyed:
            lines.append(
                f"  {self.rekeyed} rows of the earlier path-based id scheme were re-keyed by content"
                + (f"; their {self.votes_kept} votes were kept" if self.votes_kept else "")
            )
        if self.moved:
            lines.append(f"  {self.moved} moved files keep their rows under the new path")
        if self.gone:
            lines.append(
                f"  {self.gone} stored images are gone from disk: run again with --prune to remove them"
            )
        shown = 0
        for where, reason in self.broken:
            if shown < limit:
                lines.append(f"  broken {where}: {reason}")
            shown += 1
        for where, copy_of in self.duplicates:
            if shown < limit:
                lines.append(f"  duplicate {where}: same bytes as {copy_of}")
            shown += 1
        if shown > limit:
            lines.append(f"  … and {shown - limit} more")
        if self.report_path is not None and shown:
            lines.append(f"  full list: {self.report_path}")
        return "\n".join(lines)


def write_report_csv(report: IngestReport, folder: Path) -> Path:
    """Write every broken file and duplicate of ``report`` to a CSV in ``folder``; returns its path."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ingest-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["status", "item", "detail"])
        out.writerows(("broken", where, reason) for where, reason in report.broken)
        out.writerows(("duplicate", where, f"same bytes as {of}") for where, of in report.duplicates)
    report.report_path = path.resolve()
    return report.report_path


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C during an ingest; ``report`` says how much was stored (the rest resumes on the next run)."""

    def __init__(self, report: IngestReport) -> None:
        super().__init__(f"interrupted; {report.stored} images stored")
        self.report = report


class _Broken(Exception):
    """A row that cannot be ingested (404, not an image, empty URL); counted, listed and skipped.

    ``unreachable`` marks a download that never reached the host (refused, timed out, no route).
    """

    def __init__(self, reason: str, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.unreachable = unreachable


@contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """Hold a Ctrl-C that arrives during an insert until it has finished, so "N stored" is exact."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


def cache_path(settings: Settings, image_id: str) -> Path:
    """The thumbnail of ``image_id`` in the image cache (what the bot uploads)."""
    return settings.image_cache_dir / f"{image_id}.jpg"


def stable_id(key: str) -> str:
    """A short id derived from a URL (precomputed vectors without ids): the same key, the same id.

    Folder rows were keyed this way by their path relative to the folder given, up to vdx 0.1; such
    rows are re-keyed by content on the next ingest of their folder.
    """
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def content_id(data_digest: bytes) -> str:
    """The id of a file from its SHA-256: the same bytes give the same id wherever the file lies."""
    return data_digest.hex()[:20]


class FileHashes:
    """SHA-256 of files, remembered by path, size and modification time in a small SQLite file.

    A re-run over a large folder then reads no file whose size and mtime are unchanged.
    """

    def __init__(self, path: Path | None) -> None:
        import sqlite3

        self._db: sqlite3.Connection | None = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(path, check_same_thread=False)
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, "
                    "mtime_ns INTEGER, digest BLOB)"
                )
            except sqlite3.Error as e:  # only a cache: hash every file instead
                log.info("file hash cache %s unusable: %s", path, e)
                self._db = None
        self._lock = threading.Lock()

    def known(self) -> dict[str, tuple[int, int, bytes]]:
        """Every remembered ``path -> (size, mtime_ns, digest)``."""
        if self._db is None:
            return {}
        with self._lock:
            rows = self._db.execute("SELECT path, size, mtime_ns, digest FROM hashes").fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def remember(self, rows: Sequence[tuple[str, int, int, bytes]]) -> None:
        """Store ``(path, size, mtime_ns, digest)`` rows."""
        if self._db is None or not rows:
            return
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)", rows)
            self._db.commit()

    def close(self) -> None:
        """Close the cache file."""
        if self._db is not None:
            self._db.close()


def _sha256(path: Path) -> bytes:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


# ---------------------------------------------------------------------------------------------------
# Sources


def unsplash_files(path: Path) -> list[Path]:
    """``path`` itself, or the ``photos.tsv*`` / ``photos.csv*`` parts inside a directory, in order."""
    if not path.exists():
        raise IngestError(f"no such file or directory: {path}")
    if path.is_file():
        return [path]
    parts = sorted(p for p in path.iterdir() if p.is_file() and re.match(r"photos\.(tsv|csv)", p.name))
    if not parts:
        raise IngestError(f"no photos.tsv* or photos.csv* file in {path} (the Unsplash Lite photos table)")
    return parts


def read_unsplash(path: Path, limit: int | None = None) -> list[SourceImage]:
    """Rows of the Unsplash Lite photos table (tab-separated, one header per part), duplicates dropped."""
    import pandas as pd

    frames = []
    for part in unsplash_files(path):
        try:
            frame = pd.read_csv(part, sep="\t", header=0, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
            raise IngestError(f"cannot read {part} as a tab-separated Unsplash photos table: {e}") from e
        missing = [c for c in UNSPLASH_REQUIRED if c not in frame.columns]
        if missing:
            found = ", ".join(list(map(str, frame.columns))[:5]) or "none"
            raise IngestError(
                f"{part} is not an Unsplash photos table: missing column(s) {', '.join(missing)} "
                f"(found: {found}); expected the tab-separated photos.tsv000 of Unsplash Lite"
            )
        frames.append(frame)
    rows = pd.concat(frames, axis=0, ignore_index=True).drop_duplicates("photo_id", keep="first")
    rows = rows[rows["photo_id"].str.strip() != ""]
    if limit is not None:
        rows = rows.head(limit)
    for column in UNSPLASH_CAPTION_COLUMNS:
        if column not in rows.columns:
            rows[column] = ""
    images = []
    for r in rows.itertuples(index=False):
        url = r.photo_image_url.strip()
        images.append(
            SourceImage(
                id=r.photo_id.strip(),
                url=url,
                caption=unsplash_caption(
                    r.photo_description, r.ai_description, r.photographer_first_name, r.photographer_last_name
                ),
                source="unsplash",
                location=sized_url(url) if url else "",
            )
        )
    return images


def unsplash_caption(description: str, ai_description: str, first_name: str, last_name: str) -> str:
    """The photographer's description (else the AI one) and the attribution Unsplash asks for."""
    text = " ".join((description or ai_description or "").split())
    name = " ".join(f"{first_name} {last_name}".split())
    credit = f"Photo by {name} on Unsplash" if name else "Photo on Unsplash"
    return f"{text} — {credit}" if text else credit


def sized_url(url: str, width: int = UNSPLASH_WIDTH) -> str:
    """``url`` asking for a ``width``-px wide image (Unsplash's dynamic resizing): its ``w`` set, the rest kept."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "w"]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode([*query, ("w", str(width))])))


def folder_files(path: Path, limit: int | None = None) -> list[Path]:
    """Every jpg/jpeg/png/webp below ``path`` (recursive, sorted, absolute)."""
    if not path.exists():
        raise IngestError(f"no such directory: {path.resolve()}")
    if not path.is_dir():
        raise IngestError(f"not a directory: {path.resolve()} (vdx ingest folder takes a folder of photos)")
    root = path.resolve()
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return files[:limit] if limit is not None else files


def read_folder(
    path: Path,
    limit: int | None = None,
    hashes: FileHashes | None = None,
    broken: list[tuple[str, str]] | None = None,
    workers: int = 4,
) -> list[SourceImage]:
    """The photos below ``path``, each with the id of its content (SHA-256), in path order.

    Files that cannot be read are appended to ``broken`` as ``(path, reason)`` when given.
    """
    files = folder_files(path, limit)
    known = hashes.known() if hashes is not None else {}
    digests: dict[Path, bytes] = {}
    todo: list[tuple[Path, int, int]] = []
    for f in files:
        try:
            st = f.stat()
        except OSError as e:
            if broken is not None:
                broken.append((str(f), f"cannot read the file: {e.strerror or e}"))
            continue
        hit = known.get(str(f))
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            digests[f] = hit[2]
        else:
            todo.append((f, st.st_size, st.st_mtime_ns))
    fresh: list[tuple[str, int, int, bytes]] = []
    if todo:
        from concurrent.futures import ThreadPoolExecutor

        def digest(entry: tuple[Path, int, int]) -> tuple[Path, int, int, bytes | str]:
            try:
                return (*entry, _sha256(entry[0]))
            except OSError as e:
                return (*entry, f"cannot read the file: {e.strerror or e}")

        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="vdx-hash") as pool:
            for f, size, mtime, result in pool.map(digest, todo):
                if isinstance(result, str):
                    if broken is not None:
                        broken.append((str(f), result))
                    continue
                digests[f] = result
                fresh.append((str(f), size, mtime, result))
    if hashes is not None:
        hashes.remember(fresh)
    images = []
    for f in files:
        if f not in digests:
            continue
        images.append(
            SourceImage(
                id=content_id(digests[f]),
                url=f.as_uri(),
                caption=" ".join(re.sub(r"[_\-.]+", " ", f.stem).split()),
                source="folder",
                location=str(f),
            )
        )
    return images


# ---------------------------------------------------------------------------------------------------
# Reading one image (runs in worker threads)


def _download(url: str, timeout: float, retries: int) -> bytes:
    """GET ``url``: retried on 5xx, 429, timeouts and dropped connections; other HTTP errors are final."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise _Broken(f"not an http(s) URL: {url[:80]}")
    request = urllib.request.Request(url, headers={"User-Agent": "vdx-ingest/0.1"})
    delay = 0.5
    for attempt in range(retries + 1):
        last = attempt == retries
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                data = response.read(MAX_DOWNLOAD_BYTES + 1)
            if len(data) > MAX_DOWNLOAD_BYTES:
                raise _Broken(f"larger than {MAX_DOWNLOAD_BYTES // 2**20} MiB")
            return data
        except urllib.error.HTTPError as e:
            if (e.code >= 500 or e.code == 429) and not last:
                time.sleep(delay)
                delay *= 2
                continue
            raise _Broken(f"HTTP {e.code}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
            if not last:
                time.sleep(delay)
                delay *= 2
                continue
            reason = getattr(e, "reason", None) or e
            raise _Broken(f"download failed after {retries + 1} tries: {reason}", unreachable=True) from None
    raise AssertionError("unreachable")


def _decode(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if image.format == "JPEG" and max(width, height) > THUMBNAIL_MAX_SIDE:
            # decode big JPEGs at 1/2..1/8 scale; draft() keeps both sides >= the size asked for
            f = THUMBNAIL_DRAFT_SIDE / max(width, height)
            image.draft("RGB", (max(1, math.ceil(width * f)), max(1, math.ceil(height * f))))
        image.load()
        return image
    except UnidentifiedImageError:
        raise _Broken(f"not an image ({_sniff(data)})") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _Broken(f"cannot decode the image: {e}") from None


def _sniff(data: bytes) -> str:
    head = data[:64].lstrip().lower()
    if not data:
        return "empty response"
    if head.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    try:
        data[:256].decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return f"{len(data)} bytes of unknown data"


def _write_thumbnail(data: bytes, image: Image.Image, target: Path) -> Image.Image:
    """Write the JPEG thumbnail atomically; returns the (upright, RGB, <= 1280 px) image."""
    orientation = image.getexif().get(0x0112, 1)
    small_jpeg = (
        image.format == "JPEG"
        and image.mode == "RGB"
        and orientation == 1
        and max(image.size) <= THUMBNAIL_MAX_SIDE
    )
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        # (a JPEG decoded at reduced scale by draft() has a smaller size than its header says)
        if small_jpeg and image.size == Image.open(io.BytesIO(data)).size:
            tmp.write_bytes(data)  # already a small upright JPEG: keep the bytes, skip a re-encode
            thumb = image
        else:
            thumb = ImageOps.exif_transpose(image)
            if thumb.mode != "RGB":
                thumb = _to_rgb(thumb)
            # Bilinear (antialiased, as every Pillow downscale) costs 2/3 of bicubic and looks the
            # same at these factors (< 2, or after draft() decoding); Telegram scales again anyway.
            thumb.thumbnail((THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE), Image.Resampling.BILINEAR)
            thumb.save(tmp, "JPEG", quality=88)
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise IngestError(f"cannot write the thumbnail {target}: {e}") from e
    return thumb


def remove_temporary_files(cache_dir: Path, *, only_mine: bool = False) -> int:
    """Delete half-written thumbnails (``.<id>.jpg.<pid>-<thread>.tmp``) of this process, or of any
    process that is no longer running; returns how many were removed."""
    removed = 0
    for tmp in cache_dir.glob(".*.tmp"):
        pid_text = tmp.name.rsplit(".", 2)[-2].split("-")[0]
        pid = int(pid_text) if pid_text.isdigit() else -1
        mine = pid == os.getpid()
        if only_mine and not mine:
            continue
        if not mine and pid > 0:
            try:
                os.kill(pid, 0)
                continue  # another live process is writing it
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed += 1
    return removed


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))  # transparent pixels read as white
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _read_bytes(item: SourceImage, timeout: float, retries: int) -> bytes:
    if not item.location:
        raise _Broken("no image URL")
    if "://" in item.location:
        return _download(item.location, timeout, retries)
    try:
        return Path(item.location).read_bytes()
    except OSError as e:
        raise _Broken(f"cannot read the file: {e.strerror or e}") from None


@dataclass
class _Loaded:
    item: SourceImage
    pixels: Pixels | None = None  # the model's inputs for this one image
    vector: np.ndarray | None = None  # or its vector, embedded by a child process
    broken: str = ""
    unreachable: bool = False


def _load(
    item: SourceImage,
    cache_dir: Path,
    encoder: ClipEncoder,
    timeout: float,
    retries: int,
    stop: threading.Event,
) -> _Loaded:
    """Read, decode, thumbnail and preprocess one image; a broken row comes back with its reason."""
    target = cache_dir / f"{item.id}.jpg"
    if stop.is_set():  # the run was interrupted: touch nothing more
        return _Loaded(item, broken="interrupted")
    try:
        thumb = None
        if (item.source != "folder" or Path(item.location) == target) and target.exists():
            # A thumbnail left by an interrupted run: reuse it instead of downloading again.
            try:
                thumb = _decode(target.read_bytes()).convert("RGB")
            except _Broken:
                thumb = None
        if thumb is None:
            if Path(item.location) == target:
                raise _Broken("its thumbnail is missing or unreadable")
            data = _read_bytes(item, timeout, retries)
            if stop.is_set():
                return _Loaded(item, broken="interrupted")
            thumb = _write_thumbnail(data, _decode(data), target)
        return _Loaded(item, pixels=encoder.preprocess_images([thumb]))
    except _Broken as e:
        return _Loaded(item, broken=str(e), unreachable=e.unreachable)


# ---------------------------------------------------------------------------------------------------
# The pipeline


def _yield_to_model() -> None:
    """Run this worker thread at a lower CPU priority: with the read-ahead queue full, decoding can
    wait, while a model thread that loses its core stalls the whole batch (Linux: per-thread nice)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux or not allowed: normal priority works too
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _present(store: VectorStore, ids: Sequence[str]) -> set[str]:
    present: set[str] = set()
    for i in range(0, len(ids), _ID_CHECK_CHUNK):
        present |= store.ids_present(ids[i : i + _ID_CHECK_CHUNK])
    return present


class _DaemonPool:
    """Worker threads that never hold up the process's exit (a download may hang for its full
    timeout; ``ThreadPoolExecutor`` joins its threads at exit, this pool does not)."""

    def __init__(self, workers: int, name: str) -> None:
        import queue

        self._tasks: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        _yield_to_model()
        while True:
            task = self._tasks.get()
            if task is None:
                return
            future, fn = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:  # handed to the waiting thread, as concurrent.futures does
                future.set_exception(e)

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` in a worker; its result or exception arrives in the returned future."""
        future: Future[T] = Future()
        self._tasks.put((future, fn))
        return future

    def shutdown(self) -> None:
        """Let the workers finish their current task and stop (without waiting for them)."""
        for _ in self._threads:
            self._tasks.put(None)


def check_model(store: VectorStore, encoder: Encoder) -> None:
    """Refuse a model other than the collection's, naming both (:class:`ModelMismatch`), or one
    whose vectors have another size than the table's (:class:`DimensionMismatch`)."""
    recorded = store.model()
    if recorded is not None and not recorded.same_model(encoder.identity):
        raise ModelMismatch(recorded.describe(), encoder.identity.describe())
    if store.dim and store.dim != encoder.dim:
        raise DimensionMismatch(store.dim, encoder.dim, "VDX_CLIP_MODEL does not match the image table")


def ingest_images(
    images: Sequence[SourceImage],
    store: VectorStore,
    encoder: ClipEncoder,
    cache_dir: Path,
    *,
    source: str,
    workers: int = 4,
    batch_size: int = 32,
    timeout: float = 20.0,
    retries: int = 2,
    progress: bool = True,
    events: CollectionEvents | None = None,
    replaces: Mapping[str, Sequence[str]] | None = None,
    stop: threading.Event | None = None,
    report: IngestReport | None = None,
    in_child: bool = False,
) -> IngestReport:
    """Thumbnail, embed and insert ``images`` not yet stored; broken ones are listed in the report.

    ``replaces[id]`` are the ids of rows that the image's row supersedes (a changed file): they and
    their thumbnails are removed once the new row is stored. Setting ``stop`` ends the run as
    Ctrl-C does (:class:`IngestInterrupted`). Each stored batch is published on ``events``.
    With ``in_child`` images are read and embedded in a child process (see :func:`_load_in_child`).
    """
    started = time.perf_counter()
    if report is None:
        report = IngestReport(source=source, total=len(images))
    replaces = replaces or {}
    stop = stop or threading.Event()
    if store.count():
        check_model(store, encoder)
    # Look up stored ids before touching the model, so a finished ingest re-runs in seconds.
    present = _present(store, [im.id for im in images])
    todo = [im for im in images if im.id not in present]
    report.unchanged += len(images) - len(todo)
    if not todo:
        report.seconds += time.perf_counter() - started
        return report
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_temporary_files(cache_dir)  # left by a run that was killed
    # The model loads in the first worker that decodes an image (the others wait on its lock), so a
    # re-run whose remaining rows are all broken never pays for it.
    schema_ready = False
    load = _load_in_child if in_child else _load_in_threads
    loads = load(todo, cache_dir, encoder, _Reading(workers, batch_size, timeout, retries), stop)
    batch: list[_Loaded] = []
    loaded_ok = unreachable = 0
    bar = tqdm(
        total=len(todo),
        unit="img",
        desc=f"ingest {source}",
        file=sys.stderr,
        disable=None if progress else True,
    )

    def flush() -> None:
        nonlocal schema_ready
        if not batch:
            return
        if not schema_ready:
            if not store.dim:
                store.dim = encoder.dim  # a new database: the model decides the vector size
            elif store.dim != encoder.dim:
                raise DimensionMismatch(
                    store.dim, encoder.dim, "VDX_CLIP_MODEL does not match the image table"
                )
            store.ensure_schema()
            if store.model() is None:
                store.record_model(encoder.identity)
            schema_ready = True

        if batch[0].vector is not None:  # embedded by the child process
            vectors = np.stack([b.vector for b in batch if b.vector is not None])
        else:
            vectors = encoder.embed_pixels([b.pixels for b in batch if b.pixels is not None])
        items = [b.item for b in batch]
        rows = ImageBatch(
            ids=[i.id for i in items],
            urls=[i.url for i in items],
            vectors=vectors,
            captions=[i.caption for i in items],
            sources=[i.source for i in items],
        )
        batch.clear()
        old = sorted({o for i in items for o in replaces.get(i.id, ()) if o != i.id})
        with _ctrl_c_deferred():
            store.insert(rows)
            if old:
                store.delete(old)
            for i in items:
                if replaces.get(i.id):
                    report.changed += 1
                    report.rekeys.update(dict.fromkeys(_path_keys(replaces[i.id], Path(i.location)), i.id))
                else:
                    report.new += 1
        for o in old:
            with contextlib.suppress(OSError):
                (cache_dir / f"{o}.jpg").unlink()
        if events is not None:
            events.publish(ImagesIngested(ids=tuple(rows.ids), source=source, replaced=tuple(old)))
        bar.update(len(items))

    try:
        for loaded in loads:
            if loaded.broken:
                report.broken.append(
                    (loaded.item.location if source == "folder" else loaded.item.id, loaded.broken)
                )
                log.info("skipped %s: %s", loaded.item.location or loaded.item.id, loaded.broken)
                bar.update(1)
                bar.set_postfix(broken=len(report.broken), refresh=False)
                if loaded.unreachable and not loaded_ok:
                    unreachable += 1
                    if unreachable >= UNREACHABLE_AFTER:
                        raise SourceUnreachable(unreachable, loaded.broken)
            else:
                loaded_ok += 1
                batch.append(loaded)
                if _batch_full(len(batch), batch_size, first=not schema_ready):
                    flush()
        flush()
    except KeyboardInterrupt:
        stop.set()
        _exit_at_second_ctrl_c()
        report.seconds += time.perf_counter() - started
        raise IngestInterrupted(report) from None
    finally:
        stop.set()
        loads.close()
        bar.close()
        remove_temporary_files(cache_dir, only_mine=True)
    report.seconds += time.perf_counter() - started
    return report


def _batch_full(n: int, batch_size: int, *, first: bool) -> bool:
    """Whether ``n`` images make a batch to embed: the first batch is a quarter of the size, so the
    model starts while the pipeline fills."""
    return n >= (max(1, batch_size // 4) if first else batch_size)


def _wait(ready: Callable[[float], bool], stop: threading.Event) -> None:
    """Wait until ``ready(timeout)`` says yes, waking up now and then so that ``stop`` is seen while
    downloads hang (then :class:`KeyboardInterrupt`, as Ctrl-C)."""
    while not ready(0.2):
        if stop.is_set():
            raise KeyboardInterrupt


@dataclass(frozen=True)
class _Reading:
    """How images are read: by how many worker threads, in batches of what size, with what
    download timeout and retries."""

    workers: int
    batch_size: int
    timeout: float
    retries: int


def _load_in_threads(
    todo: Sequence[SourceImage],
    cache_dir: Path,
    encoder: ClipEncoder,
    reading: _Reading,
    stop: threading.Event,
) -> Generator[_Loaded, None, None]:
    """Each of ``todo`` loaded (:func:`_load`) by ``workers`` threads, in order, with a bounded
    read-ahead: memory stays flat on 25k images."""
    window = max(2 * reading.batch_size, 4 * reading.workers)
    pool = _DaemonPool(reading.workers, "vdx-ingest")
    pending: deque[Future[_Loaded]] = deque()
    queue: Iterator[SourceImage] = iter(todo)

    def refill() -> None:
        while len(pending) < window:
            item = next(queue, None)
            if item is None:
                return
            pending.append(
                pool.submit(
                    functools.partial(
                        _load, item, cache_dir, encoder, reading.timeout, reading.retries, stop
                    )
                )
            )

    try:
        refill()
        while pending:
            future = pending.popleft()

            def done(timeout: float, future: Future[_Loaded] = future) -> bool:
                return bool(futures.wait([future], timeout).done)

            _wait(done, stop)
            refill()  # keep the workers busy while the caller embeds
            yield future.result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown()


CHILD_NICE = 10  # the child process that embeds a served ingest yields the CPU to the bot


@dataclass(frozen=True)
class _ChildJob:
    """What the child process of :func:`_load_in_child` needs (sent pickled; no open objects)."""

    items: Sequence[SourceImage]
    cache_dir: Path
    model: str
    device: str
    torch_threads: int | None
    fingerprint_cache: Path | None
    reading: _Reading


def _load_in_child(
    todo: Sequence[SourceImage],
    cache_dir: Path,
    encoder: ClipEncoder,
    reading: _Reading,
    stop: threading.Event,
) -> Generator[_Loaded, None, None]:
    """As :func:`_load_in_threads`, and embedded, in a child process at a lower priority: a bot that
    serves an ingest keeps its own interpreter (and its GIL) for answering chats, and inserts the
    vectors that come back. The child is killed when the run stops early."""
    import multiprocessing

    job = _ChildJob(
        items=list(todo),
        cache_dir=cache_dir,
        model=encoder.model_name,
        device=encoder.requested_device,
        torch_threads=encoder.torch_threads,
        fingerprint_cache=encoder.fingerprint_cache,
        reading=reading,
    )
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or locks inherited
    ours, theirs = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(theirs, job), name="vdx-ingest-child", daemon=True)
    child.start()
    theirs.close()

    def died() -> IngestError:
        child.join(5)
        return IngestError(f"the image worker process ended unexpectedly (exit status {child.exitcode})")

    def ready(timeout: float) -> bool:
        if ours.poll(timeout):
            return True
        if not child.is_alive() and not ours.poll():
            raise died()
        return False

    try:
        while True:
            _wait(ready, stop)
            try:
                message = ours.recv()
            except EOFError:
                raise died() from None
            kind = message[0]
            if kind == "broken":
                _, i, reason, unreachable = message
                yield _Loaded(todo[i], broken=reason, unreachable=unreachable)
            elif kind == "rows":
                _, indices, vectors = message
                for i, vector in zip(indices, vectors, strict=True):
                    yield _Loaded(todo[i], vector=vector)
            elif kind == "error":
                raise IngestError(message[1])
            else:  # "done"
                return
    finally:
        if child.is_alive():
            child.kill()
        child.join(5)
        ours.close()
        remove_temporary_files(cache_dir)  # half-written thumbnails of a killed child


def _child_main(conn: Any, job: _ChildJob) -> None:
    """The child process of :func:`_load_in_child`: load, embed, send back by batch."""
    from core.encoder import ClipEncoder

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it kills us
    with contextlib.suppress(OSError):
        os.nice(CHILD_NICE)
    try:
        encoder = ClipEncoder(
            job.model,
            device=job.device,
            torch_threads=job.torch_threads,
            batch_size=job.reading.batch_size,
            fingerprint_cache=job.fingerprint_cache,
        )
        ready: list[tuple[int, _Loaded]] = []

        def send_rows() -> None:
            if ready:
                vectors = encoder.embed_pixels([b.pixels for _, b in ready if b.pixels is not None])
                conn.send(("rows", [i for i, _ in ready], vectors))
                ready.clear()

        loads = _load_in_threads(job.items, job.cache_dir, encoder, job.reading, threading.Event())
        sent = False
        for i, loaded in enumerate(loads):
            if loaded.broken:
                conn.send(("broken", i, loaded.broken, loaded.unreachable))
                continue
            ready.append((i, loaded))
            if _batch_full(len(ready), job.reading.batch_size, first=not sent):
                send_rows()
                sent = True
        send_rows()
        conn.send(("done",))
    except (BrokenPipeError, EOFError, ConnectionResetError):
        return  # the parent is gone or stopped the run
    except Exception as e:
        log.exception("the image worker process failed")
        with contextlib.suppress(OSError):
            conn.send(("error", str(e)[:300] or type(e).__name__))
    finally:
        conn.close()


def _exit_at_second_ctrl_c() -> None:
    """After the first Ctrl-C the run is winding down; a second one ends the process at once."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))


def _path_keys(old_ids: Sequence[str], path: Path) -> list[str]:
    """Those of ``old_ids`` that are a path-based id vdx 0.1 gave ``path`` (relative to some parent)."""
    keys = {stable_id(path.relative_to(parent).as_posix()) for parent in path.parents}
    return [i for i in old_ids if i in keys]


def ingest_unsplash(
    path: Path,
    store: VectorStore,
    encoder: ClipEncoder,
    settings: Settings,
    *,
    limit: int | None = None,
    workers: int = 16,
    batch_size: int = 32,
    timeout: float = 20.0,
    retries: int = 2,
    progress: bool = True,
    events: CollectionEvents | None = None,
    stop: threading.Event | None = None,
) -> IngestReport:
    """Download, thumbnail, embed and store the photos of an Unsplash Lite ``photos.tsv*``."""
    images = read_unsplash(path, limit)
    return ingest_images(
        images,
        store,
        encoder,
        settings.image_cache_dir,
        source="unsplash",
        workers=workers,
        batch_size=batch_size,
        timeout=timeout,
        retries=retries,
        progress=progress,
        events=events,
        stop=stop,
    )


@dataclass
class FolderPlan:
    """What a folder ingest has to do, decided from the files' content ids and the stored rows."""

    todo: list[SourceImage]
    replaces: dict[str, list[str]]  # new id -> ids of the rows it supersedes (same path, other bytes)
    moves: list[SourceImage]  # stored content whose only path is gone, found under a new path
    gone: list[str]  # ids of rows below the folder whose file no longer exists


def plan_folder(
    root: Path, images: Sequence[SourceImage], store: VectorStore, report: IngestReport
) -> FolderPlan:
    """Sort the folder's files into new, changed, unchanged, moved and duplicate (counted in ``report``)."""
    prefix = root.resolve().as_uri().rstrip("/") + "/"
    below = store.urls_with_prefix(prefix)
    by_url: dict[str, list[str]] = {}
    for image_id, url in below:
        by_url.setdefault(url, []).append(image_id)
    stored = {h.id: h.url for h in store.get(list(dict.fromkeys(im.id for im in images)))}
    scanned = {im.url for im in images}
    # The copy a row already points at stays the stored one; otherwise the first in path order.
    first: dict[str, SourceImage] = {im.id: im for im in images if stored.get(im.id) == im.url}
    for im in images:
        first.setdefault(im.id, im)
    plan = FolderPlan(todo=[], replaces={}, moves=[], gone=[])
    for im in images:
        if first[im.id] is not im:
            report.duplicates.append((im.location, first[im.id].location))
            continue
        stale = [i for i in by_url.get(im.url, []) if i != im.id]
        if im.id in stored:
            if stale:  # this path now holds bytes stored under another path: drop its old row
                plan.gone.extend(stale)
            if stored[im.id] == im.url:
                report.unchanged += 1
            elif _file_exists(stored[im.id]):
                report.duplicates.append((im.location, _path_of(stored[im.id])))
            else:
                plan.moves.append(im)
        else:
            plan.todo.append(im)
            if stale:
                plan.replaces[im.id] = stale
    replaced = {o for olds in plan.replaces.values() for o in olds}
    for image_id, url in below:
        if url not in scanned and image_id not in replaced and not _file_exists(url):
            plan.gone.append(image_id)
    plan.gone = sorted(set(plan.gone) - {im.id for im in plan.moves})
    return plan


def _path_of(url: str) -> str:
    return urllib.request.url2pathname(urllib.parse.urlsplit(url).path)


def _file_exists(url: str) -> bool:
    return url.startswith("file://") and Path(_path_of(url)).is_file()


def _relocate(store: VectorStore, moves: Sequence[SourceImage]) -> None:
    """Point the rows of moved files at their new paths (the vectors stay as they are)."""
    if not moves:
        return
    ids, vectors = store.vectors([m.id for m in moves])
    by_id = {m.id: m for m in moves}
    rows = ImageBatch(
        ids=ids,
        urls=[by_id[i].url for i in ids],
        vectors=vectors,
        captions=[by_id[i].caption for i in ids],
        sources=["folder"] * len(ids),
    )
    with _ctrl_c_deferred():
        store.delete(ids)
        store.insert(rows)


def ingest_folder(
    path: Path,
    store: VectorStore,
    encoder: ClipEncoder,
    settings: Settings,
    *,
    limit: int | None = None,
    workers: int = 2,
    batch_size: int = 32,
    progress: bool = True,
    prune: bool = False,
    events: CollectionEvents | None = None,
    stop: threading.Event | None = None,
    in_child: bool = False,
) -> IngestReport:
    """Bring the collection in line with every jpg/jpeg/png/webp below ``path``.

    New files are embedded and stored, changed files re-embedded (their old rows and thumbnails
    replaced), byte-identical copies stored once and reported, and with ``prune`` the rows of files
    that are gone from disk removed.
    """
    started = time.perf_counter()
    report = IngestReport(source=f"folder {path.resolve()}")
    hashes = FileHashes(settings.data_dir / "file-hashes.sqlite3")
    try:
        images = read_folder(path, limit, hashes=hashes, broken=report.broken, workers=max(2, workers))
    finally:
        hashes.close()
    report.total = len(images) + len(report.broken)
    if not report.total:
        raise IngestError(f"no jpg, jpeg, png or webp images below {path.resolve()}")
    remember_folder(settings, path)
    if store.count():
        check_model(store, encoder)
    plan = plan_folder(path, images, store, report)
    _relocate(store, plan.moves)
    report.moved = len(plan.moves)
    report.unchanged += len(plan.moves)
    report.seconds = time.perf_counter() - started
    ingest_images(
        plan.todo,
        store,
        encoder,
        settings.image_cache_dir,
        source="folder",
        workers=workers,
        batch_size=batch_size,
        progress=progress,
        events=events,
        replaces=plan.replaces,
        stop=stop,
        report=report,
        in_child=in_child,
    )
    started = time.perf_counter()
    if prune and plan.gone:
        with _ctrl_c_deferred():
            report.removed = store.delete(plan.gone)
        for image_id in plan.gone:
            with contextlib.suppress(OSError):
                cache_path(settings, image_id).unlink()
        if events is not None:
            events.publish(ImagesIngested(ids=(), source="folder", removed=tuple(plan.gone)))
    else:
        report.gone = len(plan.gone)
    report.seconds += time.perf_counter() - started
    return report


REEMBED_SUFFIX = "__reembed"


def reembed(
    store: VectorStore,
    encoder: ClipEncoder,
    settings: Settings,
    *,
    workers: int = 2,
    batch_size: int = 32,
    progress: bool = True,
    events: CollectionEvents | None = None,
    stop: threading.Event | None = None,
    in_child: bool = False,
) -> IngestReport:
    """Embed every stored image again with ``encoder``, from its thumbnail; resumable.

    The new vectors go to a side table (``<table>__reembed``, with its own model record) while the
    collection keeps answering searches with the old ones; an interrupted run continues where it
    stopped. Once every row is done the side table takes the collection's place in one rename and
    the new model is recorded. Rows without a thumbnail (precomputed vectors) cannot be re-embedded:
    they are listed as broken and left out of the new collection.
    """
    started = time.perf_counter()
    rows = store.all_rows()
    report = IngestReport(source="reembed", total=len(rows))
    side = store.sibling(REEMBED_SUFFIX)
    recorded = side.model()
    if side.dim and (recorded is None or not recorded.same_model(encoder.identity)):
        side.drop()  # a re-embed with yet another model was interrupted: start over
        side = store.sibling(REEMBED_SUFFIX)
    side.dim = encoder.dim
    side.ensure_schema()
    if side.model() is None:
        side.record_model(encoder.identity)
    images = [
        SourceImage(
            id=r.id,
            url=r.url,
            caption=r.caption,
            source=r.source,
            location=str(cache_path(settings, r.id)),
        )
        for r in rows
    ]
    report.seconds = time.perf_counter() - started
    ingest_images(
        images,
        side,
        encoder,
        settings.image_cache_dir,
        source="reembed",
        workers=workers,
        batch_size=batch_size,
        progress=progress,
        stop=stop,
        report=report,
        in_child=in_child,
    )
    started = time.perf_counter()
    with _ctrl_c_deferred():
        store.replace_with(side)
        store.record_model(encoder.identity)
    if events is not None:
        events.publish(ImagesIngested(ids=tuple(r.id for r in rows), source="reembed"))
    report.seconds += time.perf_counter() - started
    return report


FOLDERS_FILE = "folders.txt"  # in the data dir: every folder ingested, one absolute path a line


def remember_folder(settings: Settings, path: Path) -> None:
    """Record ``path`` as an ingested folder, so exports can name its images relative to it."""
    root = str(path.resolve())
    known = ingested_folders(settings)
    if Path(root) not in known:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with (settings.data_dir / FOLDERS_FILE).open("a", encoding="utf-8") as f:
            f.write(root + "\n")


def ingested_folders(settings: Settings) -> list[Path]:
    """The folders ``vdx ingest folder`` has read into this data dir, deepest first."""
    try:
        lines = (settings.data_dir / FOLDERS_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return sorted({Path(line) for line in lines if line.strip()}, key=lambda p: -len(p.parts))


def shared_url(url: str, folders: Sequence[Path]) -> str:
    """``url`` as it may be shown to other people: a folder image (``file://``) by its path relative to
    the ingested folder it came from (else by its file name), never by the server's absolute path."""
    if not url.startswith("file://"):
        return url
    path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    for root in folders:
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.name


# ---------------------------------------------------------------------------------------------------
# Precomputed vectors (clip-retrieval's layout: img_emb/img_emb_0.npy + metadata/metadata_0.parquet)


@dataclass(frozen=True)
class VectorPart:
    """One ``.npy`` matrix and the metadata table with a row per vector."""

    vectors: Path
    metadata: Path


def _part_key(path: Path) -> tuple[int, str]:
    digits = re.findall(r"\d+", path.stem)
    return (int(digits[-1]) if digits else -1, path.name)


def _metadata_for(npy: Path) -> Path:
    stem = npy.stem
    names = [stem]
    if stem.startswith("img_emb_"):
        names.append("metadata_" + stem.removeprefix("img_emb_"))
    names.append("metadata")
    for folder in (npy.parent, npy.parent.parent / "metadata"):
        for name in names:
            for suffix in (".parquet", ".csv"):
                candidate = folder / f"{name}{suffix}"
                if candidate.is_file():
                    return candidate
    raise IngestError(
        f"no metadata for {npy}: expected {names[-2] if len(names) > 2 else stem}.parquet (or .csv) "
        "next to it or in ../metadata/, with an id, url or image_path column"
    )


def vector_parts(path: Path) -> list[VectorPart]:
    """The ``.npy`` + metadata pairs at ``path``: one ``.npy`` file, or a directory of parts."""
    if not path.exists():
        raise IngestError(f"no such file or directory: {path}")
    if path.is_file():
        if path.suffix != ".npy":
            raise IngestError(f"{path} is not a .npy matrix")
        return [VectorPart(path, _metadata_for(path))]
    npys = sorted((path / "img_emb").glob("img_emb_*.npy"), key=_part_key) or sorted(
        path.glob("*.npy"), key=_part_key
    )
    if not npys:
        raise IngestError(f"no .npy files in {path} or {path / 'img_emb'}")
    return [VectorPart(n, _metadata_for(n)) for n in npys]


def _open_matrix(path: Path) -> np.ndarray:
    try:
        matrix = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise IngestError(f"cannot read {path} as a .npy matrix: {e}") from e
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise IngestError(f"{path} holds a {matrix.shape} array; expected a matrix (n, dim)")
    return matrix


def vectors_dim(path: Path) -> int:
    """Dimension of the vectors at ``path`` (all parts must agree)."""
    dims = {_open_matrix(p.vectors).shape[1] for p in vector_parts(path)}
    if len(dims) != 1:
        raise IngestError(f"the parts under {path} have different dimensions: {sorted(dims)}")
    return dims.pop()


def _read_metadata(path: Path) -> dict[str, list[str]]:
    import pandas as pd

    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            wanted = [c for c in ("id", "url", "image_path", "caption") if c in schema.names]
            frame = pq.read_table(path, columns=wanted).to_pandas()
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise IngestError(f"cannot read the metadata {path}: {e}") from e

    def column(name: str) -> list[str] | None:
        if name not in frame.columns:
            return None
        return frame[name].fillna("").astype(str).tolist()

    urls, paths = column("url"), column("image_path")
    ids = column("id")
    if ids is None:
        keys = urls if urls is not None else paths
        if keys is None:
            raise IngestError(
                f"{path} needs an id, url or image_path column (found: {', '.join(frame.columns)})"
            )
        ids = [stable_id(k) for k in keys]
    n = len(ids)
    return {
        "id": ids,
        "url": urls if urls is not None else (paths if paths is not None else [""] * n),
        "caption": column("caption") or [""] * n,
    }


def ingest_vectors(
    path: Path,
    store: VectorStore,
    *,
    chunk_rows: int = 50_000,
    progress: bool = True,
) -> IngestReport:
    """Load precomputed embeddings (normalised on the way in) with their ids, urls and captions."""
    started = time.perf_counter()
    report = IngestReport(source="vectors")
    parts = vector_parts(path)
    store.ensure_schema()
    check_existing = store.count() > 0  # an empty table needs no per-chunk id lookups
    seen: set[str] = set()
    matrices = [(_open_matrix(p.vectors), p) for p in parts]
    bar = tqdm(
        total=sum(m.shape[0] for m, _ in matrices),
        unit="vec",
        desc="ingest vectors",
        file=sys.stderr,
        disable=None if progress else True,
        unit_scale=True,
    )
    try:
        for matrix, part in matrices:
            if matrix.shape[1] != store.dim:
                raise DimensionMismatch(store.dim, matrix.shape[1], f"{part.vectors}")
            meta = _read_metadata(part.metadata)
            if len(meta["id"]) != matrix.shape[0]:
                raise IngestError(
                    f"{part.metadata} has {len(meta['id'])} rows but {part.vectors} has {matrix.shape[0]} vectors"
                )
            report.total += matrix.shape[0]
            for start in range(0, matrix.shape[0], chunk_rows):
                stop = min(start + chunk_rows, matrix.shape[0])
                _insert_chunk(store, report, seen, check_existing, meta, matrix, start, stop)
                bar.update(stop - start)
    except KeyboardInterrupt:
        report.seconds = time.perf_counter() - started
        raise IngestInterrupted(report) from None
    finally:
        bar.close()
    report.seconds = time.perf_counter() - started
    return report


def _insert_chunk(
    store: VectorStore,
    report: IngestReport,
    seen: set[str],
    check_existing: bool,
    meta: dict[str, list[str]],
    matrix: np.ndarray,
    start: int,
    stop: int,
) -> None:
    vectors = np.asarray(matrix[start:stop], dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    ids = meta["id"][start:stop]
    present = _present(store, ids) if check_existing else set()
    keep: list[int] = []
    for i, image_id in enumerate(ids):
        if not image_id:
            report.broken.append((f"row {start + i}", "empty id"))
        elif not np.isfinite(norms[i]) or norms[i] == 0:
            report.broken.append((image_id, "zero or non-finite vector"))
        elif image_id in present or image_id in seen:
            report.unchanged += 1
        else:
            seen.add(image_id)
            keep.append(i)
    if not keep:
        return
    index = np.asarray(keep)
    normalised = vectors[index] / norms[index, None]
    rows = ImageBatch(
        ids=[ids[i] for i in keep],
        urls=[meta["url"][start + i] for i in keep],
        vectors=np.ascontiguousarray(normalised, dtype=np.float32),
        captions=[meta["caption"][start + i] for i in keep],
        sources=["vectors"] * len(keep),
    )
    with _ctrl_c_deferred():
        store.insert(rows)
        report.new += len(keep)
