"""Memory and time of opening a photo: ``core.images.load_rgb`` beside a plain ``Image.open().convert()``.

``python -m bench.photo_memory`` (``--quick`` for a smoke run). Each decode runs in a fresh
interpreter that reads the file, resets its peak resident set size (``/proc/self/clear_refs``),
decodes, and reports the peak (``VmHWM``) and the resident size after, both above what it was
before. The plain open is how the bot opened photos before the pixel budget.
"""

from __future__ import annotations

import io
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from bench import publish
from core.images import MAX_PIXELS
from tests.bigimages import flat_png

NAME = "photo_memory"
ROOT = Path(__file__).resolve().parents[1]

MEASURE = """
import io, json, sys, time
from PIL import Image
from core.errors import UnreadableImage
from core.images import load_rgb

def plain(data):
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")

def kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

data = open(sys.argv[2], "rb").read()
decode = load_rgb if sys.argv[1] == "budget" else plain
before = kib("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
start = time.perf_counter()
try:
    result = "x".join(map(str, decode(data).size))
except (UnreadableImage, Image.DecompressionBombError) as e:
    result = "refused: " + type(e).__name__
seconds = time.perf_counter() - start
print(json.dumps({"peak": kib("VmHWM") - before, "after": kib("VmRSS") - before, "s": seconds, "result": result}))
"""


def _jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((width // 8, height // 8), 60).convert("RGB").resize((width, height)).save(
        buf, "JPEG", quality=85
    )
    return buf.getvalue()


def _cases(quick: bool) -> dict[str, bytes]:
    cases = {
        "PNG 12000 x 12000 (flat)": flat_png(12000, 12000),
        "PNG 20000 x 20000 (flat)": flat_png(20000, 20000),
        "PNG 5000 x 5000 (flat, the largest accepted)": flat_png(5000, 5000),
        "JPEG 4032 x 3024 (12 Mpx phone photo)": _jpeg(4032, 3024),
    }
    if not quick:
        cases["JPEG 8000 x 6000 (48 Mpx)"] = _jpeg(8000, 6000)
    return cases


def _measure(way: str, path: Path, repeats: int) -> dict[str, object]:
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", MEASURE, way, str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout))
    return {
        "peak": statistics.median(int(r["peak"]) for r in runs) / 1024,
        "after": statistics.median(int(r["after"]) for r in runs) / 1024,
        "s": statistics.median(float(r["s"]) for r in runs),
        "result": runs[0]["result"],
    }


def run(quick: bool = False) -> str:
    """Measure every case both ways; print (and on a full run record) the table."""
    repeats = 1 if quick else 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in _cases(quick).items():
            path = Path(tmp) / "image"
            path.write_bytes(data)
            for way in ("budget", "plain"):
                m = _measure(way, path, 1 if (way == "plain" and "12000" in name) else repeats)
                rows.append(
                    f"| {name} | {len(data) / 1024:,.0f} kB | {'pixel budget' if way == 'budget' else 'plain open'} "
                    f"| {m['peak']:,.1f} | {m['after']:,.1f} | {float(m['s']):.2f} | {m['result']} |"
                )
    text = "\n".join(
        [
            "## Opening photos: memory",
            "",
            f"`python -m bench.photo_memory` — {platform.machine()}, Python {platform.python_version()}, "
            "a shared 2-core machine (times are rough; memory is what this table is for). Peak and after: "
            "resident memory above the interpreter's before the decode, in MB (median of 3 runs, 1 for the "
            "plain open of the 12000 px PNG). *Pixel budget* is `core.images.load_rgb` (what the bot uses: "
            f"at most {MAX_PIXELS:,} decoded pixels, JPEGs decoded at reduced DCT scale, output <= 1280 px); "
            "*plain open* is `Image.open(...).convert('RGB')`, what the bot did before.",
            "",
            "| image | file | way | peak MB | after MB | seconds | result |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            "The two huge PNGs are refused from their header before any pixel is decoded, so their peak is "
            'their own bytes; the bot answers them "I could not read that photo". Budget the bot\'s photo path '
            "at about 150 MB above its resting size per photo being opened (the largest accepted PNG), and "
            "64 MB for a refused one.",
            "",
        ]
    )
    return publish(NAME, text, quick)


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
