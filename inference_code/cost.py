"""How much work a request is, estimated before any of it is done, so the server can schedule
cheap requests before expensive ones (issue 13: one client sending the most work the limits admit
must not take the model away from everyone else).

Estimates are seconds of one worker. The towers' cost per item is measured when the server warms
up; the rest are constants measured on AMD EPYC (2 vCPUs): tokenising costs at most ~1.4 us a
character (a 10,000-letter word: 14 ms; ordinary text is ~25x cheaper), decoding and resizing
~8 ns a pixel plus ~2.5 ns a pixel for each progressive JPEG scan (1024x768: 7 ms baseline, 20 ms
with 10 scans). They need only be right within a factor of about two: they order requests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from PIL import Image

from inference_code.preprocess import SCANS_INFO


@dataclass(frozen=True)
class CostModel:
    text_item_s: float = 0.02  # one text through the text tower
    image_item_s: float = 0.03  # one image through the image tower
    tokenize_char_s: float = 1.5e-6
    decode_pixel_s: float = 8e-9
    decode_pixel_scan_s: float = 2.5e-9

    def texts(self, texts: Iterable[str]) -> float:
        texts = list(texts)
        return len(texts) * self.text_item_s + sum(len(text) for text in texts) * self.tokenize_char_s

    def images(self, images: Iterable[Image.Image]) -> float:
        total = 0.0
        for image in images:
            width, height = image.size
            scans = image.info.get(SCANS_INFO, 1)
            total += self.image_item_s + width * height * (self.decode_pixel_s + scans * self.decode_pixel_scan_s)
        return total

    def records(self, count: int) -> float:
        """A JSON Lines body before its records are parsed: as if every record were an image."""
        return count * max(self.text_item_s, self.image_item_s)
