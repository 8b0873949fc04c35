"""Hostile inputs for the serving container (issue 13), generated small and fast."""

from __future__ import annotations

import functools
import io

from PIL import Image


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each marker segment, SOS segments running to the next marker."""
    position, segments = 2, []
    while position < len(data):
        marker = data[position + 1]
        if marker == 0xD9:
            segments.append((marker, position, position + 2))
            break
        end = position + 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == 0xDA:
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        segments.append((marker, position, end))
        position = end
    return segments


def progressive_jpeg(size: int = 256, flat: bool = True) -> bytes:
    image = Image.new("RGB", (size, size), (120, 130, 140)) if flat else Image.linear_gradient("L").resize((size, size)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", progressive=True, quality=90)
    return buffer.getvalue()


@functools.lru_cache(maxsize=8)
def many_scan_jpeg(size: int = 256, repeats: int = 2_000) -> bytes:
    """A valid progressive JPEG whose last scan (an AC refinement of a flat image: a few bytes)
    is repeated: libjpeg re-runs it over the whole image each time (6000x6000, 1,000 repeats: 23 s)."""
    data = progressive_jpeg(size)
    segments = jpeg_segments(data)
    _, start, end = [segment for segment in segments if segment[0] == 0xDA][-1]
    eoi = segments[-1][1]
    return data[:eoi] + data[start:end] * repeats + data[eoi:]


@functools.lru_cache(maxsize=8)
def blank_png(width: int, height: int) -> bytes:
    """Many pixels in few bytes (a 6000x6000 blank PNG is about 36 KB)."""
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()
