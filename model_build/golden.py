"""Golden reference embeddings: open_clip's embeddings of the released weights on the probe set.

Stored beside the model config as configs/models/<model_id>.golden.npz. They answer a question
parity cannot: were the right weights loaded? They can only be made where the weights can be
downloaded (`clip-api references MODEL_ID` on a networked machine, once per model and weights).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip_api.paths import MODEL_CONFIGS_DIR
from model_build.probes import ProbeImage

GOLDEN_FORMAT_VERSION = 1


def probe_set_digest(texts: list[str], images: list[ProbeImage]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(b"t" + hashlib.sha256(text.encode()).digest())
    for image in images:
        digest.update(b"i" + image.name.encode() + hashlib.sha256(image.data).digest())
    return digest.hexdigest()


@dataclass(frozen=True)
class GoldenReferences:
    text: np.ndarray
    image: np.ndarray
    metadata: dict

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            np.savez_compressed(handle, text=self.text, image=self.image, metadata=np.array(json.dumps(self.metadata, sort_keys=True)))

    @classmethod
    def load(cls, path: Path) -> "GoldenReferences":
        with np.load(path, allow_pickle=False) as data:
            metadata = json.loads(str(data["metadata"]))
            if metadata.get("format_version") != GOLDEN_FORMAT_VERSION:
                raise ValueError(f"{path}: unsupported golden format {metadata.get('format_version')!r}")
            return cls(text=data["text"].astype(np.float32), image=data["image"].astype(np.float32), metadata=metadata)


def golden_path(model_id: str, configs_dir: Path = MODEL_CONFIGS_DIR) -> Path:
    return configs_dir / f"{model_id}.golden.npz"


def compute_golden(reference, built, model_id: str, texts: list[str], images: list[ProbeImage]) -> GoldenReferences:
    """`reference` is an OpenClipReference on the weights of `built` (a model_build.weights.BuiltModel)."""
    import open_clip

    return GoldenReferences(
        text=reference.embed_texts(texts),
        image=reference.embed_images([image.data for image in images]),
        metadata={
            "format_version": GOLDEN_FORMAT_VERSION,
            "model_id": model_id,
            "architecture": built.architecture,
            "weights_source": built.weights.source,
            "pretrained_tag": built.weights.pretrained_tag,
            "weights_sha256": built.weights.sha256,
            "probe_set_sha256": probe_set_digest(texts, images),
            "n_texts": len(texts),
            "n_images": len(images),
            "open_clip_version": open_clip.__version__,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
