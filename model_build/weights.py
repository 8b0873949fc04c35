"""Building an open_clip model with the weights an artifact is made from.

Sources (the `--weights` option):
  pretrained      the model config's open_clip pretrained tag, read from the exact file the config
                  pins (open_clip.weights_file: url + sha256): downloaded once into the standard cache
                  (~/.cache/clip, as OpenAI's clip.load and open_clip use; CLIP_API_WEIGHTS_CACHE moves
                  it) with a progress bar, resumed after an interruption, and refused unless its sha256
                  is the pinned one
  random-init     seeded random init: real architecture, meaningless embeddings (tests, demo); `random` also
                  accepted (the vocabulary: model_build/weights_source.py)
  PATH | s3://... an open_clip state-dict checkpoint (.pt, .bin or .safetensors)
Unreachable weights raise WeightsUnavailableError naming the alternatives; there is never a
silent fallback to another source.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch

from clip_core.model_config import ModelConfig, PinnedWeightsFile
from clip_core.paths import OPEN_CLIP_CONFIGS_DIR
from clip_core.s3_uri import split_s3_uri
from inference_code.manifest import PreprocessInfo, WeightsInfo, sha256_file
from model_build.weights_source import PRETRAINED, RANDOM_INIT, WeightsSource

logger = logging.getLogger(__name__)


class WeightsUnavailableError(RuntimeError):
    pass


class WeightsDigestMismatch(WeightsUnavailableError):
    """A downloaded weights file is not the file the config pins: it is deleted, never loaded."""


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


_OPENAI_ARCHIVE_EXTRAS = ("input_resolution", "context_length", "vocab_size")
_CHUNK = 1 << 20


def weights_cache_dir() -> Path:
    """The standard cache of CLIP weight files (~/.cache/clip, as OpenAI's clip.load and open_clip use)."""
    configured = os.environ.get("CLIP_API_WEIGHTS_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clip"


def offline() -> bool:
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes") for name in ("CLIP_API_OFFLINE", "HF_HUB_OFFLINE"))


def pinned_file_path(pin: PinnedWeightsFile, cache_dir: Path | str | None = None) -> Path:
    return Path(cache_dir or weights_cache_dir()) / Path(urllib.parse.urlparse(pin.url).path).name


def _show_progress() -> bool:
    forced = os.environ.get("CLIP_API_PROGRESS", "").lower()
    return forced in ("1", "true", "yes") if forced else sys.stderr.isatty()


def _download(url: str, part: Path, progress: bool) -> None:
    """Into `part`, resuming from its current size with an HTTP Range request where the server allows it."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "clip-embedding-api"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to fetch: the digest decides
            return
        raise WeightsUnavailableError(f"downloading {url} failed: HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        raise WeightsUnavailableError(f"{url} could not be reached ({type(error).__name__}: {str(error)[:200]})") from None
    with response:
        if offset and response.status != 206:  # the server ignored the range: start again
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        try:
            with open(part, "ab" if offset else "wb") as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {part.name[:-5]}",
                disable=not progress, file=sys.stderr, mininterval=0.5, dynamic_ncols=True,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        except OSError as error:
            raise WeightsUnavailableError(
                f"the download of {url} stopped at {part.stat().st_size} bytes ({type(error).__name__}); run again to resume it"
            ) from None
    if total is not None and part.stat().st_size < total:
        raise WeightsUnavailableError(f"the download of {url} stopped at {part.stat().st_size} of {total} bytes; run again to resume it")


def fetch_pinned_file(pin: PinnedWeightsFile, cache_dir: Path | str | None = None, progress: bool | None = None, log=None) -> Path:
    """The pinned file, verified: from the cache, or downloaded (resumable) into it. Any other digest is refused."""
    log = log or logger.warning
    target = pinned_file_path(pin, cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file():
        actual = sha256_file(target)
        if actual == pin.sha256:
            return target
        log(f"{target} has sha256 {actual}, not the pinned {pin.sha256}: it is not used; downloading the pinned file")
        target.unlink()
    if offline():
        raise WeightsUnavailableError(f"offline (CLIP_API_OFFLINE/HF_HUB_OFFLINE) and {target} is not in the cache")
    part = target.with_name(target.name + ".part")
    _download(pin.url, part, _show_progress() if progress is None else progress)
    actual = sha256_file(part)
    if actual != pin.sha256:
        part.unlink()
        raise WeightsDigestMismatch(
            f"refused the weights downloaded from {pin.url}: their sha256 is {actual}, the config pins {pin.sha256}. "
            "The file was deleted and nothing was loaded; check the URL, a proxy or mirror in between, and the config's sources."
        )
    os.replace(part, target)
    return target


def load_pinned_weights(model: torch.nn.Module, path: Path, pin: PinnedWeightsFile) -> None:
    """Load a verified file into `model` (fp32), every tensor accounted for."""
    if pin.format == "openai-torchscript":
        archive = torch.jit.load(str(path), map_location="cpu")  # only ever a file whose digest was verified
        state = {name: tensor for name, tensor in archive.state_dict().items() if name not in _OPENAI_ARCHIVE_EXTRAS}
    else:
        from open_clip.factory import load_state_dict

        state = load_state_dict(str(path))
    state = {name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsUnavailableError(f"{path.name} does not fit the architecture: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")


def _pinned_pretrained_file(config: ModelConfig, architecture: str, tag: str, cache_dir: str | None) -> tuple[Path, PinnedWeightsFile]:
    pin = config.open_clip.weights_file
    if pin is None:
        raise WeightsUnavailableError(
            f"{config.model_id} pins no weights file for {architecture}/{tag}: add open_clip.weights_file (url, sha256, sources) to its config"
        )
    try:
        return fetch_pinned_file(pin, cache_dir), pin
    except WeightsDigestMismatch:
        raise
    except WeightsUnavailableError as error:
        raise WeightsUnavailableError(
            f"the pretrained weights {architecture}/{tag} could not be downloaded or found in the cache ({error}). "
            f"Alternatives: run where {urllib.parse.urlparse(pin.url).netloc} is reachable, or put the pinned file "
            f"(sha256 {pin.sha256}) at {pinned_file_path(pin, cache_dir)} (CLIP_API_WEIGHTS_CACHE moves the cache); "
            "pass --weights PATH or --weights s3://bucket/key with an open_clip checkpoint, or --weights random-init for a "
            "demo-only artifact."
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
    if source.kind == RANDOM_INIT:
        torch.manual_seed(seed)
        model = open_clip.create_model(architecture, pretrained=None)
        extra = {"seed": seed}
    elif source.kind == PRETRAINED:
        if not tag:
            raise WeightsUnavailableError(f"{config.model_id} has no pretrained tag; use --weights random-init or a checkpoint path")
        path, pin = _pinned_pretrained_file(config, architecture, tag, cache_dir)
        model = open_clip.create_model(architecture, pretrained=None)
        load_pinned_weights(model, path, pin)
        extra = {"pretrained_tag": tag, "checkpoint": pin.url, "checkpoint_sha256": pin.sha256}
    else:
        location = source.location or ""
        path = fetch_s3_checkpoint(location) if location.startswith("s3://") else Path(location)
        if not Path(path).is_file():
            raise WeightsUnavailableError(f"checkpoint {location} does not exist; use --weights pretrained or --weights random-init")
        model = open_clip.create_model(architecture, pretrained=str(path))
        extra = {"checkpoint": location, "checkpoint_sha256": sha256_file(path)}
    model.eval()
    quick_gelu = uses_quick_gelu(model)
    if architecture == config.open_clip.architecture and trained_with_quick_gelu(config) and not quick_gelu:
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
    weights = WeightsInfo(source=source.kind, sha256=state_dict_sha256(model), **extra)
    return BuiltModel(model, architecture, weights, preprocess, int(model.context_length), quick_gelu)


def trained_with_quick_gelu(config: ModelConfig) -> bool:
    """OpenAI's released weights (every openai-torchscript file, and open_clip's tags marked so) were trained with QuickGELU."""
    tag = config.open_clip.pretrained
    pin = config.open_clip.weights_file
    registered = open_clip.get_pretrained_cfg(config.open_clip.architecture, tag) if tag else {}
    return bool(registered.get("quick_gelu") or (pin is not None and pin.format == "openai-torchscript"))


def pretrained_available(config: ModelConfig, timeout_s: float = 3.0) -> tuple[bool, str]:
    """Whether the config's pinned weights file can be had now: verified in the cache, or its server reachable."""
    import socket

    tag = config.open_clip.pretrained
    if not tag:
        return False, f"{config.model_id} has no pretrained weights (demo model)"
    pin = config.open_clip.weights_file
    if pin is None:
        return False, f"{config.model_id} pins no weights file"
    path = pinned_file_path(pin)
    if path.is_file() and sha256_file(path) == pin.sha256:
        return True, f"{path} is in the cache (sha256 verified)"
    if offline():
        return False, "offline (CLIP_API_OFFLINE/HF_HUB_OFFLINE) and the weights are not in the cache"
    url = urllib.parse.urlparse(pin.url)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout_s).close()
    except OSError as error:
        return False, f"{url.hostname} is unreachable ({type(error).__name__}) and the weights are not cached"
    return True, f"{url.hostname} is reachable (the weights will be downloaded into {path.parent})"
