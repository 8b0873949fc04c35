"""Which models' pipelines a push should start: those whose config or build code changed."""

from __future__ import annotations

from pathlib import PurePosixPath

# A model's own config files: configs/models/<model_id>.yaml (and files named after it, its golden references).
MODEL_CONFIGS = "configs/models/"

# Everything a change of which can change what any model's pipeline builds, validates or registers:
# - what the processing image copies and runs (model_build/Dockerfile): the build and validation code (their
#   package|validate verbs, model_build/cli.py and model_validation/cli.py), the serving code packaged into
#   every artifact, the pipeline
#   definition, the foundation (the model-config schema, limits, names, the smoke-test cases format Validate
#   writes: clip_core/), every config that is not one model's own (configs/open_clip/ architectures, anything
#   shared beside configs/models/), and the install (pyproject.toml);
# - the pinned base images both Dockerfiles build from (torch, onnxruntime's platform).
BUILD_CODE = (
    "model_build/",
    "model_validation/",
    "inference_code/",
    "pipeline/",
    "clip_core/",
    "configs/",
    "infra/base-images.json",
    ".dockerignore",  # what the processing image's build context holds
    "pyproject.toml",
)


def own_config(path: str) -> bool:
    """A file directly in configs/models/ is one model's own: <model_id>.yaml, or named after it (<model_id>.golden.npz)."""
    return path.startswith(MODEL_CONFIGS) and "/" not in path[len(MODEL_CONFIGS):]


def model_of(path: str, model_ids: list[str]) -> str | None:
    """The model whose own config file `path` is, if it is one of `model_ids`."""
    name = PurePosixPath(path).name
    return next((model_id for model_id in model_ids if name.startswith(model_id + ".")), None) if own_config(path) else None


def changed_models(changed_paths: list[str], model_ids: list[str]) -> list[str]:
    """Every model when shared build code or config changed; otherwise the models whose own config changed."""
    if any(path.startswith(BUILD_CODE) and not own_config(path) for path in changed_paths):
        return sorted(model_ids)
    touched = {model_of(path, model_ids) for path in changed_paths}
    return sorted(model_id for model_id in model_ids if model_id in touched)
