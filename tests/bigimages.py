"""Huge images in a few hundred kilobytes, made without ever holding their pixels in memory."""

from __future__ import annotations

import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _deflated(data: bytes, final: bool) -> bytes:
    """``data`` as raw deflate blocks from a fresh compressor: the same input, the same bytes."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    return squeeze.compress(data) + squeeze.flush(zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH)


def flat_png(width: int, height: int) -> bytes:
    """A valid 8-bit RGB PNG of ``width`` x ``height`` black pixels, about 1000 times smaller than them.

    The zlib stream is one block of rows compressed once and repeated (a full flush leaves each
    copy byte-aligned and independent), then the remaining rows as the final block.
    """
    row = b"\x00" + bytes(width * 3)  # filter type 0, then the row's pixels
    rows_per_block = max(1, min(height, (4 << 20) // len(row)))
    blocks, rest = divmod(height, rows_per_block)
    block, last = row * rows_per_block, row * rest
    check = 1
    for _ in range(blocks):
        check = zlib.adler32(block, check)
    check = zlib.adler32(last, check)
    stream = b"\x78\xda" + _deflated(block, False) * blocks + _deflated(last, True) + struct.pack(">I", check)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header), _chunk(b"IDAT", stream), _chunk(b"IEND", b"")]
    )
