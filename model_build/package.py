"""`clip-api package`: an open_clip model to a SageMaker serving artifact (model.tar.gz).

Layout (SageMaker extracts it under /opt/ml/model):
  manifest.json                    what this is, how to serve it, sha256 of every other file
  image_encoder.onnx               image tower, dynamic batch axis
  text_encoder.onnx                text tower, dynamic batch axis
  bpe_simple_vocab_16e6.txt.gz     the CLIP BPE vocabulary
  code/inference.py                SageMaker inference-toolkit entry (model_fn, input_fn, ...)
  code/inference_code/...          the torch-free serving package it imports
  code/requirements.txt            the serving package's dependencies
"""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import clip_core
import inference_code
from clip_core.model_config import ModelConfig
from inference_code.manifest import (
    IMAGE_ENCODER_FILE,
    MANIFEST_FILE,
    TEXT_ENCODER_FILE,
    VOCAB_FILE,
    Manifest,
    TokenizerInfo,
    runtime_versions,
    sha256_file,
)
from model_build.progress import Progress
from model_build.weights import build_model
from model_build.weights_source import WeightsSource

ARTIFACT_FILE = "model.tar.gz"
SERVING_PACKAGE_DIR = Path(inference_code.__file__).parent
_SERVING_PACKAGE_FILES = ("*.py", VOCAB_FILE, "requirements.txt")
# The foundation modules the serving package imports (no pydantic, no yaml: the container has neither).
FOUNDATION_DIR = Path(clip_core.__file__).parent
SERVING_FOUNDATION_FILES = ("__init__.py", "limits.py", "names.py")


@dataclass(frozen=True)
class PackageResult:
    artifact: Path  # model.tar.gz
    directory: Path  # the same content, unpacked
    manifest: Manifest


def _library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import open_clip
    import torch

    return {
        "open_clip": open_clip.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


def copy_serving_code(code_dir: Path) -> None:
    package_dir = code_dir / "inference_code"
    package_dir.mkdir(parents=True)
    for pattern in _SERVING_PACKAGE_FILES:
        for path in SERVING_PACKAGE_DIR.glob(pattern):
            shutil.copy2(path, package_dir / path.name)
    (code_dir / "clip_core").mkdir()
    for name in SERVING_FOUNDATION_FILES:
        shutil.copy2(FOUNDATION_DIR / name, code_dir / "clip_core" / name)
    shutil.copy2(SERVING_PACKAGE_DIR / "sagemaker_entry.py", code_dir / "inference.py")
    shutil.copy2(SERVING_PACKAGE_DIR / "requirements.txt", code_dir / "requirements.txt")


def file_digests(directory: Path) -> dict[str, str]:
    return {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE and "__pycache__" not in path.parts
    }


def content_version(files: dict[str, str], variant: str) -> str:
    """Content-addressed version: the same weights, variant and serving code give the same version."""
    digest = hashlib.sha256(variant.encode())
    for name, sha in sorted(files.items()):
        digest.update(f"{name}={sha}\n".encode())
    return digest.hexdigest()[:12]


def write_tarball(directory: Path, target: Path) -> None:
    # ONNX weights barely compress: the fastest level keeps packaging quick at nearly the same size.
    with tarfile.open(target, "w:gz", compresslevel=1) as archive:
        for path in sorted(directory.rglob("*")):
            if "__pycache__" not in path.parts:
                archive.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)


def package_model(
    config: ModelConfig,
    out_dir: Path,
    weights: WeightsSource,
    variant: str | None = None,
    seed: int = 0,
    architecture: str | None = None,
    progress: Progress | None = None,
) -> PackageResult:
    from model_build.onnx_export import export_image_tower, export_text_tower
    from model_build.quantize import int8_op_types, quantize_int8

    variant = variant or config.serving.variant
    if variant not in ("fp32", "int8"):
        raise ValueError(f"variant must be fp32 or int8, got {variant!r}")
    progress = progress or Progress(total_steps=5 if variant == "int8" else 4)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    directory = out_dir / "artifact"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir()

    with progress.step(f"loading {config.model_id} weights ({weights})"):
        built = build_model(config, weights, seed=seed, architecture=architecture)
    if built.preprocess.image_size <= 0 or built.context_length <= 0:
        raise ValueError("the model reports no image size or context length")
    with tempfile.TemporaryDirectory() as scratch:
        staging = Path(scratch) if variant == "int8" else directory
        with progress.step("exporting the image tower to ONNX"):
            export_image_tower(built.model, built.preprocess.image_size, staging / IMAGE_ENCODER_FILE)
        with progress.step("exporting the text tower to ONNX"):
            export_text_tower(built.model, built.context_length, staging / TEXT_ENCODER_FILE)
        quantization = {}
        if variant == "int8":
            quantization = {"int8_op_types": int8_op_types(config.serving.quantize_token_embedding), "per_channel": True}
            with progress.step("quantising both towers to int8"):
                for name in (IMAGE_ENCODER_FILE, TEXT_ENCODER_FILE):
                    quantize_int8(staging / name, directory / name, quantization["int8_op_types"])
    del built.model

    with progress.step("writing manifest and model.tar.gz"):
        shutil.copy2(SERVING_PACKAGE_DIR / VOCAB_FILE, directory / VOCAB_FILE)
        copy_serving_code(directory / "code")
        files = file_digests(directory)
        manifest = Manifest(
            model_id=config.model_id,
            version=content_version(files, variant),
            architecture=built.architecture,
            quick_gelu=built.quick_gelu,
            variant=variant,
            embedding_dim=config.embedding_dim,
            weights=built.weights,
            preprocess=built.preprocess,
            tokenizer=TokenizerInfo(vocab_file=VOCAB_FILE, context_length=built.context_length),
            limits=config.serving.limits.as_dict(),
            files=files,
            versions=_library_versions(),
            runtime=runtime_versions(),  # Package and Validate run one image: the runtime the gate validates with
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            extra={"quantization": quantization} if quantization else {},
            # space: left to Manifest, which computes it (embedding_space) from the fields above, so it is written too
        )
        (directory / MANIFEST_FILE).write_text(manifest.to_json())
        shutil.copy2(directory / MANIFEST_FILE, out_dir / MANIFEST_FILE)
        write_tarball(directory, out_dir / ARTIFACT_FILE)
    return PackageResult(artifact=out_dir / ARTIFACT_FILE, directory=directory, manifest=manifest)


def describe(result: PackageResult) -> dict:
    manifest = asdict(result.manifest)
    return {
        "artifact": str(result.artifact),
        "model_id": manifest["model_id"],
        "version": manifest["version"],
        "variant": manifest["variant"],
        "space": manifest["space"],
        "weights": manifest["weights"],
        "size_bytes": result.artifact.stat().st_size,
    }
