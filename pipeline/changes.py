"""Which models' pipelines a push should start: those whose config or build code changed."""

from __future__ import annotations

# Everything the processing image runs: a change here can change what any model's build produces.
BUILD_CODE = ("model_build/", "inference_code/", "pipeline/", "clip_api/", "configs/open_clip/", "pyproject.toml")


def changed_models(changed_paths: list[str], model_ids: list[str]) -> list[str]:
    if any(path.startswith(BUILD_CODE) for path in changed_paths):
        return sorted(model_ids)
    touched = {path.split("/")[-1].split(".")[0] for path in changed_paths if path.startswith("configs/models/")}
    return sorted(model_id for model_id in model_ids if model_id in touched)
