"""The ``vdx`` command line: ingest, search, sessions, export, info, index and bot. Domain errors become one-line messages."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from core.config import Settings
from core.errors import DimensionMismatch, EmptyDataset, IngestError, VdxError

if TYPE_CHECKING:
    from PIL.Image import Image

    from core.encoder import ClipEncoder
    from core.records import IndexStatus
    from core.store import VectorStore

log = logging.getLogger("vdx")

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (all commands, with help and examples)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="vdx", description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt)
    parser.add_argument("--data-dir", type=Path, help="data directory (VDX_DATA_DIR, default ./data)")
    parser.add_argument(
        "--db-url", help="chdb:///abs/path or http(s)://user:password@host:port/db (VDX_DB_URL)"
    )
    parser.add_argument(
        "--dialect", choices=["auto", "clickhouse", "myscale"], help="SQL dialect (VDX_DB_DIALECT)"
    )
    parser.add_argument("--table", help="image table name (VDX_TABLE, default images)")
    parser.add_argument(
        "--model", help="image (and text) model: hub name or local directory (VDX_CLIP_MODEL)"
    )
    parser.add_argument(
        "--text-model", help="a separate text tower for concepts, e.g. M-CLIP (VDX_TEXT_MODEL)"
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where the model runs (VDX_DEVICE)")
    parser.add_argument("--threads", type=_positive, help="torch CPU threads (VDX_TORCH_THREADS)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = commands.add_parser(
        "ingest",
        help="add images to the store (unsplash, folder or vectors)",
        description="Embed images and store them with a thumbnail; resumable: a second run skips stored ids.",
        formatter_class=fmt,
        epilog="examples:\n  vdx ingest unsplash photos.tsv000 --limit 1000\n  vdx ingest folder ~/Pictures\n"
        "  vdx ingest vectors embeddings/",
    )
    kinds = ingest.add_subparsers(dest="kind", required=True, metavar="SOURCE")
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
        "Ids come from the relative paths, so running it again only adds new files.",
        epilog="example:\n  vdx ingest folder ~/Pictures --limit 200",
        formatter_class=fmt,
    )
    folder.add_argument("path", type=Path, help="folder of photos")
    folder.add_argument("--workers", type=_positive, default=2, help="reader/decoder threads (default 2)")
    for sub in (unsplash, folder):
        sub.add_argument("--limit", type=_positive, help="only the first N images of the source")
        sub.add_argument(
            "--batch-size", type=_positive, default=32, help="images per model batch (default 32)"
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
        description="Write what SESSION taught: labels with each voter's vote and a soft label (the share of "
        "👍), every match with its score, and the classifier (classifier.json). Formats: csv, parquet, "
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
        "data_dir": args.data_dir,
        "db_url": args.db_url,
        "db_dialect": args.dialect,
        "table": args.table,
        "clip_model": args.model,
        "text_model": args.text_model,
        "device": args.device,
        "torch_threads": args.threads,
    }
    changes = {k: v for k, v in overrides.items() if v is not None}
    return settings.with_(**changes) if changes else settings


@contextmanager
def _store(settings: Settings, dim: int | None = None) -> Iterator[VectorStore]:
    from core.store import open_store

    store = open_store(settings, dim=dim)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _encoder(settings: Settings, batch_size: int = 32) -> Iterator[ClipEncoder]:
    from core.encoder import ClipEncoder

    encoder = ClipEncoder(
        settings.clip_model,
        device=settings.device,
        torch_threads=settings.torch_threads,
        batch_size=batch_size,
        text_model=settings.text_model,
    )
    try:
        yield encoder
    finally:
        encoder.close()


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    """``vdx ingest unsplash|folder|vectors PATH``."""
    from core import ingest

    if args.kind == "vectors":
        dim = ingest.vectors_dim(args.path)
        with _store(settings, dim=dim) as store:
            report = ingest.ingest_vectors(args.path, store, chunk_rows=args.chunk_rows)
    else:
        # Read the source first: a missing file or wrong columns fail before the model loads.
        if args.kind == "unsplash":
            images = ingest.read_unsplash(args.path, args.limit)
        else:
            images = ingest.read_folder(args.path, args.limit)
            if not images:
                raise IngestError(f"no jpg, jpeg, png or webp images below {args.path}")
        # The store is opened without a vector size so that a finished ingest re-runs without the model.
        with _encoder(settings, args.batch_size) as encoder, _store(settings) as store:
            report = ingest.ingest_images(
                images,
                store,
                encoder,
                settings.image_cache_dir,
                source=args.kind,
                workers=args.workers,
                batch_size=args.batch_size,
            )
    print(report.summary())
    return 0


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    """``vdx search [TEXT] [--image PATH] | --classifier FILE [-k N] [--json]``."""
    from core.query import compose, parse

    if args.classifier is not None:
        if args.text.strip() or args.image is not None:
            raise VdxError("--classifier takes no TEXT or --image: it lists what the classifier accepts")
        return _search_classifier(args, settings)
    query = parse(args.text, photo=args.image is not None)  # bad syntax fails before anything loads
    image = _read_image(args.image) if args.image is not None else None
    with _store(settings) as store:
        if store.count() == 0:
            raise EmptyDataset()
        with _encoder(settings) as encoder:
            if encoder.dim != store.dim:
                raise DimensionMismatch(
                    store.dim, encoder.dim, "VDX_CLIP_MODEL does not match the image table"
                )
            if any(encoder.text_truncated(t) for t in query.terms):
                log.warning("the text is longer than the model reads; only the start is used")
            photo = encoder.embed_images([image])[0] if image is not None else None
            hits = store.knn(compose(query, encoder.embed_texts, photo), args.k)
    if args.json:
        print(json.dumps([h._asdict() for h in hits], ensure_ascii=False, indent=2))
    else:
        width = max((len(h.id) for h in hits), default=2)
        print(f"{'#':>3}  {'id':<{width}}  distance  url")
        for rank, h in enumerate(hits, 1):
            print(f"{rank:>3}  {h.id:<{width}}  {h.distance:8.4f}  {h.url}")
    return 0


def _search_classifier(args: argparse.Namespace, settings: Settings) -> int:
    from core.explorer import TOP_WITHOUT_BOUNDARY
    from core.export import read_classifier

    model = read_classifier(args.classifier)
    with _store(settings) as store:
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
            with _store(settings) as store:
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
            with _store(settings) as store:
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


def cmd_info(args: argparse.Namespace, settings: Settings) -> int:
    """``vdx info``."""
    with _store(settings) as store:
        info = store.info()
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
            "text_model": settings.text_model or None,
            "image_cache": str(settings.image_cache_dir),
        }
        print(json.dumps(data, indent=2))
        return 0
    rows = [
        ("backend", info.backend),
        ("url", info.url),
        ("dialect", info.dialect),
        ("table", info.table + (f" (Distributed over cluster {info.cluster})" if info.cluster else "")),
        ("rows", str(info.rows)),
        ("dim", str(info.dim)),
        ("index", _index_text(info.index)),
        ("model", settings.clip_model),
        ("text model", settings.text_model or "the model's own"),
        ("image cache", str(settings.image_cache_dir)),
    ]
    for name, value in rows:
        print(f"{name + ':':<13}{value}")
    return 0


def cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    """``vdx index create|status|drop``."""
    with _store(settings) as store:
        if args.action == "create":
            status = store.index_create(wait=not args.no_wait, progress=_index_progress)
        elif args.action == "drop":
            status = store.index_drop()
        else:
            status = store.index_status()
    print(f"index: {_index_text(status)}")
    return 0


def cmd_bot(args: argparse.Namespace, settings: Settings) -> int:
    """``vdx bot``: hands over to ``bot.app.run_bot``."""
    try:
        from bot.app import run_bot
    except ModuleNotFoundError as e:
        raise VdxError(f"the Telegram bot is not available: cannot import {e.name or 'bot.app'}") from e
    options = {"listen": args.listen, "port": args.port}
    run_bot(
        settings,
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
    "sessions": cmd_sessions,
    "export": cmd_export,
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``vdx``; returns the exit status (0 ok, 2 error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "search" and not args.text.strip() and args.image is None and args.classifier is None:
        parser.error("search needs TEXT (the concept), --image PATH or --classifier classifier.json")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[args.command](args, _settings(args))
    except VdxError as e:
        log.info("%s", type(e).__name__, exc_info=True)  # the whole chain, with -v
        print(f"vdx: error: {one_line(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # no domain error describes it: one line here, the traceback with -v
        log.info("unexpected error", exc_info=True)
        what = one_line(f"{type(e).__name__}: {e}", ERROR_CHARS - 60)
        print(f"vdx: error: unexpected {what} (run with -v for the details)", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as e:
        from core.ingest import IngestInterrupted

        if isinstance(e, IngestInterrupted):
            print(
                f"interrupted; {e.report.stored} images stored, run again to resume",
                file=sys.stderr,
            )
        else:
            print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
