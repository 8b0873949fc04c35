"""A loaded serving artifact: texts and images in, L2-normalised embeddings out."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip_core.limits import ServingLimits
from inference_code.cost import CostModel
from inference_code.encoders import OnnxEncoder, Parallelism, RowPool
from inference_code.manifest import IMAGE_ENCODER_FILE, TEXT_ENCODER_FILE, VALIDATED_MANIFEST_ENV, Manifest, verify_artifact
from inference_code.preprocess import ImagePreprocessor
from inference_code.tokenizer import ClipTokenizer

SUPPORTED_PREPROCESS = {"interpolation": "bicubic", "resize_mode": "shortest"}


@dataclass(frozen=True)
class TextEmbeddings:
    vectors: np.ndarray  # float32 (n, dim), unit norm
    truncated: tuple[bool, ...]


class ClipEmbedder:
    def __init__(
        self,
        artifact_dir: Path | str,
        threads: int | None = None,
        validated_manifest_sha256: str | None = None,
        intra_op_threads: int | None = None,
    ):
        artifact_dir = Path(artifact_dir)
        self.manifest: Manifest = verify_artifact(artifact_dir, validated_manifest_sha256 or os.environ.get(VALIDATED_MANIFEST_ENV))
        pre = self.manifest.preprocess
        for key, expected in SUPPORTED_PREPROCESS.items():
            if getattr(pre, key) != expected:
                raise ValueError(f"artifact asks for {key}={getattr(pre, key)!r}; this server implements only {expected!r}")
        if self.manifest.tokenizer.clean != "lower":
            raise ValueError(f"artifact asks for tokenizer cleaning {self.manifest.tokenizer.clean!r}; only 'lower' is implemented")
        limits = self.manifest.limits
        self.tokenizer = ClipTokenizer(artifact_dir / self.manifest.tokenizer.vocab_file, self.manifest.tokenizer.context_length)
        self.preprocessor = ImagePreprocessor(
            image_size=pre.image_size,
            mean=pre.mean,
            std=pre.std,
            limits=ServingLimits.from_dict(limits),
        )
        self._measured_item_s: tuple[float, float] | None = None
        self.parallelism = Parallelism.from_environment(threads, intra_op_threads, int(limits.get("intra_op_threads", 1)))
        self._rows = RowPool(self.parallelism)
        self._image_encoder = OnnxEncoder(artifact_dir / IMAGE_ENCODER_FILE, self._rows)
        self._text_encoder = OnnxEncoder(artifact_dir / TEXT_ENCODER_FILE, self._rows)

    def embed_texts(self, texts: list[str], priority: float = 0.0) -> TextEmbeddings:
        tokens = self.tokenizer(texts)
        return TextEmbeddings(vectors=self._text_encoder(tokens.ids, priority), truncated=tokens.truncated)

    def embed_image_bytes(self, images: list[bytes]) -> np.ndarray:
        return self.embed_pixels(np.stack([self.preprocessor(data) for data in images]))

    def embed_pixels(self, pixels: np.ndarray, priority: float = 0.0) -> np.ndarray:
        """Preprocessed float32 (n, 3, size, size) pixels to embeddings; `priority` orders rows
        waiting for a core (lower first)."""
        return self._image_encoder(np.ascontiguousarray(pixels, dtype=np.float32), priority)

    def warm_up(self) -> None:
        """Run both towers so the first request does not pay for lazy initialisation, and time a
        second run of each: what one item costs on this machine (the scheduler's cost model)."""
        size = self.manifest.preprocess.image_size
        pixels = np.zeros((1, 3, size, size), dtype=np.float32)
        for _ in range(2):
            started = time.perf_counter()
            self.embed_texts(["warm up"])
            text_s = time.perf_counter() - started
            started = time.perf_counter()
            self.embed_pixels(pixels)
            image_s = time.perf_counter() - started
        self._measured_item_s = (text_s, image_s)

    def cost_model(self) -> CostModel:
        """Request cost estimates with the towers' per-item times from warm_up (defaults before it)."""
        if self._measured_item_s is None:
            return CostModel()
        text_s, image_s = self._measured_item_s
        return CostModel(text_item_s=text_s, image_item_s=image_s)
