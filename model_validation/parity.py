"""Parity of a serving path with open_clip: cosine per probe, per modality, and token-id equality."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from model_build.reference import OpenClipReference, cosine_rows


@dataclass(frozen=True)
class ModalityParity:
    cosines: np.ndarray
    names: tuple[str, ...]

    @property
    def min(self) -> float:
        return float(self.cosines.min())

    @property
    def mean(self) -> float:
        return float(self.cosines.mean())

    def worst(self, k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(self.cosines)[:k]
        return [(self.names[i], float(self.cosines[i])) for i in order]


@dataclass(frozen=True)
class ParityResult:
    text: ModalityParity
    image: ModalityParity
    token_ids_equal: bool
    token_mismatches: tuple[str, ...]
    served_text: np.ndarray  # the served embeddings compared, for callers that check more of them
    served_image: np.ndarray


def measure_parity(
    reference: OpenClipReference,
    embed_texts: Callable[[list[str]], np.ndarray],
    embed_images: Callable[[list[bytes]], np.ndarray],
    texts: Sequence[str],
    images: Sequence[tuple[str, bytes]],
    served_token_ids: Callable[[list[str]], np.ndarray] | None = None,
) -> ParityResult:
    """The embed functions get every probe at once and batch as their serving path must."""
    texts = list(texts)
    served_text = np.asarray(embed_texts(texts))
    image_bytes = [data for _, data in images]
    served_image = np.asarray(embed_images(image_bytes))
    mismatches: tuple[str, ...] = ()
    if served_token_ids is not None:
        ours, theirs = served_token_ids(texts), reference.token_ids(texts)
        mismatches = tuple(text for text, a, b in zip(texts, ours, theirs) if not np.array_equal(a, b))
    return ParityResult(
        text=ModalityParity(cosine_rows(served_text, reference.embed_texts(texts)), tuple(texts)),
        image=ModalityParity(cosine_rows(served_image, reference.embed_images(image_bytes)), tuple(n for n, _ in images)),
        token_ids_equal=not mismatches,
        token_mismatches=mismatches,
        served_text=served_text,
        served_image=served_image,
    )
