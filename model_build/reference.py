"""Reference embeddings as open_clip itself computes them: torch fp32 eager, its tokenizer, its transform.

This is the parity reference every serving variant is measured against.
"""

from __future__ import annotations

import io

import numpy as np
import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image


class OpenClipReference:
    def __init__(self, model: torch.nn.Module, architecture: str):
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(architecture)
        # The same call create_model_and_transforms makes for its inference transform.
        self.transform = image_transform_v2(PreprocessCfg(**open_clip.get_model_preprocess_cfg(model)), is_train=False)

    def token_ids(self, texts: list[str]) -> np.ndarray:
        return self.tokenizer(texts).numpy()

    @torch.no_grad()
    def embed_texts(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        chunks = [
            self.model.encode_text(self.tokenizer(texts[i : i + batch_size]), normalize=True).numpy()
            for i in range(0, len(texts), batch_size)
        ]
        return np.concatenate(chunks).astype(np.float32)

    @torch.no_grad()
    def embed_images(self, images: list[bytes], batch_size: int = 16) -> np.ndarray:
        chunks = []
        for i in range(0, len(images), batch_size):
            pixels = torch.stack([self.transform(Image.open(io.BytesIO(data))) for data in images[i : i + batch_size]])
            chunks.append(self.model.encode_image(pixels, normalize=True).numpy())
        return np.concatenate(chunks).astype(np.float32)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, d) arrays."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)
