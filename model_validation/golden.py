"""Golden reference embeddings: open_clip's embeddings of the released weights on the probe set.

Two kinds, and the validation gate says which applied (`choose_golden`):
  committed   configs/models/<model_id>.golden.npz, made by `clip-api references MODEL_ID` where the
              weights can be downloaded. It always wins; a mismatch with it fails the gate.
  first-use   when no file is committed and the weights are the very file the config pins (sha256
              verified on download), they are computed once from those weights (open_clip, torch fp32,
              the probe set) and stored beside the weights cache: <cache>/golden/<model_id>-<sha256
              prefix>.golden.npz, with the weights digest, the probe-set digest and the library
              versions. Later builds are held to them, so a change of open_clip, torch or our loading
              code that moves the embeddings of the same file fails the gate.
They answer a question parity cannot: were the right weights loaded, the same way as before?
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip_core.paths import MODEL_CONFIGS_DIR
from model_build.weights_source import PRETRAINED, RANDOM_INIT
from model_validation.probes import ProbeImage

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
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(partial, "wb") as handle:
            np.savez_compressed(handle, text=self.text, image=self.image, metadata=np.array(json.dumps(self.metadata, sort_keys=True)))
        os.replace(partial, path)

    @classmethod
    def load(cls, path: Path) -> "GoldenReferences":
        with np.load(path, allow_pickle=False) as data:
            metadata = json.loads(str(data["metadata"]))
            if metadata.get("format_version") != GOLDEN_FORMAT_VERSION:
                raise ValueError(f"{path}: unsupported golden format {metadata.get('format_version')!r}")
            return cls(text=data["text"].astype(np.float32), image=data["image"].astype(np.float32), metadata=metadata)


def golden_path(model_id: str, configs_dir: Path = MODEL_CONFIGS_DIR) -> Path:
    return configs_dir / f"{model_id}.golden.npz"


def golden_store_dir() -> Path:
    """First-use golden references live beside the weights cache."""
    from model_build.weights import weights_cache_dir

    return weights_cache_dir() / "golden"


def first_use_golden_path(model_id: str, weights_file_sha256: str, store_dir: Path | None = None) -> Path:
    return Path(store_dir or golden_store_dir()) / f"{model_id}-{weights_file_sha256[:16]}.golden.npz"


def library_versions() -> dict[str, str]:
    import open_clip
    import PIL
    import torch

    return {"open_clip": open_clip.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "pillow": PIL.__version__, "python": platform.python_version()}


def compute_golden(reference, built, model_id: str, texts: list[str], images: list[ProbeImage], origin: str = "committed") -> GoldenReferences:
    """`reference` is an OpenClipReference on the weights of `built` (a model_build.weights.BuiltModel)."""
    versions = library_versions()
    return GoldenReferences(
        text=reference.embed_texts(texts),
        image=reference.embed_images([image.data for image in images]),
        metadata={
            "format_version": GOLDEN_FORMAT_VERSION,
            "origin": origin,
            "model_id": model_id,
            "architecture": built.architecture,
            "weights_source": built.weights.source,
            "pretrained_tag": built.weights.pretrained_tag,
            "weights_sha256": built.weights.sha256,
            "weights_file_sha256": built.weights.checkpoint_sha256,
            "probe_set_sha256": probe_set_digest(texts, images),
            "n_texts": len(texts),
            "n_images": len(images),
            "open_clip_version": versions["open_clip"],
            "library_versions": versions,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )


@dataclass(frozen=True)
class GoldenChoice:
    golden: GoldenReferences | None
    case: str  # committed | first-use-computed | first-use-stored | none
    note: str  # the case in words, for the verdict
    path: Path | None = None
    stale: bool = False  # a committed file made on another probe set


def choose_golden(config, built, reference, texts: list[str], images: list[ProbeImage], committed: Path,
                  store_dir: Path | None = None) -> GoldenChoice:
    """The golden references an artifact is held to: a committed file, else first-use references of verified weights."""
    probe_digest = probe_set_digest(texts, images)
    if committed.is_file():
        golden = GoldenReferences.load(committed)
        made = golden.metadata.get("open_clip_version", "?")
        recorded = golden.metadata.get("weights_sha256")
        if built.weights.source == RANDOM_INIT and recorded and recorded != built.weights.sha256:
            # Another seed is other weights chosen on purpose (another embedding space, issue 17), not weights
            # loaded wrongly: the file pins only the weights it was made from. Checkpoints stay held to it.
            return GoldenChoice(None, "none", f"the committed golden file {committed.name} is of other random-init weights "
                                              f"(sha256 {recorded[:12]}...): seed {built.weights.seed} has no golden references")
        stale = golden.metadata["probe_set_sha256"] != probe_digest
        return GoldenChoice(golden, "committed", f"committed golden file {committed.name} (open_clip {made})", committed, stale)
    pin = config.open_clip.weights_file
    if built.weights.source != PRETRAINED or pin is None or built.weights.checkpoint_sha256 != pin.sha256:
        return GoldenChoice(None, "none", "no committed golden file, and the weights are not the config's pinned file: no first-use references")
    path = first_use_golden_path(config.model_id, pin.sha256, store_dir)
    if path.is_file():
        try:
            golden = GoldenReferences.load(path)
        except (OSError, ValueError, KeyError) as error:  # unreadable: made again below
            golden, why = None, f"the stored file was unreadable ({type(error).__name__})"
        else:
            matches = golden.metadata.get("weights_file_sha256") == pin.sha256 and golden.metadata.get("model_id") == config.model_id
            if matches and golden.metadata["probe_set_sha256"] == probe_digest:
                note = (f"first-use golden references stored at {path} on {golden.metadata.get('created_at')} from the verified "
                        f"weights (sha256 {pin.sha256[:12]}...), open_clip {golden.metadata.get('open_clip_version')}")
                return GoldenChoice(golden, "first-use-stored", note, path)
            why = "the stored file was made on another probe set" if matches else "the stored file is of other weights"
    else:
        why = "none were stored yet"
    golden = compute_golden(reference, built, config.model_id, texts, images, origin="first-use")
    golden.save(path)
    note = (f"no committed golden file; first-use references computed now ({why}) from the verified weights "
            f"(sha256 {pin.sha256[:12]}...) with open_clip fp32 and stored at {path}")
    return GoldenChoice(golden, "first-use-computed", note, path)
