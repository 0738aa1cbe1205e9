"""Ingest test helpers: a loopback HTTP image server, generated photos and an Unsplash-format TSV.

It stands in for images.unsplash.com (no internet here). ``fail_times[path] = n`` answers the first
``n`` requests of ``path`` with a 503 so retries can be observed; query strings are ignored, as with
``python -m http.server``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


class _Handler(SimpleHTTPRequestHandler):
    server: ImageServer

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        with self.server.lock:
            self.server.requests[path] += 1
            self.server.raw_paths.append(self.path)
            remaining = self.server.fail_times.get(path, 0)
            if remaining:
                self.server.fail_times[path] = remaining - 1
        if remaining:
            self.send_error(503, "try again")
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


class ImageServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` on 127.0.0.1 with a request counter and injectable 503s."""

    daemon_threads = True

    def __init__(self, directory: Path) -> None:
        super().__init__(("127.0.0.1", 0), partial(_Handler, directory=str(directory)))
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.fail_times: dict[str, int] = {}
        self.raw_paths: list[str] = []  # with query strings, in arrival order

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def url(self, relative: str) -> str:
        """URL of ``relative`` (a path below the served directory)."""
        return f"{self.base_url}/{relative.lstrip('/')}"


@contextmanager
def serve_directory(directory: Path) -> Iterator[ImageServer]:
    """Serve ``directory`` on a free loopback port for the duration of the ``with`` block."""
    server = ImageServer(directory)
    thread = threading.Thread(target=server.serve_forever, name="image-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


UNSPLASH_COLUMNS = [
    "photo_id",
    "photo_url",
    "photo_image_url",
    "photo_submitted_at",
    "photo_featured",
    "photo_width",
    "photo_height",
    "photo_aspect_ratio",
    "photo_description",
    "photographer_username",
    "photographer_first_name",
    "photographer_last_name",
    "exif_camera_make",
    "exif_camera_model",
    "exif_iso",
    "exif_aperture_value",
    "exif_focal_length",
    "exif_exposure_time",
    "photo_location_name",
    "photo_location_latitude",
    "photo_location_longitude",
    "photo_location_country",
    "photo_location_city",
    "stats_views",
    "stats_downloads",
    "ai_description",
    "ai_primary_landmark_name",
    "ai_primary_landmark_latitude",
    "ai_primary_landmark_longitude",
    "ai_primary_landmark_confidence",
    "blur_hash",
]


def make_photos(root: Path, count: int = 10) -> list[Path]:
    """Write ``count`` varied photos below ``root`` (jpg, png with alpha, webp, a big one, nested)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        kind = ("jpg", "png", "webp", "jpeg")[i % 4]
        size = (2000, 1500) if i == 0 else (int(rng.integers(40, 200)), int(rng.integers(40, 200)))
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        if kind == "png":
            image = image.convert("RGBA")
        path = root / ("nested/deeper" if i % 3 == 2 else "") / f"photo_{i:02d}.{kind}"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, "JPEG" if kind in ("jpg", "jpeg") else kind.upper())
        paths.append(path)
    (root / "notes.txt").write_text("not a photo, ignored by extension")
    return paths


def unsplash_row(
    photo_id: str,
    image_url: str,
    description: str = "",
    ai_description: str = "",
    first: str = "Ada",
    last: str = "Lovelace",
) -> dict[str, str]:
    """One photos.tsv row: every column present, most of them empty like Lite's NULLs."""
    row = dict.fromkeys(UNSPLASH_COLUMNS, "")
    row.update(
        photo_id=photo_id,
        photo_url=f"https://unsplash.com/photos/{photo_id}",
        photo_image_url=image_url,
        photo_submitted_at="2020-01-02 03:04:05.123456",
        photo_featured="t",
        photo_description=description,
        photographer_first_name=first,
        photographer_last_name=last,
        ai_description=ai_description,
    )
    return row


def write_tsv(
    path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] | list[str] = UNSPLASH_COLUMNS
) -> Path:
    """Write ``rows`` as a tab-separated table with a header line (Unsplash Lite's format)."""
    lines = ["\t".join(columns)] + ["\t".join(row.get(c, "") for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
