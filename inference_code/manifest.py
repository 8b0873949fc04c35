"""The artifact manifest: what a serving artifact holds and how to serve it.

Written by model_build when packaging, read by the serving container at start and by the
validation gate. One definition serves both so they cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_FILE = "manifest.json"
IMAGE_ENCODER_FILE = "image_encoder.onnx"
TEXT_ENCODER_FILE = "text_encoder.onnx"
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class WeightsInfo:
    source: str  # "pretrained" | "checkpoint" | "random-init"
    sha256: str  # digest of the state dict's tensors: identifies the weights whatever the source
    pretrained_tag: str | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class PreprocessInfo:
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"


@dataclass(frozen=True)
class TokenizerInfo:
    vocab_file: str = VOCAB_FILE
    context_length: int = 77
    clean: str = "lower"


@dataclass(frozen=True)
class Manifest:
    model_id: str
    version: str
    architecture: str
    quick_gelu: bool
    variant: str
    embedding_dim: int
    weights: WeightsInfo
    preprocess: PreprocessInfo
    tokenizer: TokenizerInfo
    limits: dict
    files: dict[str, str]
    versions: dict[str, str]
    created_at: str
    schema_version: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)
    # The serving runtime the validation gate ran the artifact with (runtime_versions()): the container refuses any other.
    runtime: dict[str, str] = field(default_factory=dict)
    # The embedding space (embedding_space()): vectors of two artifacts are comparable only when their spaces are equal.
    # Computed when not given; a manifest read from JSON whose recorded space differs is refused (from_dict).
    space: str = ""

    def __post_init__(self) -> None:
        if not self.space:
            object.__setattr__(self, "space", embedding_space(self))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported manifest schema_version {data.get('schema_version')!r}")
        manifest = cls(
            **{
                **data,
                "weights": WeightsInfo(**data["weights"]),
                "preprocess": PreprocessInfo(
                    **{**data["preprocess"], "mean": tuple(data["preprocess"]["mean"]), "std": tuple(data["preprocess"]["std"])}
                ),
                "tokenizer": TokenizerInfo(**data["tokenizer"]),
                "space": "",  # computed from the fields, then compared with the recorded one
            }
        )
        recorded = data.get("space") or ""  # manifests packaged before spaces existed record none: theirs is computed
        if recorded and recorded != manifest.space:
            raise ArtifactIntegrityError(
                f"the manifest records embedding space {recorded!r}, but its weights, preprocessing, tokenizer and size give "
                f"{manifest.space!r}: the manifest was changed after packaging"
            )
        return manifest


# Bump only with a deliberate change of what a space covers: every artifact's space id changes with it.
SPACE_SCHEMA = 1
SPACE_ID_CHARS = 12


def space_definition(manifest: Manifest) -> dict:
    """What determines the vectors an artifact computes, and nothing else: the variant (fp32, int8), version,
    limits, runtime and the ONNX graphs' files are left out, so builds of the same weights share a space."""
    return {
        "space_schema": SPACE_SCHEMA,
        "architecture": manifest.architecture,
        "quick_gelu": bool(manifest.quick_gelu),
        "weights_sha256": manifest.weights.sha256,  # of the fp32 state dict, before any quantisation
        "preprocess": {
            **asdict(manifest.preprocess),
            "image_size": int(manifest.preprocess.image_size),
            "mean": [float(x) for x in manifest.preprocess.mean],
            "std": [float(x) for x in manifest.preprocess.std],
        },
        "tokenizer": {
            "context_length": int(manifest.tokenizer.context_length),
            "clean": manifest.tokenizer.clean,
            "vocab_sha256": manifest.files.get(manifest.tokenizer.vocab_file, ""),
        },
        "embedding_dim": int(manifest.embedding_dim),
    }


def embedding_space(manifest: Manifest) -> str:
    """The artifact's embedding space id: 12 lowercase hex characters of the sha256 of space_definition()'s
    canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(space_definition(manifest), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:SPACE_ID_CHARS]


def load_manifest(artifact_dir: Path | str) -> Manifest:
    path = Path(artifact_dir) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a serving artifact directory")
    return Manifest.from_dict(json.loads(path.read_text()))


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_files(artifact_dir: Path | str, manifest: Manifest) -> list[str]:
    """Names of files whose sha256 differs from the manifest's (missing files included)."""
    bad = []
    for name, expected in manifest.files.items():
        path = Path(artifact_dir) / name
        if not path.is_file() or sha256_file(path) != expected:
            bad.append(name)
    return bad


# The digest of the manifest.json the validation gate passed, registered with the model package and
# given to the container by SageMaker (the model's Environment): what was validated is what runs.
VALIDATED_MANIFEST_ENV = "CLIP_API_MANIFEST_SHA256"


class ArtifactIntegrityError(RuntimeError):
    """The artifact on disk is not the one that was validated: the server refuses to start."""


# The libraries whose versions decide what the encoders compute, and the interpreter's minor version.
RUNTIME_PACKAGES = ("onnxruntime", "numpy", "pillow")
# Local development only, off by default: serve although the runtime differs from the validated one (logged).
ALLOW_RUNTIME_MISMATCH_ENV = "CLIP_API_ALLOW_RUNTIME_MISMATCH"


class RuntimeMismatchError(ArtifactIntegrityError):
    """The runtime differs from the one the validation gate ran the artifact with: the server refuses to start."""


def runtime_versions() -> dict[str, str]:
    """This process's serving runtime, as the manifest records it (versions of distributions, not of modules)."""
    from importlib.metadata import version

    return {**{name: version(name) for name in RUNTIME_PACKAGES}, "python": f"{sys.version_info.major}.{sys.version_info.minor}"}


def runtime_differences(recorded: dict[str, str], found: dict[str, str]) -> list[str]:
    """`name recorded -> found` for each runtime component that differs (one the manifest lacks included)."""
    names = sorted(set(found) | set(recorded))
    return [f"{name} {recorded.get(name, '(not recorded)')} -> {found.get(name, '(absent)')}" for name in names if recorded.get(name) != found.get(name)]


def verify_runtime(manifest: Manifest, found: dict[str, str] | None = None, env=os.environ) -> None:
    """Refuse (RuntimeMismatchError) unless this runtime is the one the manifest records; the
    ALLOW_RUNTIME_MISMATCH_ENV escape hatch (=1) turns the refusal into a warning for local development."""
    differences = runtime_differences(manifest.runtime, runtime_versions() if found is None else found)
    if not differences:
        return
    message = (f"the serving runtime differs from the one the validation gate ran {manifest.model_id} version {manifest.version} with: "
               f"{'; '.join(differences)}: build the serving image from inference_code/requirements.lock, or repackage and revalidate")
    if env.get(ALLOW_RUNTIME_MISMATCH_ENV) == "1":
        logging.getLogger(__name__).warning("%s (serving anyway: %s=1, for local development only)", message, ALLOW_RUNTIME_MISMATCH_ENV)
        return
    raise RuntimeMismatchError(message)


def verify_artifact(artifact_dir: Path | str, validated_manifest_sha256: str | None = None) -> Manifest:
    """Check every file against the manifest, and the manifest against the validated digest (when one
    is given), and this runtime against the validated one, before anything is loaded; return the
    manifest. Costs one sha256 pass over the files."""
    artifact_dir = Path(artifact_dir)
    if validated_manifest_sha256:
        found = sha256_file(artifact_dir / MANIFEST_FILE)
        if found != validated_manifest_sha256:
            raise ArtifactIntegrityError(f"{MANIFEST_FILE} has sha256 {found}, but the validated artifact's is {validated_manifest_sha256}: "
                                         "this is not the artifact that passed the validation gate")
    manifest = load_manifest(artifact_dir)
    if bad := verify_files(artifact_dir, manifest):
        raise ArtifactIntegrityError(f"files differ from the manifest's sha256: {', '.join(bad)}: the artifact was changed after packaging")
    verify_runtime(manifest)
    return manifest
