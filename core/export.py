"""A taught concept as a dataset: its labels, its matches and its classifier, in several formats.

One :class:`Bundle` holds everything a session produced; one writer per format turns it into files:

* ``csv`` — ``labels.csv``, ``matches.csv``, ``classifier.json``;
* ``parquet`` — ``labels.parquet``, ``matches.parquet``, ``classifier.json``;
* ``jsonl`` — ``labels.jsonl``, ``matches.jsonl``, ``classifier.json``;
* ``imagefolder`` — ``<concept>/{positive,negative,matches}/`` with the images (a link to a folder
  original, else a copy of the cached thumbnail), beside the ``csv`` files;
* ``html`` — one self-contained ``index.html``: a grid of thumbnails (embedded as data URIs) with
  score and label, that opens offline.

The bot sends ``matches.csv`` through :func:`matches_document`, which compresses and, past
Telegram's document limit, cuts it.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from core.errors import VdxError
from core.records import Scored
from core.spreadsheet import csv_text
from core.state import Export, Session

if TYPE_CHECKING:
    from core.explorer import Explorer
    from core.state import State

FORMATS: tuple[str, ...] = ("csv", "parquet", "jsonl", "imagefolder", "html")
# Telegram bots send documents of up to 50 MB (https://core.telegram.org/bots/api#senddocument).
TELEGRAM_DOCUMENT_LIMIT = 50 * 1000 * 1000
GZIP_ABOVE = 1_000_000  # a CSV larger than this goes out gzip-compressed
MATCH_COLUMNS = ["image_id", "url", "caption", "score", "label"]


@dataclass(frozen=True)
class Bundle:
    """Everything a session produced: its labels (with each voter's vote), matches and classifier."""

    export: Export
    matches: list[Scored]
    threshold: float | None
    total_matches: int = 0
    sources: dict[str, str] = field(default_factory=dict)  # image id -> "folder" | "unsplash" | ...

    @property
    def session(self) -> Session:
        return self.export.session

    @property
    def labels(self) -> dict[str, int]:
        """Image id -> +1/-1 for every labelled image (ties left out)."""
        return {r.image_id: r.label for r in self.export.rows if r.label}


@dataclass(frozen=True)
class Document:
    """A file for the chat: its name, bytes, and how many of the rows it holds."""

    filename: str
    content: bytes
    rows: int
    total: int

    @property
    def cut(self) -> bool:
        return self.rows < self.total


@dataclass
class Written:
    """What a writer wrote: the files, and images it could not find."""

    files: list[Path] = field(default_factory=list)
    images: int = 0
    missing: list[str] = field(default_factory=list)


# --- rows ---------------------------------------------------------------------------------------


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    """UTF-8 CSV with ``\\n`` line ends, safe to open in a spreadsheet (``core.spreadsheet``)."""
    return csv_text([header, *rows]).encode()


def soft_label(votes: dict[int, int]) -> float:
    """The share of 👍 among an image's votes (1.0: everyone said yes, 0.0: everyone said no)."""
    return sum(1 for v in votes.values() if v > 0) / len(votes) if votes else 0.5


def label_records(bundle: Bundle) -> list[dict[str, Any]]:
    """One record per voted image: label (the sign of the vote sum), soft label, and each voter's vote."""
    out = []
    for r in bundle.export.rows:
        out.append(
            {
                "image_id": r.image_id,
                "url": r.url,
                "label": r.label,
                "soft_label": round(soft_label(r.votes), 4),
                "votes_up": sum(1 for v in r.votes.values() if v > 0),
                "votes_down": sum(1 for v in r.votes.values() if v < 0),
                "votes": {str(uid): v for uid, v in r.votes.items()},
            }
        )
    return out


def match_records(bundle: Bundle, url: Callable[[str], str] = str) -> list[dict[str, Any]]:
    """One record per match, best first: id, url (through ``url``), caption, score and the chat's label."""
    labels = bundle.labels
    return [
        {
            "image_id": m.id,
            "url": url(m.url),
            "caption": m.caption,
            "score": round(m.score, 6),
            "label": labels.get(m.id),
        }
        for m in bundle.matches
    ]


def _match_row(r: dict[str, Any]) -> list[Any]:
    return [
        r["image_id"],
        r["url"],
        r["caption"],
        f"{r['score']:.6f}",
        "" if r["label"] is None else r["label"],
    ]


def labels_csv(bundle: Bundle) -> bytes:
    """``image_id,url,label,soft_label,<one column per voter>``."""
    voters = bundle.export.voters
    header = ["image_id", "url", "label", "soft_label", *(_voter(uid, name) for uid, name in voters)]
    rows = [
        [
            r.image_id,
            r.url,
            r.label,
            f"{soft_label(r.votes):.4f}",
            *(r.votes.get(uid, "") for uid, _ in voters),
        ]
        for r in bundle.export.rows
    ]
    return csv_bytes(header, rows)


def matches_csv(bundle: Bundle) -> bytes:
    """``image_id,url,caption,score,label``, best first."""
    return csv_bytes(MATCH_COLUMNS, (_match_row(r) for r in match_records(bundle)))


def classifier_json(bundle: Bundle) -> str:
    """The classifier: concept, weight, prior, boundary, label counts; enough for ``vdx search --classifier``."""
    model = json.loads(bundle.export.classifier_json())
    model["prior"] = [round(float(x), 7) for x in bundle.session.prior]
    model["threshold"] = None if bundle.threshold is None else round(float(bundle.threshold), 7)
    model["matches"] = bundle.total_matches
    return json.dumps(model, ensure_ascii=False)


def _voter(user_id: int, name: str) -> str:
    return f"{name} ({user_id})" if name else str(user_id)


# --- the chat's document ------------------------------------------------------------------------


def matches_document(
    bundle: Bundle,
    limit: int = TELEGRAM_DOCUMENT_LIMIT,
    gzip_above: int = GZIP_ABOVE,
    url: Callable[[str], str] = str,
) -> Document:
    """``matches.csv`` for the chat: gzip-compressed when large, cut to the best rows that fit ``limit``;
    ``url`` rewrites each image's URL (folder images: a path relative to their folder)."""
    records = match_records(bundle, url)
    total = len(records)

    def encode(n: int) -> tuple[str, bytes]:
        data = csv_bytes(MATCH_COLUMNS, (_match_row(r) for r in records[:n]))
        if len(data) <= gzip_above:
            return "matches.csv", data
        return "matches.csv.gz", gzip.compress(data, compresslevel=6, mtime=0)

    n = total
    name, content = encode(n)
    while len(content) > limit and n > 0:
        n = int(n * limit / len(content) * 0.95)  # compressed size is about proportional to rows
        name, content = encode(n)
    return Document(name, content, n, total)


# --- writers ------------------------------------------------------------------------------------


def _write(path: Path, data: bytes | str, written: Written) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    written.files.append(path)


def write_csv(bundle: Bundle, out: Path, images: ImageSource) -> Written:
    """``labels.csv``, ``matches.csv`` and ``classifier.json``."""
    w = Written()
    _write(out / "labels.csv", labels_csv(bundle), w)
    _write(out / "matches.csv", matches_csv(bundle), w)
    _write(out / "classifier.json", classifier_json(bundle), w)
    return w


def write_jsonl(bundle: Bundle, out: Path, images: ImageSource) -> Written:
    """``labels.jsonl``, ``matches.jsonl`` (one JSON object a line) and ``classifier.json``."""
    w = Written()
    for name, records in (("labels", label_records(bundle)), ("matches", match_records(bundle))):
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        _write(out / f"{name}.jsonl", lines, w)
    _write(out / "classifier.json", classifier_json(bundle), w)
    return w


def write_parquet(bundle: Bundle, out: Path, images: ImageSource) -> Written:
    """``labels.parquet`` (votes as a map of user id to vote), ``matches.parquet``, ``classifier.json``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    w = Written()
    labels = label_records(bundle)
    label_table = pa.table(
        {
            "image_id": pa.array([r["image_id"] for r in labels], pa.string()),
            "url": pa.array([r["url"] for r in labels], pa.string()),
            "label": pa.array([r["label"] for r in labels], pa.int8()),
            "soft_label": pa.array([r["soft_label"] for r in labels], pa.float32()),
            "votes": pa.array(
                [[(int(k), int(v)) for k, v in r["votes"].items()] for r in labels],
                pa.map_(pa.int64(), pa.int8()),
            ),
        }
    )
    matches = match_records(bundle)
    match_table = pa.table(
        {
            "image_id": pa.array([r["image_id"] for r in matches], pa.string()),
            "url": pa.array([r["url"] for r in matches], pa.string()),
            "caption": pa.array([r["caption"] for r in matches], pa.string()),
            "score": pa.array([r["score"] for r in matches], pa.float32()),
            "label": pa.array([r["label"] for r in matches], pa.int8()),
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    for name, table in (("labels", label_table), ("matches", match_table)):
        pq.write_table(table, out / f"{name}.parquet")
        w.files.append(out / f"{name}.parquet")
    _write(out / "classifier.json", classifier_json(bundle), w)
    return w


def write_imagefolder(bundle: Bundle, out: Path, images: ImageSource) -> Written:
    """``<concept>/{positive,negative,matches}/`` holding the images, beside the ``csv`` files."""
    w = write_csv(bundle, out, images)
    root = out / folder_name(bundle.session.concept)
    labels = bundle.labels
    groups = {
        "positive": [i for i, v in labels.items() if v > 0],
        "negative": [i for i, v in labels.items() if v < 0],
        "matches": [m.id for m in bundle.matches],
    }
    urls = {r.image_id: r.url for r in bundle.export.rows} | {m.id: m.url for m in bundle.matches}
    for group, ids in groups.items():
        folder = root / group
        folder.mkdir(parents=True, exist_ok=True)
        for image_id in ids:
            if images.place(image_id, urls.get(image_id, ""), folder):
                w.images += 1
            elif image_id not in w.missing:
                w.missing.append(image_id)
    return w


def write_html(bundle: Bundle, out: Path, images: ImageSource) -> Written:
    """One ``index.html`` that opens offline: the labelled images and the matches as a grid of
    thumbnails (embedded data URIs) with score and label."""
    w = Written()
    labels = bundle.labels
    scores = {m.id: m.score for m in bundle.matches}
    urls = {r.image_id: r.url for r in bundle.export.rows} | {m.id: m.url for m in bundle.matches}
    concept = html.escape(bundle.session.concept)

    def card(image_id: str) -> str:
        data = images.thumbnail(image_id)
        if data is None:
            w.missing.append(image_id)
            img = '<div class="none">no image</div>'
        else:
            w.images += 1
            img = f'<img alt="{html.escape(image_id)}" src="data:image/jpeg;base64,{base64.b64encode(data).decode()}">'
        label = labels.get(image_id)
        mark = {1: "👍", -1: "👎"}.get(label or 0, "")
        score = f"{scores[image_id]:.3f}" if image_id in scores else "—"
        return (
            f'<figure data-id="{html.escape(image_id)}" data-label="{label or 0}" data-score="{score}">{img}'
            f"<figcaption><b>{score}</b> {mark} <span>{html.escape(image_id)}</span>"
            f"<br><small>{html.escape(urls.get(image_id, ''))}</small></figcaption></figure>"
        )

    sections = [
        ("Matches", [m.id for m in bundle.matches]),
        ("Labelled 👍", [i for i, v in labels.items() if v > 0]),
        ("Labelled 👎", [i for i, v in labels.items() if v < 0]),
    ]
    boundary = "none yet" if bundle.threshold is None else f"score above {bundle.threshold:.3f}"
    body = "".join(
        f'<h2>{name} <small>({len(ids)})</small></h2><div class="grid">{"".join(card(i) for i in ids)}</div>'
        for name, ids in sections
    )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>vdx · {concept}</title>"
        "<style>body{font-family:sans-serif;margin:1em}"
        ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:8px}"
        "figure{margin:0;border:1px solid #ccc;padding:4px}figure img{width:100%;display:block}"
        ".none{height:120px;background:#eee}figcaption{font-size:12px;word-break:break-all}</style>"
        f"</head><body><h1>{concept}</h1><p>{bundle.total_matches} matches ({boundary}), "
        f"{len(labels)} labels.</p>{body}</body></html>"
    )
    _write(out / "index.html", page, w)
    return w


Writer = Callable[[Bundle, Path, "ImageSource"], Written]
WRITERS: dict[str, Writer] = {
    "csv": write_csv,
    "parquet": write_parquet,
    "jsonl": write_jsonl,
    "imagefolder": write_imagefolder,
    "html": write_html,
}


def write(bundle: Bundle, out: Path, fmt: str, images: ImageSource) -> Written:
    """Write ``bundle`` under ``out`` in format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in WRITERS:
        raise VdxError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    try:
        return WRITERS[fmt](bundle, out, images)
    except OSError as e:
        raise VdxError(f"cannot write the export to {out}: {e.strerror or e}") from None


# --- images -------------------------------------------------------------------------------------


class ImageSource:
    """Where an export finds an image: the folder original for folder images, else the cached thumbnail."""

    def __init__(self, cache_dir: Path, sources: dict[str, str], copy: bool = False) -> None:
        self.cache_dir = cache_dir
        self.sources = sources
        self.copy = copy

    def original(self, image_id: str, url: str) -> Path | None:
        """The original file of a folder image, if it is still there."""
        if self.sources.get(image_id) != "folder" or not url.startswith("file://"):
            return None
        path = Path(unquote(urlsplit(url).path))
        return path if path.is_file() else None

    def cached(self, image_id: str) -> Path | None:
        """The cached thumbnail, if there is one."""
        path = self.cache_dir / f"{image_id}.jpg"
        return path if path.is_file() else None

    def thumbnail(self, image_id: str) -> bytes | None:
        """The cached JPEG thumbnail's bytes (what the html page embeds)."""
        path = self.cached(image_id)
        try:
            return path.read_bytes() if path else None
        except OSError:
            return None

    def place(self, image_id: str, url: str, folder: Path) -> bool:
        """Put the image in ``folder``: a link to (or copy of) a folder original, else a copy of the
        cached thumbnail. False when neither exists."""
        original = self.original(image_id, url)
        name = safe_name(image_id)
        if original is not None:
            target = folder / (name + original.suffix.lower())
            target.unlink(missing_ok=True)
            if self.copy:
                shutil.copy2(original, target)
            else:
                try:
                    os.symlink(original, target)
                except OSError:  # a file system without links
                    shutil.copy2(original, target)
            return True
        cached = self.cached(image_id)
        if cached is None:
            return False
        shutil.copyfile(cached, folder / (name + ".jpg"))
        return True


def safe_name(text: str, limit: int = 120) -> str:
    """A file name from an id or concept: letters, digits, ``-``, ``_`` and ``.`` kept, the rest ``_``."""
    name = re.sub(r"[^\w.-]+", "_", text, flags=re.UNICODE).strip("._") or "image"
    return name[:limit]


def folder_name(concept: str) -> str:
    """The ``<concept>`` folder of an imagefolder export."""
    return safe_name(" ".join(concept.split()).lower(), 80) or "concept"


# --- assembling a bundle ------------------------------------------------------------------------

ALL = 2**62  # "no limit" for a page of matches


async def bundle_for(state: State, explorer: Explorer, session_id: int) -> Bundle:
    """A session's labels, every match of its classifier (in the store, one scan) and the classifier."""
    import asyncio

    export = await state.export(session_id)
    session = export.session
    labels = await state.labels(session_id)
    es = explorer.resume(session.concept, session.prior, session.weights, labels)
    es.boundary = session.boundary  # kept with the weight at its last fit
    query = await asyncio.to_thread(explorer.match_query, es)
    page = await asyncio.to_thread(explorer.matches, query, ALL)
    hits = await asyncio.to_thread(explorer.store.get, [r.image_id for r in export.rows])
    sources = {h.id: h.source for h in hits} | {m.id: m.source for m in page.items}
    return Bundle(export, page.items, query.threshold, page.total, sources)


# --- reading a classifier back --------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ClassifierFile:
    """A ``classifier.json`` read back: what ``vdx search --classifier`` applies."""

    concept: str
    weights: Any  # float32 (dim,), unit
    threshold: float | None


def read_classifier(path: Path) -> ClassifierFile:
    """Read a ``classifier.json`` written by ``/export`` or ``vdx export``; one clear error if it is not one."""
    import numpy as np

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VdxError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VdxError(f"{path} is not a classifier.json ({type(e).__name__})") from None
    weights = data.get("weights") if isinstance(data, dict) else None
    if not isinstance(weights, list) or not weights or not all(isinstance(x, (int, float)) for x in weights):
        raise VdxError(f"{path} has no 'weights' list of numbers: is it a classifier.json from /export?")
    w = np.asarray(weights, dtype=np.float32)
    norm = float(np.linalg.norm(w))
    if not np.isfinite(norm) or norm == 0:
        raise VdxError(f"{path}: the weights are zero or not finite")
    threshold = data.get("threshold")
    if threshold is not None and not isinstance(threshold, (int, float)):
        raise VdxError(f"{path}: 'threshold' must be a number or null")
    return ClassifierFile(
        str(data.get("concept", "")), w / norm, None if threshold is None else float(threshold)
    )
