"""What an image's first bytes say, without decoding it: the format signature and the pixel size.

The API Lambda rejects, before it pays for an endpoint invocation, what the endpoint's container
would reject with certainty from the header alone: bytes that are no image in an accepted format
(`not_an_image`), no pixels (`corrupt_image`), too many pixels (`image_too_many_pixels`), a too
narrow aspect ratio (`image_aspect_ratio`). It reads the size exactly where Pillow's plugins (what
the container runs) read it; where the header is unusual or truncated it returns no size and the
endpoint decides. No pixel is decoded, and Pillow is not needed in the Lambda package.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")  # as inference_code.preprocess.ACCEPTED_FORMATS
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_NO_LENGTH = {0x01, *range(0xD0, 0xD9)}  # TEM, RSTn, SOI: markers without a length field
_MAX_JPEG_SEGMENTS = 4_096
_MAX_GIF_BLOCKS = 4_096


@dataclass(frozen=True)
class ImageHeader:
    format: str | None  # one of ACCEPTED_FORMATS, or None: not an image we accept
    size: tuple[int, int] | None  # (width, height) as Pillow reads it, or None when the header does not say for sure


def read_header(data: bytes) -> ImageHeader:
    fmt = image_format(data)
    if fmt is None:
        return ImageHeader(None, None)
    try:
        size = _SIZE_READERS[fmt](data)
    except (struct.error, IndexError, ValueError):
        size = None
    return ImageHeader(fmt, size)


def image_format(data: bytes) -> str | None:
    """Pillow's own `_accept` tests of the five plugins the container opens images with."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(_PNG_MAGIC):
        return "PNG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith(b"BM"):
        return "BMP"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP" and data[12:16] in (b"VP8 ", b"VP8X", b"VP8L"):
        return "WEBP"
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR":
        return None
    return struct.unpack_from(">II", data, 16)


def _gif_size(data: bytes) -> tuple[int, int] | None:
    """The logical screen, grown to the first frame's extent (Pillow does both)."""
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    offset = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    for _ in range(_MAX_GIF_BLOCKS):
        block = data[offset]
        if block == 0x21:  # extension: label, then sub-blocks up to an empty one
            offset += 2
            while data[offset]:
                offset += data[offset] + 1
            offset += 1
        elif block == 0x2C:  # the first image descriptor
            x0, y0, w, h = struct.unpack_from("<HHHH", data, offset + 1)
            return max(width, x0 + w), max(height, y0 + h)
        else:
            return None
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    header_size = struct.unpack_from("<I", data, 14)[0]
    if header_size == 12:
        return struct.unpack_from("<HH", data, 18)
    if header_size in (40, 52, 56, 64, 108, 124):
        width, height = struct.unpack_from("<II", data, 18)
        if len(data) < 14 + header_size:
            return None
        return width, (2**32 - height if data[25] == 0xFF else height)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The last start-of-frame before the start of scan, as Pillow's marker loop reads it."""
    offset, size = 2, None
    for _ in range(_MAX_JPEG_SEGMENTS):
        if data[offset] != 0xFF:
            return None
        while data[offset] == 0xFF:  # fill bytes
            offset += 1
        marker = data[offset]
        offset += 1
        if marker == 0xDA:
            return size
        if marker in _JPEG_NO_LENGTH:
            continue
        if marker == 0xD9:
            return None
        length = struct.unpack_from(">H", data, offset)[0]
        if length < 2 or offset + length > len(data):
            return None
        if marker in _JPEG_SOF:
            if length < 8:
                return None
            height, width = struct.unpack_from(">HH", data, offset + 3)
            size = (width, height)
        offset += length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """The canvas libwebp reports: VP8X's canvas, or the one bitstream's frame size."""
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return (width, height) if len(data) >= 30 else None
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            return None
        bits = struct.unpack_from("<I", data, 21)[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    return None


_SIZE_READERS = {"PNG": _png_size, "GIF": _gif_size, "BMP": _bmp_size, "JPEG": _jpeg_size, "WEBP": _webp_size}
