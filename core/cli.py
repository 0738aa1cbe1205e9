"""The ``vdx`` command line: ingest, search, sessions, export, info, index and bot. Domain errors become one-line messages."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from core import __version__
from core.config import Settings
from core.errors import (
    DimensionMismatch,
    EmptyDataset,
    SourceUnreachable,
    VdxError,
)

if TYPE_CHECKING:
    from PIL.Image import Image

    from core.encoder import ClipEncoder
    from core.events import CollectionEvents
    from core.records import IndexStatus
    from core.store import VectorStore

log = logging.getLogger("vdx")

EXIT_FAILED = 1  # a non-empty source of which nothing could be stored
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


@dataclass
class Runtime:
    """Where a command writes and what it may reuse: the bot serves commands with its open store and
    encoder (see ``core.service``); on the command line each command opens its own."""

    settings: Settings
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    store: VectorStore | None = None
    encoder: ClipEncoder | None = None
    events: CollectionEvents | None = None
    stop: threading.Event | None = None
    progress: bool = True
    ingest_lock: threading.Lock | None = None  # one ingest at a time in a serving process
    ingest_in_child: bool = False  # read and embed in a child process (the bot keeps answering chats)


DESCRIPTION = """\
Visual Dataset Explorer: explore an image collection by concept (CLIP text -> nearest images in a
ClickHouse-family vector database, embedded chDB by default) and teach a classifier with 👍/👎 in Telegram.

Configuration comes from the environment (VDX_DATA_DIR, VDX_DB_URL, VDX_DB_DIALECT, VDX_TABLE,
VDX_CLIP_MODEL, VDX_TEXT_MODEL, VDX_DEVICE, VDX_TORCH_THREADS, TELEGRAM_BOT_TOKEN); the options below
override it.
"""

EPILOG = """\
examples:
  vdx ingest folder ~/Pictures                      # your own photos, offline
  vdx ingest unsplash unsplash-lite/photos.tsv000   # Unsplash Lite (downloads ?w=640 images)
  vdx ingest vectors embeddings/                    # clip-retrieval output: img_emb/ + metadata/
  vdx search "a house by the lake" -k 9
  vdx search "a red car -truck"                     # minus a term; "a cat + a hat" adds one
  vdx search "at night" --image photo.jpg           # a photo moved toward the words
  vdx search --classifier classifier.json           # apply a classifier from /export or vdx export
  vdx sessions                                      # every session the bot has had
  vdx export 3 --out fox --format imagefolder       # a session's labels, matches and images
  vdx info
  vdx index create
  vdx bot
"""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


GLOBAL_OPTIONS = ("data_dir", "db_url", "dialect", "table", "model", "device", "threads", "verbose")


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every command takes, before or after its name (``vdx search x --data-dir d``)."""
    # Below the top level they default to "not given", so that a subcommand does not reset a value
    # given before its name.
    unset: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    group = parser.add_argument_group("global options (also accepted before the command)")
    group.add_argument("--data-dir", type=Path, help="data directory (VDX_DATA_DIR, default ./data)", **unset)
    group.add_argument(
        "--db-url", help="chdb:///abs/path or http(s)://user:password@host:port/db (VDX_DB_URL)", **unset
    )
    group.add_argument(
        "--dialect", choices=["auto", "clickhouse", "myscale"], help="SQL dialect (VDX_DB_DIALECT)", **unset
    )
    group.add_argument("--table", help="image table name (VDX_TABLE, default images)", **unset)
    group.add_argument(
        "--model", help="image (and text) model: hub name or local directory (VDX_CLIP_MODEL)", **unset
    )
    group.add_argument(
        "--text-model", help="a separate text tower for concepts, e.g. M-CLIP (VDX_TEXT_MODEL)", **unset
    )
    group.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="where the model runs (VDX_DEVICE)", **unset
    )
    group.add_argument("--threads", type=_positive, help="torch CPU threads (VDX_TORCH_THREADS)", **unset)
    group.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr", **unset)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose subcommands all take the global options."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if kwargs.get("add_help", True) and self.prog != "vdx":
            _global_options(self, top=False)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (all commands, with help and examples)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="vdx", description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"vdx {__version__}")
    _global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    ingest = commands.add_parser(
        "ingest",
        help="add images to the store (unsplash, folder or vectors)",
        description="Embed images and store them with a thumbnail; resumable: a second run skips stored ids.",
        formatter_class=fmt,
        epilog="examples:\n  vdx ingest unsplash photos.tsv000 --limit 1000\n  vdx ingest folder ~/Pictures\n"
        "  vdx ingest vectors embeddings/",
    )
    kinds = ingest.add_subparsers(dest="kind", required=True, metavar="SOURCE", parser_class=_Parser)
    unsplash = kinds.add_parser(
        "unsplash",
        help="an Unsplash Lite photos.tsv* (or a folder holding its parts)",
        description="Download (photo_image_url?w=640), thumbnail, embed and store Unsplash Lite photos. "
        "Broken rows (404, not an image, empty URL) are skipped and listed by photo_id at the end.",
        epilog="example:\n  vdx ingest unsplash unsplash-research-dataset-lite-latest/photos.tsv000 --limit 500",
        formatter_class=fmt,
    )
    unsplash.add_argument("path", type=Path, help="photos.tsv000 / photos.csv000, or the unzipped folder")
    unsplash.add_argument("--workers", type=_positive, default=16, help="parallel downloads (default 16)")
    folder = kinds.add_parser(
        "folder",
        help="every jpg/jpeg/png/webp below a folder",
        description="Thumbnail, embed and store every jpg/jpeg/png/webp below PATH (recursive, offline). "
        "An image's id comes from its content, so a file is stored once wherever it lies: running it "
        "again stores only new files, re-embeds changed ones (replacing their rows and thumbnails) and "
        "reports byte-identical copies as duplicates. --prune removes the images whose files are gone.",
        epilog="examples:\n  vdx ingest folder ~/Pictures --limit 200\n  vdx ingest folder ~/Pictures --prune",
        formatter_class=fmt,
    )
    folder.add_argument("path", type=Path, help="folder of photos")
    folder.add_argument("--workers", type=_positive, default=2, help="reader/decoder threads (default 2)")
    folder.add_argument(
        "--prune", action="store_true", help="remove stored images below PATH whose files are gone"
    )
    for sub in (unsplash, folder):
        sub.add_argument("--limit", type=_positive, help="only the first N images of the source")
        sub.add_argument(
            "--batch-size", type=_positive, default=32, help="images per model batch (default 32)"
        )
        sub.add_argument(
            "--reembed",
            action="store_true",
            help="first re-embed the whole collection with the configured model (from the thumbnails; "
            "resumable), then ingest",
        )
    vectors = kinds.add_parser(
        "vectors",
        help="precomputed embeddings: .npy + parquet/CSV (clip-retrieval layout)",
        description="Load precomputed embeddings: a directory with img_emb/img_emb_N.npy and "
        "metadata/metadata_N.parquet (what clip-retrieval inference writes), or one .npy with a sibling "
        ".parquet/.csv. Metadata columns: id (else derived from url or image_path), url or image_path, "
        "optional caption. Vectors are L2-normalised on the way in.",
        epilog="examples:\n  vdx ingest vectors embeddings_folder/\n  vdx ingest vectors img_emb_0.npy",
        formatter_class=fmt,
    )
    vectors.add_argument("path", type=Path, help="embeddings folder or .npy file")
    vectors.add_argument(
        "--chunk-rows", type=_positive, default=50_000, help="rows per insert (default 50000)"
    )

    search = commands.add_parser(
        "search",
        help="nearest images to a concept (text, composite, a photo plus words), or a classifier's matches",
        description="Embed the concept and print the k nearest images (id, distance, url). A '-' or '+' "
        "starting a word starts a term: 'red car -truck' pushes trucks down (score = similarity to the "
        "rest - 0.5 x similarity to the minus terms), 'a cat + a hat' looks for both. With --image the "
        "photo is the concept and TEXT moves it toward the words. With --classifier (a classifier.json from "
        "/export or `vdx export`) it prints the images that classifier accepts instead (id, score, url, best "
        "first, with how many match).",
        epilog='examples:\n  vdx search "a house by the lake"\n  vdx search "red sports car -truck" -k 20 --json'
        '\n  vdx search "at night" --image photo.jpg\n  vdx search --classifier fox/classifier.json -k 50',
        formatter_class=fmt,
    )
    search.add_argument("text", nargs="?", default="", help="the concept, in words")
    search.add_argument("--image", type=Path, help="a photo to search from (TEXT, if given, moves it)")
    search.add_argument("--classifier", type=Path, help="a classifier.json: list the images it accepts")
    search.add_argument("-k", type=_positive, default=9, help="how many images (default 9)")
    search.add_argument("--json", action="store_true", help="print a JSON list instead of a table")

    sessions = commands.add_parser(
        "sessions",
        help="every session: chat, concept, rounds, labels, matches, last activity",
        description="List the sessions in the state database (VDX_DATA_DIR/state.sqlite3), newest first. "
        "Matches are counted in the vector database with each session's classifier.",
        epilog="example:\n  vdx sessions --json",
        formatter_class=fmt,
    )
    sessions.add_argument("--json", action="store_true", help="print JSON")

    export = commands.add_parser(
        "export",
        help="write a session's labels, matches and classifier (csv, parquet, jsonl, imagefolder, html)",
        description="Write what SESSION taught: labels with each voter's vote and the combined soft label "
        "(in [-1, 1]), every match with its score, and the classifier (classifier.json). Formats: csv, parquet, "
        "jsonl; imagefolder (DIR/<concept>/{positive,negative,matches}/ with the images: links to folder "
        "originals, copies of cached thumbnails for downloaded ones, plus the csv files); html (one "
        "self-contained index.html, a grid of thumbnails with score and label, that opens offline).",
        epilog="examples:\n  vdx export 3 --out fox\n  vdx export 3 --out fox --format parquet\n"
        "  vdx export 3 --out fox --format imagefolder --copy\n  vdx export 3 --out fox --format html",
        formatter_class=fmt,
    )
    export.add_argument("session", type=_positive, help="session id (see `vdx sessions`)")
    export.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    export.add_argument(
        "--format",
        default="csv",
        choices=["csv", "parquet", "jsonl", "imagefolder", "html"],
        help="what to write (default csv)",
    )
    export.add_argument(
        "--copy", action="store_true", help="imagefolder: copy folder originals instead of linking them"
    )

    info = commands.add_parser(
        "info",
        help="backend, dialect, table, rows, dimension, index status",
        description="Show where the vectors live and what is in the image table.",
        epilog="example:\n  VDX_DB_URL=http://default:@localhost:8123/default vdx info",
        formatter_class=fmt,
    )
    info.add_argument("--json", action="store_true", help="print JSON")

    index = commands.add_parser(
        "index",
        help="create, inspect or drop the vector index (HNSW or MSTG)",
        description="Manage the vector index: vector_similarity('hnsw', 'cosineDistance', ...) on ClickHouse, "
        "an MSTG vector index on MyScale.",
        epilog="examples:\n  vdx index create\n  vdx index status\n  vdx index drop",
        formatter_class=fmt,
    )
    index.add_argument("action", choices=["create", "status", "drop"], help="what to do")
    index.add_argument(
        "--no-wait",
        action="store_true",
        help="create: return once the build has started instead of when every part has the index",
    )

    bot = commands.add_parser(
        "bot",
        help="run the Telegram bot (polling, or a webhook)",
        description="Run the Telegram bot. The token comes from TELEGRAM_BOT_TOKEN (ask @BotFather).",
        epilog="examples:\n  TELEGRAM_BOT_TOKEN=123:abc vdx bot\n"
        "  vdx bot --api-url http://127.0.0.1:8081/bot\n"
        "  vdx bot --webhook-url https://example.org/vdx --listen 0.0.0.0 --port 8443",
        formatter_class=fmt,
    )
    bot.add_argument(
        "--api-url", help="Bot API base URL, e.g. http://127.0.0.1:8081/bot (VDX_TELEGRAM_API_URL)"
    )
    bot.add_argument("--webhook-url", help="public URL Telegram posts updates to (default: long polling)")
    bot.add_argument(
        "--listen", default="127.0.0.1", help="address the webhook server binds (default 127.0.0.1)"
    )
    bot.add_argument("--port", type=_positive, default=8443, help="port of the webhook server (default 8443)")
    bot.add_argument(
        "--check", action="store_true", help="only check the token and load the model, then exit (0: ready)"
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with the command-line overrides applied."""
    settings = Settings.from_env()
    overrides: dict[str, object] = {
        "data_dir": getattr(args, "data_dir", None),
        "db_url": getattr(args, "db_url", None),
        "db_dialect": getattr(args, "dialect", None),
        "table": getattr(args, "table", None),
        "clip_model": getattr(args, "model", None),
        "text_model": getattr(args, "text_model", None),
        "device": getattr(args, "device", None),
        "torch_threads": getattr(args, "threads", None),
    }
    changes = {k: v for k, v in overrides.items() if v is not None}
    return settings.with_(**changes) if changes else settings


@contextmanager
def _store(rt: Runtime, dim: int | None = None, *, create: bool = True) -> Iterator[VectorStore]:
    """The runtime's store, or one opened for this command (and closed after it).

    ``create=False``: a command that only reads does not create an embedded database that is not
    there (it says where it looked instead).
    """
    if rt.store is not None:
        if dim is not None and rt.store.dim and rt.store.dim != dim:
            raise DimensionMismatch(rt.store.dim, dim, f"table {rt.settings.table!r}")
        yield rt.store
        return
    from core.store import open_store

    settings = rt.settings
    if not create and not settings.db_url and not (settings.embedded_db_path / "metadata").is_dir():
        raise EmptyDataset(str(settings.embedded_db_path.resolve()))
    store = open_store(settings, dim=dim)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _encoder(rt: Runtime, batch_size: int = 32) -> Iterator[ClipEncoder]:
    if rt.encoder is not None:
        yield rt.encoder
        return
    from core.encoder import ClipEncoder

    settings = rt.settings
    encoder = ClipEncoder(
        settings.clip_model,
        device=settings.device,
        torch_threads=settings.torch_threads,
        batch_size=batch_size,
        fingerprint_cache=settings.data_dir / "model-fingerprints.json",
        text_model=settings.text_model,
    )
    try:
        yield encoder
    finally:
        encoder.close()


def _where(rt: Runtime, store: VectorStore) -> str:
    url = getattr(store, "url", "")
    return url.removeprefix("chdb://") if url.startswith("chdb://") else url or str(rt.settings.data_dir)


def cmd_ingest(args: argparse.Namespace, rt: Runtime) -> int:
    """``vdx ingest unsplash|folder|vectors PATH``."""
    if rt.ingest_lock is None:
        return _ingest(args, rt)
    if not rt.ingest_lock.acquire(blocking=False):
        raise VdxError("the bot is running another ingest: wait for it to finish, then run this one")
    try:
        return _ingest(args, rt)
    finally:
        rt.ingest_lock.release()


def _ingest(args: argparse.Namespace, rt: Runtime) -> int:
    from core import ingest

    settings = rt.settings
    if args.kind == "vectors":
        dim = ingest.vectors_dim(args.path)
        with _store(rt, dim=dim) as store:
            report = ingest.ingest_vectors(args.path, store, chunk_rows=args.chunk_rows, progress=rt.progress)
    else:
        # Read an Unsplash table first: a missing file or wrong columns fail before the model loads.
        images = ingest.read_unsplash(args.path, args.limit) if args.kind == "unsplash" else None
        if args.kind == "folder":
            ingest.folder_files(args.path, 1)  # a missing folder fails before the database opens
        # The store is opened without a vector size so that a finished ingest re-runs without the model.
        with _encoder(rt, args.batch_size) as encoder, _store(rt) as store:
            if getattr(args, "reembed", False) and store.count():
                again = ingest.reembed(
                    store,
                    encoder,
                    settings,
                    workers=max(2, args.workers),
                    batch_size=args.batch_size,
                    progress=rt.progress,
                    events=rt.events,
                    stop=rt.stop,
                    in_child=rt.ingest_in_child,
                )
                _print_report(rt, again)
            common = dict(
                workers=args.workers,
                batch_size=args.batch_size,
                progress=rt.progress,
                events=rt.events,
                stop=rt.stop,
                in_child=rt.ingest_in_child,
            )
            if images is not None:
                report = ingest.ingest_images(
                    images, store, encoder, settings.image_cache_dir, source="unsplash", **common
                )
            else:
                report = ingest.ingest_folder(
                    args.path, store, encoder, settings, limit=args.limit, prune=args.prune, **common
                )
                if report.rekeys:  # the chats' votes follow the photos to their content ids
                    from core.state import rename_images

                    report.votes_kept = rename_images(settings.state_path, report.rekeys)
    return _print_report(rt, report)


def _print_report(rt: Runtime, report: object) -> int:
    from core.ingest import IngestReport, write_report_csv

    assert isinstance(report, IngestReport)
    if report.broken or report.duplicates:
        write_report_csv(report, rt.settings.data_dir.resolve() / "reports")
    print(report.summary(), file=rt.out)
    if report.failed:
        print(f"vdx: error: nothing of {report.total} could be stored (see the reasons above)", file=rt.err)
        return EXIT_FAILED
    return 0


def cmd_search(args: argparse.Namespace, rt: Runtime) -> int:
    """``vdx search [TEXT] [--image PATH] | --classifier FILE [-k N] [--json]``."""
    from core.ingest import check_model
    from core.query import compose, parse

    if args.classifier is not None:
        if args.text.strip() or args.image is not None:
            raise VdxError("--classifier takes no TEXT or --image: it lists what the classifier accepts")
        return _search_classifier(args, rt.settings)
    query = parse(args.text, photo=args.image is not None)  # bad syntax fails before anything loads
    image = _read_image(args.image) if args.image is not None else None
    with _store(rt, create=False) as store:
        if store.count() == 0:
            raise EmptyDataset(_where(rt, store))
        with _encoder(rt) as encoder:
            check_model(store, encoder)
            if any(encoder.text_truncated(t) for t in query.terms):
                log.warning("the text is longer than the model reads; only the start is used")
            photo = encoder.embed_images([image])[0] if image is not None else None
            hits = store.knn(compose(query, encoder.embed_texts, photo), args.k)
    out = rt.out
    if args.json:
        print(json.dumps([h._asdict() for h in hits], ensure_ascii=False, indent=2), file=out)
    else:
        width = max((len(h.id) for h in hits), default=2)
        print(f"{'#':>3}  {'id':<{width}}  distance  url", file=out)
        for rank, h in enumerate(hits, 1):
            print(f"{rank:>3}  {h.id:<{width}}  {h.distance:8.4f}  {h.url}", file=out)
    return 0


def _search_classifier(args: argparse.Namespace, settings: Settings) -> int:
    from core.explorer import TOP_WITHOUT_BOUNDARY
    from core.export import read_classifier

    model = read_classifier(args.classifier)
    with _store(Runtime(settings)) as store:
        if store.count() == 0:
            raise EmptyDataset()
        if store.dim != len(model.weights):
            raise DimensionMismatch(store.dim, len(model.weights), f"{args.classifier}")
        cap = TOP_WITHOUT_BOUNDARY if model.threshold is None else None
        page = store.matches(model.weights, model.threshold, args.k, cap=cap)
    if args.json:
        print(
            json.dumps(
                {
                    "total": page.total,
                    "threshold": page.threshold,
                    "matches": [m._asdict() for m in page.items],
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    if model.threshold is None:
        print(f"{model.concept}: no decision boundary; the top {page.total} by score")
    else:
        print(f"{model.concept}: {page.total} images score above {model.threshold:.4f}")
    width = max((len(m.id) for m in page.items), default=2)
    print(f"{'#':>3}  {'id':<{width}}  score    url")
    for rank, m in enumerate(page.items, 1):
        print(f"{rank:>3}  {m.id:<{width}}  {m.score:7.4f}  {m.url}")
    return 0


def cmd_sessions(args: argparse.Namespace, settings: Settings) -> int:
    """``vdx sessions [--json]``."""
    import asyncio

    from core.explorer import Explorer
    from core.state import State

    if not settings.state_path.exists():
        raise VdxError(f"no sessions yet: {settings.state_path} does not exist (the bot creates it)")

    async def collect() -> list[dict[str, object]]:
        state = await State.open(settings.state_path)
        try:
            summaries = await state.sessions()
            out = []
            with _store(Runtime(settings)) as store:
                explorer = Explorer(store)
                for s in summaries:
                    labels = await state.labels(s.session.id)
                    es = explorer.resume(s.session.concept, s.session.prior, s.session.weights, labels)
                    es.boundary = s.session.boundary  # kept with the weight at its last fit
                    query = explorer.match_query(es)
                    total = store.matches(
                        query.weights, query.threshold, 0, 0, query.excluded, query.cap
                    ).total
                    out.append(
                        {
                            "session": s.session.id,
                            "chat": s.session.chat_id,
                            "concept": s.session.concept,
                            "active": s.session.active,
                            "rounds": s.rounds,
                            "positive": s.positive,
                            "negative": s.negative,
                            "matches": total,
                            "boundary": query.threshold,
                            "last_activity": s.last_activity,
                        }
                    )
            return out
        finally:
            await state.close()

    rows = asyncio.run(collect())
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no sessions yet")
        return 0
    import time

    print(
        f"{'session':>7}  {'chat':>14}  {'rounds':>6}  {'labels':>9}  {'matches':>8}  {'last activity':<19}  concept"
    )
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(r["last_activity"])))  # type: ignore[arg-type]
        labels = f"+{r['positive']}/-{r['negative']}"
        matches = f"{r['matches']}" + ("" if r["boundary"] is not None else "*")
        concept = str(r["concept"])
        concept = concept if len(concept) <= 60 else concept[:59] + "…"
        mark = "" if r["active"] else " (ended)"
        print(
            f"{r['session']:>7}  {r['chat']:>14}  {r['rounds']:>6}  {labels:>9}  {matches:>8}  {when:<19}  {concept}{mark}"
        )
    if any(r["boundary"] is None for r in rows):
        print("* no decision boundary yet (no 👍 and 👎 both): the top 100 by score")
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    """``vdx export SESSION --out DIR [--format F] [--copy]``."""
    import asyncio

    from core import export
    from core.explorer import Explorer
    from core.state import State

    if not settings.state_path.exists():
        raise VdxError(f"no sessions yet: {settings.state_path} does not exist (the bot creates it)")

    async def build() -> export.Bundle:
        state = await State.open(settings.state_path)
        try:
            with _store(Runtime(settings)) as store:
                return await export.bundle_for(state, Explorer(store), args.session)
        finally:
            await state.close()

    bundle = asyncio.run(build())
    images = export.ImageSource(settings.image_cache_dir, bundle.sources, copy=args.copy)
    written = export.write(bundle, args.out, args.format, images)
    print(
        f"session {args.session} “{bundle.session.concept}”: {len(bundle.export.rows)} labelled images, "
        f"{bundle.total_matches} matches -> {args.out} ({args.format}, {len(written.files)} files"
        + (f", {written.images} images" if args.format in ("imagefolder", "html") else "")
        + ")"
    )
    if written.missing:
        print(
            f"{len(written.missing)} images had no original or cached thumbnail and were left out "
            f"(first: {', '.join(written.missing[:5])})",
            file=sys.stderr,
        )
    return 0


def _read_image(path: Path) -> Image:
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise VdxError(f"no such image: {path.resolve()}") from None
    except (OSError, UnidentifiedImageError) as e:
        raise VdxError(f"cannot read {path.resolve()} as an image ({type(e).__name__})") from None


def _index_text(status: IndexStatus) -> str:
    if not status.exists:
        return "none"
    return " ".join(part for part in (status.kind, status.detail) if part) or "present"


def _index_progress(status: IndexStatus) -> None:
    """One stderr line per change while ``vdx index create`` waits for the build."""
    if status.exists and status.state == "InProgress":
        print(
            f"index: building, {status.parts_built}/{status.parts_total} parts done",
            file=sys.stderr,
            flush=True,
        )


def cmd_info(args: argparse.Namespace, rt: Runtime) -> int:
    """``vdx info``: where the vectors live, what is stored, the collection's model and the configured one."""
    settings = rt.settings
    with _store(rt, create=False) as store:
        info = store.info()
    configured = settings.clip_model
    if rt.encoder is not None:
        configured = rt.encoder.identity.describe()
    else:
        from core.encoder import model_fingerprint

        fp = model_fingerprint(settings.clip_model, settings.data_dir / "model-fingerprints.json")
        configured = f"{settings.clip_model}{f' ({fp[:15]})' if fp else ''}"
    collection = info.model.describe() if info.model is not None else "not recorded"
    if args.json:
        data = {
            "backend": info.backend,
            "url": info.url,
            "dialect": info.dialect,
            "table": info.table,
            "cluster": info.cluster,
            "rows": info.rows,
            "dim": info.dim,
            "index": {
                "exists": info.index.exists,
                "kind": info.index.kind,
                "detail": info.index.detail,
                "state": info.index.state,
                "parts_built": info.index.parts_built,
                "parts_total": info.index.parts_total,
                "error": info.index.error,
            },
            "model": settings.clip_model,
            "collection_model": None
            if info.model is None
            else {"name": info.model.name, "dim": info.model.dim, "fingerprint": info.model.fingerprint},
            "configured_model": configured,
            "image_cache": str(settings.image_cache_dir.resolve()),
            "text_model": settings.text_model or None,
        }
        print(json.dumps(data, indent=2), file=rt.out)
        return 0
    rows = [
        ("backend", info.backend),
        ("url", info.url),
        ("dialect", info.dialect),
        ("table", info.table + (f" (Distributed over cluster {info.cluster})" if info.cluster else "")),
        ("rows", str(info.rows)),
        ("dim", str(info.dim)),
        ("index", _index_text(info.index)),
        ("model", collection),
        ("configured", configured),
        ("text model", settings.text_model or "the model's own"),
        ("image cache", str(settings.image_cache_dir.resolve())),
    ]
    for name, value in rows:
        print(f"{name + ':':<13}{value}", file=rt.out)
    if info.model is not None and collection != configured and not _same(info.model, rt):
        print("note: the configured model is not the collection's; search and ingest refuse it", file=rt.out)
    return 0


def _same(model: object, rt: Runtime) -> bool:
    from core.encoder import model_fingerprint
    from core.records import ModelIdentity

    assert isinstance(model, ModelIdentity)
    s = rt.settings
    fp = model_fingerprint(s.clip_model, s.data_dir / "model-fingerprints.json")
    return model.same_model(ModelIdentity(s.clip_model, model.dim, fp))


def cmd_index(args: argparse.Namespace, rt: Runtime) -> int:
    """``vdx index create|status|drop``."""
    with _store(rt, create=args.action != "status") as store:
        if args.action == "create":
            status = store.index_create(wait=not args.no_wait, progress=_index_progress)
        elif args.action == "drop":
            status = store.index_drop()
        else:
            status = store.index_status()
    print(f"index: {_index_text(status)}", file=rt.out)
    return 0


def cmd_bot(args: argparse.Namespace, rt: Runtime) -> int:
    """``vdx bot``: hands over to ``bot.app.run_bot``."""
    try:
        from bot.app import run_bot
    except ModuleNotFoundError as e:
        raise VdxError(f"the Telegram bot is not available: cannot import {e.name or 'bot.app'}") from e
    options = {"listen": args.listen, "port": args.port}
    run_bot(
        rt.settings,
        api_url=args.api_url,
        webhook_url=args.webhook_url,
        on_ready=lambda line: print(line, flush=True),
        check=args.check,
        **{k: v for k, v in options.items() if v is not None},  # unset: the bot's own defaults
    )
    return 0


COMMANDS = {
    "ingest": cmd_ingest,
    "search": cmd_search,
    "sessions": lambda args, rt: cmd_sessions(args, rt.settings),
    "export": lambda args, rt: cmd_export(args, rt.settings),
    "info": cmd_info,
    "index": cmd_index,
    "bot": cmd_bot,
}


ERROR_CHARS = 300
_NUMBER_RUN = re.compile(r"(?:[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?[,\s]+){8,}[-+]?[\d.eE+-]*")


def one_line(text: str, limit: int = ERROR_CHARS) -> str:
    """``text`` as one line of at most about ``limit`` characters; a run of numbers (a vector) is elided."""
    text = _NUMBER_RUN.sub("…", " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def run_command(command: str, args: argparse.Namespace, rt: Runtime) -> int:
    """Run one parsed command, turning domain errors into one line on ``rt.err`` and an exit status."""
    try:
        return COMMANDS[command](args, rt)
    except SourceUnreachable as e:
        print(f"vdx: error: {one_line(str(e))}", file=rt.err)
        return EXIT_FAILED
    except VdxError as e:
        log.info("%s", type(e).__name__, exc_info=True)  # the whole chain, with -v
        print(f"vdx: error: {one_line(str(e))}", file=rt.err)
        return EXIT_ERROR
    except Exception as e:  # no domain error describes it: one line here, the traceback with -v
        log.info("unexpected error", exc_info=True)
        what = one_line(f"{type(e).__name__}: {e}", ERROR_CHARS - 60)
        print(f"vdx: error: unexpected {what} (run with -v for the details)", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as e:
        from core.ingest import IngestInterrupted

        if isinstance(e, IngestInterrupted):
            print(f"interrupted; {e.report.stored} images stored, run again to resume", file=rt.err)
        else:
            print("interrupted", file=rt.err)
        return EXIT_INTERRUPTED


def _forwarded(command: str, args: argparse.Namespace, settings: Settings) -> int | None:
    """Run the command in the ``vdx bot`` that holds this embedded database, when one is serving."""
    from core import service

    if command not in service.SERVED or settings.db_url:
        return None
    conn = service.connect(settings)
    if conn is None:
        return None
    for key in ("path", "image"):  # the bot runs elsewhere: send absolute paths
        if getattr(args, key, None) is not None:
            setattr(args, key, Path(getattr(args, key)).resolve())
    print(
        f"vdx: the running bot holds {settings.embedded_db_path.resolve()}; it runs this command",
        file=sys.stderr,
    )
    return service.forward(conn, command, args, sys.stdout, sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``vdx``; returns the exit status (0 ok, 1 nothing stored, 2 error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "search" and not args.text.strip() and args.image is None and args.classifier is None:
        parser.error("search needs TEXT (the concept), --image PATH or --classifier classifier.json")
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = _settings(args)
        forwarded = _forwarded(args.command, args, settings)
    except VdxError as e:
        print(f"vdx: error: {one_line(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, lambda signum, frame: os._exit(EXIT_INTERRUPTED))
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if forwarded is not None:
        return forwarded
    code = run_command(args.command, args, Runtime(settings))
    if code == EXIT_INTERRUPTED:
        signal.signal(signal.SIGINT, lambda signum, frame: os._exit(EXIT_INTERRUPTED))
    return code


if __name__ == "__main__":
    sys.exit(main())
