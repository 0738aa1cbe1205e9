"""Images open within a pixel budget: huge ones are refused before decoding, big JPEGs decode small."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from core.errors import ImageTooLarge, UnreadableImage
from core.images import MAX_PIXELS, load_rgb, open_bounded
from tests.bigimages import flat_png

ROOT = Path(__file__).resolve().parents[2]
# Peak RSS a decode may add to the process (measured by the subprocess below): the refused
# 12000 x 12000 and 20000 x 20000 PNGs cost only their bytes; an accepted 5000 x 5000 PNG (the
# budget's largest) decodes to ~100 MB and is cut down to 1280 px.
REFUSED_PEAK_MB = 64
ACCEPTED_PEAK_MB = 256
BASELINE_SLACK_MB = 48  # resident after an accepted decode, above what it was before

PEAK_RSS = """
import json, sys
from core.images import load_rgb
from core.errors import UnreadableImage

def kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

data = open(sys.argv[1], "rb").read()
before = kib("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM, the peak resident set size, to the current one
try:
    size = list(load_rgb(data).size)
except UnreadableImage as e:
    size = str(e)
print(json.dumps({"before": before, "peak": kib("VmHWM"), "after": kib("VmRSS"), "result": size}))
"""


def jpeg(width: int, height: int, **save: object) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buf, "JPEG", **save)
    return buf.getvalue()


def peak_rss(data: bytes, tmp_path: Path) -> dict[str, object]:
    """Decode ``data`` in a fresh interpreter; its RSS before, at the peak and after (KiB)."""
    path = tmp_path / "image.bin"
    path.write_bytes(data)
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(path)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.fixture(scope="module")
def huge_pngs() -> dict[int, bytes]:
    """12000 x 12000 (144 Mpx) and 20000 x 20000 (400 Mpx, a decompression bomb to Pillow) PNGs."""
    return {side: flat_png(side, side) for side in (12000, 20000)}


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("side", [12000, 20000])
def test_a_huge_png_is_refused_before_it_is_decoded(
    side: int, huge_pngs: dict[int, bytes], tmp_path: Path
) -> None:
    data = huge_pngs[side]
    assert len(data) < 2 * 2**20  # a few hundred kilobytes that would decode to gigabytes
    with pytest.raises(ImageTooLarge, match="too large"):
        open_bounded(data)
    rss = peak_rss(data, tmp_path)
    assert "too large" in str(rss["result"])
    assert int(rss["peak"]) - int(rss["before"]) < REFUSED_PEAK_MB * 1024, rss  # type: ignore[call-overload]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_the_largest_accepted_png_decodes_within_budget_and_memory_comes_back(tmp_path: Path) -> None:
    rss = peak_rss(flat_png(5000, 5000), tmp_path)
    assert rss["result"] == [1280, 1280]
    before, peak, after = (int(rss[k]) for k in ("before", "peak", "after"))  # type: ignore[call-overload]
    assert peak - before < ACCEPTED_PEAK_MB * 1024, rss
    assert after - before < BASELINE_SLACK_MB * 1024, rss


def test_a_big_jpeg_is_decoded_at_reduced_scale() -> None:
    data = jpeg(8000, 6000, quality=50)  # 48 Mpx: over the budget at full size
    assert MAX_PIXELS < 8000 * 6000
    image = open_bounded(data)
    assert image.size == (2000, 1500)  # the DCT decoder's 1/4 scale, still >= 1280 px a side
    assert load_rgb(data).size == (1280, 960)


def test_transparency_reads_as_white_and_exif_orientation_is_applied() -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (40, 20), (0, 0, 0, 0)).save(buf, "PNG")
    rgb = load_rgb(buf.getvalue())
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (255, 255, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    buf = io.BytesIO()
    Image.new("RGB", (40, 20)).save(buf, "JPEG", exif=exif)
    assert load_rgb(buf.getvalue()).size == (20, 40)


@pytest.mark.parametrize(
    "data", [b"", b"not an image", jpeg(64, 64)[:200], b"\x89PNG\r\n\x1a\n" + b"\x00" * 40]
)
def test_what_is_not_an_image_is_unreadable(data: bytes) -> None:
    with pytest.raises(UnreadableImage):
        load_rgb(data)
