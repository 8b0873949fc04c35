"""Building an open_clip model with the weights an artifact is made from.

Sources (the `--weights` option):
  pretrained      the model config's open_clip pretrained tag (HF hub or open_clip's cache)
  random          seeded random init: real architecture, meaningless embeddings (tests, demo)
  PATH | s3://... an open_clip state-dict checkpoint (.pt, .bin or .safetensors)
Unreachable weights raise WeightsUnavailableError naming the alternatives; there is never a
silent fallback to another source.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch

from clip_api.model_config import ModelConfig
from clip_api.paths import OPEN_CLIP_CONFIGS_DIR
from clip_api.s3_uri import split_s3_uri
from inference_code.manifest import PreprocessInfo, WeightsInfo, sha256_file

logger = logging.getLogger(__name__)
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


class WeightsUnavailableError(RuntimeError):
    pass


@dataclass(frozen=True)
class WeightsSource:
    kind: str  # "pretrained" | "random" | "checkpoint"
    location: str | None = None

    @classmethod
    def parse(cls, value: str) -> "WeightsSource":
        if value in ("pretrained", "random"):
            return cls(value)
        if value.startswith("s3://") or value.endswith(_CHECKPOINT_SUFFIXES) or os.path.exists(value):
            return cls("checkpoint", value)
        raise ValueError(f"--weights must be 'pretrained', 'random', or a checkpoint path/s3:// URI ({', '.join(_CHECKPOINT_SUFFIXES)}); got {value!r}")

    def __str__(self) -> str:
        return self.location if self.kind == "checkpoint" else self.kind


@dataclass
class BuiltModel:
    model: torch.nn.Module
    architecture: str
    weights: WeightsInfo
    preprocess: PreprocessInfo
    context_length: int
    quick_gelu: bool


def register_repo_architectures() -> None:
    """Make the open_clip JSON configs under configs/open_clip/ (e.g. clip-tiny) known to open_clip."""
    if OPEN_CLIP_CONFIGS_DIR.is_dir():
        open_clip.add_model_config(OPEN_CLIP_CONFIGS_DIR)


def uses_quick_gelu(model: torch.nn.Module) -> bool:
    return any(isinstance(module, open_clip.transformer.QuickGELU) for module in model.modules())


def state_dict_sha256(model: torch.nn.Module) -> str:
    """Digest of every tensor (name, dtype, shape, bytes): the same weights give the same digest whatever their file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}|{array.dtype}|{array.shape}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def fetch_s3_checkpoint(uri: str, cache_dir: Path | None = None) -> Path:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3_uri(uri)
    target_dir = Path(cache_dir or tempfile.mkdtemp(prefix="clip-weights-"))
    target = target_dir / Path(key).name
    try:
        boto3.client("s3").download_file(bucket, key, str(target))
    except (BotoCoreError, ClientError) as exc:
        raise WeightsUnavailableError(f"could not download checkpoint {uri}: {exc}") from None
    return target


def _resolve_pretrained_file(architecture: str, tag: str, cache_dir: str | None) -> str:
    cfg = open_clip.get_pretrained_cfg(architecture, tag)
    if not cfg:
        known = open_clip.list_pretrained_tags_by_model(architecture)
        raise WeightsUnavailableError(f"open_clip knows no pretrained tag {tag!r} for {architecture} (known: {known})")
    try:
        return open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as exc:  # hub, proxy and file-system errors all mean the same thing here
        raise WeightsUnavailableError(
            f"the pretrained weights {architecture}/{tag} could not be downloaded or found in the cache "
            f"({type(exc).__name__}: {str(exc)[:200]}). Alternatives: run where the Hugging Face hub is "
            "reachable (or pre-fill its cache and set HF_HUB_OFFLINE=1), pass --weights PATH or "
            "--weights s3://bucket/key with an open_clip checkpoint, or --weights random for a "
            "demo-only random-init artifact."
        ) from None


def build_model(
    config: ModelConfig,
    source: WeightsSource,
    seed: int = 0,
    architecture: str | None = None,
    cache_dir: str | None = None,
) -> BuiltModel:
    """Build the config's open_clip model (fp32, eval mode) with weights from `source`."""
    register_repo_architectures()
    architecture = architecture or config.open_clip.architecture
    tag = config.open_clip.pretrained
    extra: dict = {}
    if source.kind == "random":
        torch.manual_seed(seed)
        model = open_clip.create_model(architecture, pretrained=None)
        extra = {"seed": seed}
        kind = "random-init"
    elif source.kind == "pretrained":
        if not tag:
            raise WeightsUnavailableError(f"{config.model_id} has no pretrained tag; use --weights random or a checkpoint path")
        path = _resolve_pretrained_file(architecture, tag, cache_dir)
        model = open_clip.create_model(architecture, pretrained=path)
        extra = {"pretrained_tag": tag, "checkpoint_sha256": sha256_file(path)}
        kind = "pretrained"
    else:
        location = source.location or ""
        path = fetch_s3_checkpoint(location) if location.startswith("s3://") else Path(location)
        if not Path(path).is_file():
            raise WeightsUnavailableError(f"checkpoint {location} does not exist; use --weights pretrained or --weights random")
        model = open_clip.create_model(architecture, pretrained=str(path))
        extra = {"checkpoint": location, "checkpoint_sha256": sha256_file(path)}
        kind = "checkpoint"
    model.eval()
    quick_gelu = uses_quick_gelu(model)
    pretrained_cfg = open_clip.get_pretrained_cfg(config.open_clip.architecture, tag) if tag else {}
    if architecture == config.open_clip.architecture and pretrained_cfg.get("quick_gelu") and not quick_gelu:
        raise ValueError(f"{architecture} was built without QuickGELU, but {tag} weights were trained with it")
    cfg = model.visual.preprocess_cfg
    size = cfg["size"]
    preprocess = PreprocessInfo(
        image_size=size[0] if isinstance(size, (tuple, list)) else size,
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg["interpolation"],
        resize_mode=cfg["resize_mode"],
    )
    weights = WeightsInfo(source=kind, sha256=state_dict_sha256(model), **extra)
    return BuiltModel(model, architecture, weights, preprocess, int(model.context_length), quick_gelu)


def pretrained_available(config: ModelConfig, timeout_s: float = 3.0) -> tuple[bool, str]:
    """Whether the config's pretrained weights can be had now: in the local cache, or the hub reachable."""
    import socket

    tag = config.open_clip.pretrained
    if not tag:
        return False, f"{config.model_id} has no pretrained weights (demo model)"
    cfg = open_clip.get_pretrained_cfg(config.open_clip.architecture, tag) or {}
    repo = (cfg.get("hf_hub") or "").strip("/")
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(repo, filename), str):
                return True, f"{repo}/{filename} is in the local cache"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False, "HF_HUB_OFFLINE=1 and the weights are not in the local cache"
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout_s).close()
    except OSError as error:
        return False, f"the Hugging Face hub is unreachable ({type(error).__name__}) and the weights are not cached"
    return True, "the Hugging Face hub is reachable"
