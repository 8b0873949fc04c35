"""A loaded serving artifact: texts and images in, L2-normalised embeddings out."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference_code.encoders import OnnxEncoder, session_options
from inference_code.manifest import IMAGE_ENCODER_FILE, TEXT_ENCODER_FILE, VALIDATED_MANIFEST_ENV, Manifest, verify_artifact
from inference_code.preprocess import ImageLimits, ImagePreprocessor
from inference_code.tokenizer import ClipTokenizer

SUPPORTED_PREPROCESS = {"interpolation": "bicubic", "resize_mode": "shortest"}


@dataclass(frozen=True)
class TextEmbeddings:
    vectors: np.ndarray  # float32 (n, dim), unit norm
    truncated: tuple[bool, ...]


class ClipEmbedder:
    def __init__(self, artifact_dir: Path | str, threads: int | None = None, validated_manifest_sha256: str | None = None):
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
            limits=ImageLimits(
                max_image_bytes=limits["max_image_bytes"],
                max_image_pixels=limits["max_image_pixels"],
                max_aspect_ratio=limits["max_aspect_ratio"],
                max_jpeg_scans=limits.get("max_jpeg_scans", ImageLimits.max_jpeg_scans),
            ),
        )
        options = session_options(threads)
        self._image_encoder = OnnxEncoder(artifact_dir / IMAGE_ENCODER_FILE, options)
        self._text_encoder = OnnxEncoder(artifact_dir / TEXT_ENCODER_FILE, options)

    def embed_texts(self, texts: list[str]) -> TextEmbeddings:
        tokens = self.tokenizer(texts)
        return TextEmbeddings(vectors=self._text_encoder(tokens.ids), truncated=tokens.truncated)

    def embed_image_bytes(self, images: list[bytes]) -> np.ndarray:
        return self.embed_pixels(np.stack([self.preprocessor(data) for data in images]))

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocessed float32 (n, 3, size, size) pixels to embeddings."""
        return self._image_encoder(np.ascontiguousarray(pixels, dtype=np.float32))

    def warm_up(self) -> None:
        """Run both towers once so the first request does not pay for lazy initialisation."""
        self.embed_texts(["warm up"])
        size = self.manifest.preprocess.image_size
        self.embed_pixels(np.zeros((1, 3, size, size), dtype=np.float32))
