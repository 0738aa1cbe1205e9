"""Domain errors. Each carries what is needed to explain it; the CLI and the bot translate them."""

from __future__ import annotations

import os


class VdxError(Exception):
    """Base of every error meant to be shown to a person (CLI message, chat reply)."""


class ConfigError(VdxError):
    """A setting in the environment is malformed."""


class ModelLoadError(VdxError):
    """A model named by ``VDX_CLIP_MODEL`` (or the text tower in ``VDX_TEXT_MODEL``) could not be loaded."""

    def __init__(self, model: str, reason: str, setting: str = "VDX_CLIP_MODEL") -> None:
        self.model = model
        self.reason = reason
        self.setting = setting
        what = "text model" if setting == "VDX_TEXT_MODEL" else "model"
        super().__init__(
            f"cannot load the {what} {model!r} ({setting}): {reason}. "
            f"Offline, set {setting} to a local model directory saved with save_pretrained() "
            "(see README)"
        )


class TextModelMismatch(VdxError):
    """The text tower in ``VDX_TEXT_MODEL`` was trained for another image model than the collection's."""

    def __init__(self, text_model: str, trained_for: str | None, image_model: str) -> None:
        self.text_model = text_model
        self.trained_for = trained_for
        self.image_model = image_model
        if trained_for is None:
            super().__init__(
                f"the text model {text_model!r} (VDX_TEXT_MODEL) does not say which image model it was "
                f'trained for, so it cannot be paired with {image_model!r}; add "image_model": '
                '"<name>" to its config.json if you know it'
            )
        else:
            super().__init__(
                f"the text model {text_model!r} (VDX_TEXT_MODEL) was trained for the image model "
                f"{trained_for!r}, but the images were embedded with {image_model!r}; unset "
                "VDX_TEXT_MODEL or choose a text model trained for that image model"
            )


class StoreError(VdxError):
    """The vector database rejected a request."""


class StoreUnavailable(StoreError):
    """The vector database cannot be reached (server down, wrong URL)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"the vector database at {url} is unavailable: {reason}")


class DatabaseLocked(StoreUnavailable):
    """Another process holds the embedded database directory."""

    def __init__(self, path: str) -> None:
        self.path = path
        VdxError.__init__(
            self,
            f"the embedded database at {path} is in use by another vdx process that does not serve "
            "commands (a running `vdx bot` runs them for you); stop it, or use a ClickHouse server "
            "via VDX_DB_URL",
        )
        self.url = f"chdb://{path}"
        self.reason = "locked"


class IndexBuildFailed(StoreError):
    """The server reports that building the vector index failed."""

    def __init__(self, table: str, reason: str) -> None:
        self.table = table
        self.reason = reason
        super().__init__(
            f"building the vector index on {table!r} failed: {reason} "
            "(the server keeps retrying; `vdx index drop` removes it)"
        )


class DimensionMismatch(StoreError):
    """Vectors of one size met a table or model of another."""

    def __init__(self, expected: int, got: int, where: str) -> None:
        self.expected = expected
        self.got = got
        super().__init__(f"{where}: expected {expected}-d vectors, got {got}-d")


class ModelMismatch(StoreError):
    """The configured model is not the one that embedded the collection."""

    def __init__(self, collection: str, configured: str, hint: str = "") -> None:
        self.collection = collection
        self.configured = configured
        super().__init__(
            f"the collection was embedded with {collection}, the configured model is {configured}; "
            + (hint or "re-embed with `vdx ingest folder PATH --reembed`")
        )


class EmptyDataset(VdxError):
    """The image table holds nothing yet; ``where`` names the database that was looked at."""

    def __init__(self, where: str = "") -> None:
        self.where = where
        at = f" in {where}" if where else ""
        super().__init__(f"no images yet{at} — run `vdx ingest` first (or point --data-dir at your data)")


class SourceUnreachable(VdxError):
    """An ingest source whose first downloads all failed to connect: the host is down or refusing."""

    def __init__(self, attempts: int, reason: str) -> None:
        self.attempts = attempts
        self.reason = reason
        super().__init__(
            f"the image host looks unreachable: the first {attempts} downloads all failed ({reason}); "
            "nothing more was tried — check the network and run again"
        )


class IngestError(VdxError):
    """An ingest source cannot be read (missing file, wrong columns)."""


class BadConcept(VdxError):
    """A concept text the encoder cannot use (empty, whitespace only)."""


class OnlyNegativeTerms(BadConcept):
    """A composite concept with minus terms and nothing to look for (``-truck``)."""

    def __init__(self) -> None:
        super().__init__("say what to look for, not only what to leave out, e.g. 'a red car -truck'")


class TooManyTerms(BadConcept):
    """A composite concept with more terms than are embedded for one search."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"too many terms: use at most {limit} (each + or - starts one)")


class BotApiUnreachable(VdxError):
    """The Telegram Bot API server cannot be reached, or what answers is not one."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach the Telegram Bot API at {url} ({reason})")


def innermost_reason(e: BaseException, limit: int = 200) -> str:
    """The innermost cause of a chained error ("[Errno 111] Connection refused") as one short line."""
    while (inner := e.__cause__ or e.__context__) is not None:
        e = inner
    if isinstance(e, ConnectionError) and e.errno:  # asyncio says "Connect call failed ('1.2.3.4', 9)"
        return os.strerror(e.errno)
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:limit]


class StateUnavailable(VdxError):
    """The SQLite state database cannot be opened or read (unreadable file, I/O error, not a database)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"cannot open the state database {path}: {reason}; check the disk and the file's "
            "permissions, or point VDX_DATA_DIR elsewhere"
        )


class UnreadableImage(VdxError):
    """Image bytes that cannot be decoded (not an image, truncated, corrupt)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ImageTooLarge(UnreadableImage):
    """An image that would decode to more pixels than the budget allows (or a decompression bomb)."""

    def __init__(self, width: int, height: int, max_pixels: int, detail: str = "") -> None:
        self.width = width
        self.height = height
        self.max_pixels = max_pixels
        size = f"{width} x {height} pixels" if width and height else detail or "too many pixels"
        super().__init__(f"the image is too large to decode ({size}; at most {max_pixels:,} pixels)")
