"""Which pipelines a push starts (pipeline/changes.py): a model's own config starts its pipeline, shared
build code or config starts every one, anything else none; and what the build runs is all build code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pipeline.changes import BUILD_CODE, changed_models

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVED = ["clip-vit-b-32", "clip-vit-l-14"]  # the served (not demo-only) models, as `clip-api pipeline changed` passes them


def test_a_models_own_config_starts_only_its_pipeline():
    assert changed_models(["configs/models/clip-vit-b-32.yaml"], SERVED) == ["clip-vit-b-32"]
    assert changed_models(["configs/models/clip-vit-l-14.golden.npz", "README.md"], SERVED) == ["clip-vit-l-14"]
    both = ["configs/models/clip-vit-l-14.yaml", "configs/models/clip-vit-b-32.yaml"]
    assert changed_models(both, SERVED) == ["clip-vit-b-32", "clip-vit-l-14"]


def test_a_model_id_that_prefixes_another_is_not_confused_with_it():
    assert changed_models(["configs/models/clip-vit-b-32.yaml"], ["clip-vit-b", "clip-vit-b-32"]) == ["clip-vit-b-32"]
    assert changed_models(["configs/models/clip-vit-b.yaml"], ["clip-vit-b", "clip-vit-b-32"]) == ["clip-vit-b"]


def test_configs_of_models_without_a_pipeline_start_none():
    # clip-tiny is demo-only (no pipeline); a deleted model's config has no pipeline to start
    assert changed_models(["configs/models/clip-tiny.yaml", "configs/models/clip-tiny.golden.npz"], SERVED) == []
    assert changed_models(["configs/models/clip-vit-h-14.yaml"], SERVED) == []


@pytest.mark.parametrize(
    "path",
    ["README.md", "tests/pipeline/test_definition.py", "lambda/clip_lambdas/api/app.py", "promotion/state_machine.py",
     "promotion/clip-embedding-api-promotion.asl.json", "infra/stacks/serving.py", "infra/serving.yaml", "local_mode/up.py", "Makefile",
     "buildspec.yml", "clip_api/cli.py", "promotion/smoke.py", "model_benchmark/benchmark.py"],
)
def test_code_the_build_does_not_run_starts_no_pipeline(path):
    assert changed_models([path], SERVED) == []


@pytest.mark.parametrize(
    "path",
    [
        "model_build/package.py",
        "model_build/Dockerfile",
        "model_validation/validate.py",  # the gate the Validate step runs
        "inference_code/preprocess.py",  # packaged into every artifact
        "inference_code/requirements.lock",  # the runtime Package records and Validate runs
        "pipeline/definition.py",
        "clip_core/model_config.py",  # the config schema: what every config means
        "clip_core/paths.py",
        "configs/open_clip/clip-tiny.json",
        "configs/defaults.yaml",  # a config shared by the models (not one model's own)
        "configs/models/shared/limits.yaml",  # below configs/models/ but not a model's own file
        "clip_core/smoke_cases.py",  # model_validation/validate.py writes the smoke-test references in its format
        "clip_core/limits.py",  # copied into every artifact's manifest and code
        "infra/base-images.json",  # the processing and serving base images (torch, Python)
        ".dockerignore",  # what the processing image's build context holds
        "pyproject.toml",
    ],
)
def test_shared_build_code_or_config_starts_every_pipeline(path):
    assert changed_models([path], SERVED) == SERVED
    assert changed_models(["configs/models/clip-vit-b-32.yaml", path], SERVED) == SERVED


def test_nothing_changed_starts_nothing():
    assert changed_models([], SERVED) == []


def covered(path: str) -> bool:
    """A change of `path` alone starts every model's pipeline."""
    return changed_models([path], SERVED) == SERVED


def test_everything_the_processing_image_copies_is_build_code():
    dockerfile = (REPO_ROOT / "model_build" / "Dockerfile").read_text()
    copied = [src for line in re.findall(r"^COPY\s+(.+)$", dockerfile, re.MULTILINE) for src in line.split()[:-1]]
    assert "configs" in copied and "clip_core" in copied  # the parse found the COPY lines
    uncovered = [src for src in copied if src != "README.md" and not covered(src if "." in Path(src).name else src + "/x")]
    assert uncovered == []


def _repo_module_file(module: str) -> Path | None:
    parts = module.split(".")
    if not (REPO_ROOT / parts[0] / "__init__.py").is_file():
        return None  # not one of this repository's packages
    base = REPO_ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_files(file: Path) -> set[Path]:
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):  # function-level imports too: they run in the steps
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        found |= {path for path in map(_repo_module_file, names) if path is not None}
    return found


def test_every_module_the_build_code_imports_is_build_code():
    """The pipeline's steps run model_build/, model_validation/, pipeline/ and inference_code/ (through
    pipeline/processing_entry.py's package|validate): whatever they import from this repository changes what they build."""
    todo = [p for d in ("model_build", "model_validation", "pipeline", "inference_code") for p in (REPO_ROOT / d).rglob("*.py")]
    seen: set[Path] = set()
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        todo.extend(_imported_files(file))
    reached = sorted(str(p.relative_to(REPO_ROOT)) for p in seen)
    assert "clip_core/smoke_cases.py" in reached and "clip_core/model_config.py" in reached  # the walk follows imports
    assert [path for path in reached if not covered(path)] == []
