"""Image decoding and preprocessing, numerically identical to open_clip's inference transform.

open_clip (resize_mode 'shortest', square image size) runs, on a PIL image:
  Resize(size, BICUBIC) -> CenterCrop(size) -> convert('RGB') -> ToTensor -> Normalize(mean, std)
torchvision executes Resize and CenterCrop on PIL images with PIL itself, so calling the same PIL
operations with the same sizes gives the same pixels: antialiased bicubic, and PIL's own rules for
palette images (nearest) and RGBA (premultiplied). RGB conversion happens *after* resizing, as in
open_clip. ToTensor+Normalize is float32 `(v / 255 - mean) / std`; it is precomputed per channel
as a 256-entry lookup table with the same float32 operations, so it is bit-identical and fast.

EXIF orientation is deliberately not applied: open_clip does not apply it, and embeddings must
match those computed elsewhere with open_clip on the same bytes.

Decode work is bounded before any pixel is decoded, not only by pixels per image: a progressive
JPEG re-runs every scan over the whole image (a flat 6000x6000 JPEG with one scan repeated 1,000
times is 270 KB and took 23 s), so the scan count is read from the markers and capped
(`max_jpeg_scans`; libjpeg's own progressive scripts use 6 to 24), and the service caps the
pixels of all images of one request together and stops decoding past a deadline.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from clip_core.limits import ServingLimits
from inference_code.errors import bad_request, too_large

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
SCANS_INFO = "clip_api.jpeg_scans"  # set by ImagePreprocessor.open on JPEGs: decoding costs about pixels x scans


def resized_size(width: int, height: int, shorter_side: int) -> tuple[int, int]:
    """torchvision's Resize(int) output size: shorter side to `shorter_side`, longer truncated."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shorter_side * long / short)
    return (shorter_side, new_long) if width <= height else (new_long, shorter_side)


def center_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """torchvision's CenterCrop box (it rounds half to even, like Python's round)."""
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return (left, top, left + size, top + size)


class ImagePreprocessor:
    def __init__(
        self,
        image_size: int = 224,
        mean: tuple[float, float, float] = OPENAI_CLIP_MEAN,
        std: tuple[float, float, float] = OPENAI_CLIP_STD,
        limits: ServingLimits = ServingLimits(),
    ):
        self.image_size = image_size
        self.limits = limits
        values = np.arange(256, dtype=np.float32) / np.float32(255)
        mean32 = np.asarray(mean, dtype=np.float32)[:, None]
        std32 = np.asarray(std, dtype=np.float32)[:, None]
        self._lut = ((values[None, :] - mean32) / std32).astype(np.float32)  # (3, 256)

    def decode(self, data: bytes) -> Image.Image:
        """Open and fully decode image bytes, enforcing the limits before pixels are allocated."""
        return self.load(self.open(data))

    def open(self, data: bytes) -> Image.Image:
        """Read the image's header only (format, size, JPEG scans) and check the limits: cheap,
        so a request's images can all be checked before any is decoded."""
        if not data:
            raise bad_request("empty_image", "the image is empty")
        if len(data) > self.limits.max_image_bytes:
            raise too_large(
                "image_too_large",
                f"the image is {len(data)} bytes; at most {self.limits.max_image_bytes} bytes are accepted",
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
                width, height = image.size
                self._check_dimensions(width, height)
                if data[:2] == b"\xff\xd8":  # JPEG, MPO included
                    image.info[SCANS_INFO] = self._check_jpeg_scans(data)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise too_large("image_too_many_pixels", "the image decodes to too many pixels") from None
        except Image.UnidentifiedImageError:
            raise bad_request(
                "not_an_image",
                "the bytes are not an image in a supported format (" + ", ".join(ACCEPTED_FORMATS) + ")",
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise bad_request("corrupt_image", f"the image could not be decoded: it is truncated or corrupt ({type(exc).__name__})") from None
        return image

    def load(self, image: Image.Image) -> Image.Image:
        """Decode the pixels of an image from `open`."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise too_large("image_too_many_pixels", "the image decodes to too many pixels") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise bad_request("corrupt_image", f"the image could not be decoded: it is truncated or corrupt ({type(exc).__name__})") from None
        return image

    def _check_jpeg_scans(self, data: bytes) -> int:
        scans = jpeg_scan_count(data, stop_after=self.limits.max_jpeg_scans)
        if scans > self.limits.max_jpeg_scans:
            raise too_large(
                "image_too_complex",
                f"the JPEG has more than {self.limits.max_jpeg_scans} scans; each scan re-decodes the whole image "
                "(save it as baseline or standard progressive JPEG)",
            )
        return scans

    def _check_dimensions(self, width: int, height: int) -> None:
        if width < 1 or height < 1:
            raise bad_request("corrupt_image", "the image has no pixels")
        if width * height > self.limits.max_image_pixels:
            raise too_large(
                "image_too_many_pixels",
                f"the image is {width}x{height} pixels; at most {self.limits.max_image_pixels} pixels are accepted",
            )
        if max(width, height) / min(width, height) > self.limits.max_aspect_ratio:
            raise bad_request(
                "image_aspect_ratio",
                f"the image is {width}x{height}; the aspect ratio may be at most {self.limits.max_aspect_ratio:g}:1",
            )

    def to_array(self, image: Image.Image) -> np.ndarray:
        """A decoded PIL image to the model input, float32 (3, size, size)."""
        size = self.image_size
        try:
            resized = image.resize(resized_size(*image.size, size), Image.Resampling.BICUBIC)
            rgb = resized.crop(center_crop_box(*resized.size, size)).convert("RGB")
        except (OSError, ValueError) as exc:
            raise bad_request("unsupported_image", f"the image mode {image.mode!r} cannot be processed ({type(exc).__name__})") from None
        pixels = np.asarray(rgb, dtype=np.uint8)  # (size, size, 3)
        return np.stack([self._lut[c][pixels[:, :, c]] for c in range(3)])

    def __call__(self, data: bytes) -> np.ndarray:
        return self.to_array(self.decode(data))


_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xDA)])  # TEM, RST0-7, SOI, EOI: no length field


def jpeg_scan_count(data: bytes, stop_after: int) -> int:
    """Start-of-scan markers in a JPEG's marker stream, counting at most `stop_after + 1`.

    Marker segments are skipped by their length (an EXIF thumbnail's scans inside APP1 do not
    count); entropy-coded data after each SOS is skipped to the next marker (0xFF followed by
    neither a stuffed 0x00 nor a restart marker). Malformed streams stop the count: the decoder
    reports them. Linear in the file's size.
    """
    size = len(data)
    position = 2 if data[:2] == b"\xff\xd8" else size
    scans = 0
    while position + 1 < size and scans <= stop_after:
        if data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if marker in _STANDALONE_MARKERS:
            position += 2
            continue
        if position + 4 > size:
            break
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker != 0xDA:
            continue
        scans += 1
        while True:  # entropy-coded segment: find the next real marker
            position = data.find(b"\xff", position)
            if position < 0 or position + 1 >= size:
                return scans
            following = data[position + 1]
            if following == 0x00 or 0xD0 <= following <= 0xD7:
                position += 2
                continue
            break
    return scans
