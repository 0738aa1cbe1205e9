"""Opening image bytes within a pixel budget: a photo's cost is bounded before it is decoded.

Pillow reads only the header on ``Image.open``; the pixels are decoded on ``load()``. So the size
is known, and checked, before any memory goes to pixels. A JPEG is decoded at reduced scale
(``Image.draft``: the DCT decoder scales by 1/2, 1/4 or 1/8 for free), so a 48-megapixel phone
photo costs what a 0.75-megapixel one does; other formats decode at full size, so they are held to
:data:`MAX_PIXELS` (Pillow's own limit, ``Image.MAX_IMAGE_PIXELS``, is 178,956,970 pixels: about
700 MB once decoded, where this one is about 100 MB).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import ImageTooLarge, UnreadableImage

MAX_PIXELS = 25_000_000  # decoded pixels (after a JPEG's draft scaling): 5000 x 5000, ~100 MB as RGB(X)
MAX_SIDE = 1280  # longest side a caller gets back by default (ingest's thumbnails use the same)


def open_bounded(data: bytes, *, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``data`` (loaded, in its own mode and format) with at most ``max_pixels`` pixels.

    A JPEG is decoded at the smallest DCT scale that keeps both sides >= ``max_side`` (or its own
    size). :class:`ImageTooLarge` when the image would still decode to more than ``max_pixels``;
    :class:`UnreadableImage` when the bytes are no image Pillow can decode.
    """
    try:
        with warnings.catch_warnings():
            # the budget below is far stricter than the warning Pillow gives above its own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        if image.format == "JPEG":
            image.draft("RGB", (max_side, max_side))
        width, height = image.size
        if width * height > max_pixels:
            image.close()
            raise ImageTooLarge(width, height, max_pixels)
        image.load()
        return image
    except Image.DecompressionBombError:  # beyond twice Pillow's limit: refused from the header
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise ImageTooLarge(0, 0, max_pixels, f"more than {limit:,} pixels") from None
    except UnidentifiedImageError:
        raise UnreadableImage("not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt data
        raise UnreadableImage(f"cannot decode the image: {e}") from None


def load_rgb(data: bytes, *, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """``data`` as an upright RGB image no larger than ``max_side`` (transparency on white), decoded
    within the pixel budget of :func:`open_bounded` (whose errors it raises)."""
    image = open_bounded(data, max_side=max_side, max_pixels=max_pixels)
    try:
        ImageOps.exif_transpose(image, in_place=True)
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)  # in place, via reduce()
        return _to_rgb(image)
    except (OSError, ValueError, SyntaxError) as e:
        raise UnreadableImage(f"cannot decode the image: {e}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))  # transparent pixels read as white
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
