"""Ingest: Unsplash Lite TSV, a folder of photos, or precomputed vectors -> thumbnails + rows in the store.

Images flow through a bounded pipeline: a thread pool downloads/reads, decodes, writes the thumbnail
and preprocesses each image while the calling thread embeds finished batches and inserts them, so the
model never waits on I/O. Rows are inserted batch by batch and only after their thumbnails exist, so
an interrupted run leaves a consistent store; a second run skips stored ids.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import logging
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
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from core.errors import DimensionMismatch, IngestError
from core.records import ImageBatch

if TYPE_CHECKING:
    from core.config import Settings
    from core.encoder import ClipEncoder, Pixels
    from core.store import VectorStore

log = logging.getLogger(__name__)

THUMBNAIL_MAX_SIDE = 1280
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


@dataclass
class IngestReport:
    """What an ingest did: rows stored, ids already present, broken rows ``(id, reason)``."""

    source: str
    total: int = 0
    stored: int = 0
    skipped_existing: int = 0
    broken: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        """Stored rows per second of wall time."""
        return self.stored / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """Human-readable summary, broken rows listed by id."""
        rate = f" ({self.images_per_second:.1f}/s)" if self.stored else ""
        lines = [
            f"{self.source}: {self.stored} stored, {self.skipped_existing} already present, "
            f"{len(self.broken)} broken, of {self.total} in {self.seconds:.1f} s{rate}"
        ]
        lines += [f"  broken {image_id}: {reason}" for image_id, reason in self.broken]
        return "\n".join(lines)


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C during an ingest; ``report`` says how much was stored (the rest resumes on the next run)."""

    def __init__(self, report: IngestReport) -> None:
        super().__init__(f"interrupted; {report.stored} images stored")
        self.report = report


class _Broken(Exception):
    """A row that cannot be ingested (404, not an image, empty URL); counted, listed and skipped."""


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
    """A short id derived from a path or URL: the same key always gives the same id."""
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


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


def read_folder(path: Path, limit: int | None = None) -> list[SourceImage]:
    """Every jpg/jpeg/png/webp below ``path`` (recursive, sorted), id from the relative path."""
    if not path.exists():
        raise IngestError(f"no such directory: {path}")
    if not path.is_dir():
        raise IngestError(f"not a directory: {path} (vdx ingest folder takes a folder of photos)")
    root = path.resolve()
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if limit is not None:
        files = files[:limit]
    images = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        images.append(
            SourceImage(
                id=stable_id(rel),
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
            raise _Broken(f"download failed after {retries + 1} tries: {reason}") from None
    raise AssertionError("unreachable")


def _decode(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        if image.format == "JPEG":
            image.draft("RGB", (THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE))  # decode big JPEGs at 1/2..1/8 scale
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
    tmp = target.with_name(f".{target.name}.{threading.get_ident()}.tmp")
    try:
        # (a JPEG decoded at reduced scale by draft() has a smaller size than its header says)
        if small_jpeg and image.size == Image.open(io.BytesIO(data)).size:
            tmp.write_bytes(data)  # already a small upright JPEG: keep the bytes, skip a re-encode
            thumb = image
        else:
            thumb = ImageOps.exif_transpose(image)
            if thumb.mode != "RGB":
                thumb = _to_rgb(thumb)
            thumb.thumbnail((THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE), Image.Resampling.BICUBIC)
            thumb.save(tmp, "JPEG", quality=88)
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise IngestError(f"cannot write the thumbnail {target}: {e}") from e
    return thumb


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
    broken: str = ""


def _load(item: SourceImage, cache_dir: Path, encoder: ClipEncoder, timeout: float, retries: int) -> _Loaded:
    """Read, decode, thumbnail and preprocess one image; a broken row comes back with its reason."""
    target = cache_dir / f"{item.id}.jpg"
    try:
        thumb = None
        if item.source != "folder" and target.exists():
            # A thumbnail left by an interrupted run: reuse it instead of downloading again.
            try:
                thumb = _decode(target.read_bytes()).convert("RGB")
            except _Broken:
                thumb = None
        if thumb is None:
            data = _read_bytes(item, timeout, retries)
            thumb = _write_thumbnail(data, _decode(data), target)
        return _Loaded(item, pixels=encoder.preprocess_images([thumb]))
    except _Broken as e:
        return _Loaded(item, broken=str(e))


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
) -> IngestReport:
    """Thumbnail, embed and insert ``images`` not yet stored; broken ones are listed in the report."""
    started = time.perf_counter()
    report = IngestReport(source=source, total=len(images))
    # Look up stored ids before touching the model, so a finished ingest re-runs in seconds.
    present = _present(store, [im.id for im in images])
    todo = [im for im in images if im.id not in present]
    report.skipped_existing = len(images) - len(todo)
    if not todo:
        report.seconds = time.perf_counter() - started
        return report
    cache_dir.mkdir(parents=True, exist_ok=True)
    # The model loads in the first worker that decodes an image (the others wait on its lock), so a
    # re-run whose remaining rows are all broken never pays for it.
    schema_ready = False
    window = max(2 * batch_size, 4 * workers)  # bounded read-ahead: memory stays flat on 25k images
    pool = ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="vdx-ingest", initializer=_yield_to_model
    )
    pending: deque[Future[_Loaded]] = deque()
    queue: Iterator[SourceImage] = iter(todo)
    batch: list[_Loaded] = []
    bar = tqdm(
        total=len(todo),
        unit="img",
        desc=f"ingest {source}",
        file=sys.stderr,
        disable=None if progress else True,
    )

    def refill() -> None:
        while len(pending) < window:
            item = next(queue, None)
            if item is None:
                return
            pending.append(pool.submit(_load, item, cache_dir, encoder, timeout, retries))

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
            schema_ready = True

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
        with _ctrl_c_deferred():
            store.insert(rows)
            report.stored += len(items)
        bar.update(len(items))

    try:
        refill()
        while pending:
            loaded = pending.popleft().result()
            refill()
            if loaded.broken:
                report.broken.append((loaded.item.id, loaded.broken))
                log.info("skipped %s: %s", loaded.item.id, loaded.broken)
                bar.update(1)
                bar.set_postfix(broken=len(report.broken), refresh=False)
            else:
                batch.append(loaded)
                if len(batch) >= batch_size:
                    flush()
        flush()
    except KeyboardInterrupt:
        report.seconds = time.perf_counter() - started
        raise IngestInterrupted(report) from None
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
    report.seconds = time.perf_counter() - started
    return report


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
    )


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
) -> IngestReport:
    """Thumbnail, embed and store every jpg/jpeg/png/webp below ``path``."""
    images = read_folder(path, limit)
    if not images:
        raise IngestError(f"no jpg, jpeg, png or webp images below {path}")
    remember_folder(settings, path)
    return ingest_images(
        images,
        store,
        encoder,
        settings.image_cache_dir,
        source="folder",
        workers=workers,
        batch_size=batch_size,
        progress=progress,
    )


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
            report.skipped_existing += 1
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
        report.stored += len(keep)
