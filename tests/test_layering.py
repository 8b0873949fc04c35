"""The packages form layers, and imports only go down: the foundation (clip_core) imports no other package
of this project, the serving container's code imports only the foundation, and the CLI (clip_api) is the
only package that may import every other. A module-level or function-level import counts the same."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Lowest first. Packages in one layer do not import each other.
LAYERS = (
    ("clip_core",),
    ("inference_code",),
    ("model_build", "promotion"),
    ("model_validation",),
    ("model_benchmark", "pipeline", "clip_lambdas"),
    ("infra",),
    ("local_mode",),
    ("clip_api",),
)
LAYER_OF = {package: depth for depth, packages in enumerate(LAYERS) for package in packages}
# Where each package lives: at the root, or under lambda/ (a Python keyword, so a folder and not a package).
PACKAGE_ROOTS = (REPO_ROOT, REPO_ROOT / "lambda")
PACKAGE_DIRS = {path.name: path for root in PACKAGE_ROOTS for path in root.iterdir() if (path / "__init__.py").is_file() and path.name != "tests"}


def owner(module: str) -> str | None:
    top = module.split(".")[0]
    return top if top in LAYER_OF else None


def imports_between_packages() -> list[tuple[str, str, str]]:
    """(importing package, imported package, file) for every import of one of this project's packages by another."""
    found = []
    for package in LAYER_OF:
        for file in sorted(PACKAGE_DIRS[package].rglob("*.py")):
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    target = owner(module)
                    if target is not None and target != package:
                        found.append((package, target, str(file.relative_to(REPO_ROOT))))
    return found


def test_every_package_is_in_a_layer():
    assert "clip_lambdas" in PACKAGE_DIRS  # the Lambda functions' package, under lambda/
    assert set(PACKAGE_DIRS) == set(LAYER_OF)


def test_imports_only_go_down():
    edges = imports_between_packages()
    assert ("clip_api", "clip_core", "clip_api/cli.py") in edges  # the walk sees imports
    assert ("clip_lambdas", "inference_code", "lambda/clip_lambdas/api/app.py") in edges  # and the Lambda functions' under lambda/
    upward = [edge for edge in edges if LAYER_OF[edge[1]] >= LAYER_OF[edge[0]]]
    assert upward == [], "imports into the same or a higher layer: " + "; ".join(f"{a} -> {b} ({f})" for a, b, f in upward)


@pytest.mark.parametrize("module", ["clip_core.limits", "clip_core.names", "clip_core.smoke_cases", "clip_core.s3_uri"])
def test_what_the_container_copies_of_the_foundation_imports_only_the_standard_library(module):
    """The serving image has no pydantic or yaml: the foundation modules it may import stay standard-library only."""
    tree = ast.parse((REPO_ROOT / (module.replace(".", "/") + ".py")).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported <= {"__future__", "base64", "dataclasses", "json", "clip_core"}
