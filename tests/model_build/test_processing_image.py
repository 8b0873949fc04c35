"""The processing image keeps its base image's torch: AWS's DLC is the torch the pipeline validates with."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).parents[2]
DLC_TORCH = {"torch": "2.6.0", "torchvision": "0.21.0"}  # pytorch-training:2.6.0-cpu-py312 (model_build/Dockerfile's BASE_IMAGE)


def test_the_build_extra_admits_the_base_images_torch():
    extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["build"]
    requirements = {Requirement(line).name: Requirement(line) for line in extra}
    for name, version in DLC_TORCH.items():
        assert requirements[name].specifier.contains(version), f"the build extra would replace the image's {name} {version}"


def test_the_dockerfile_installs_under_the_base_images_torch_as_a_constraint():
    dockerfile = (REPO_ROOT / "model_build" / "Dockerfile").read_text()
    locked = json.loads((REPO_ROOT / "infra" / "base-images.json").read_text())["images"]["processing"]["image"]  # the base, by digest
    base = re.search(r"pytorch-training:(\d+\.\d+\.\d+)-cpu", locked)
    assert base and base.group(1) == DLC_TORCH["torch"]
    install = next(line for line in dockerfile.split("RUN ")[1:] if '".[build]"' in line)
    assert "--constraint /tmp/base-image-constraints.txt" in install and "pip freeze" in install
