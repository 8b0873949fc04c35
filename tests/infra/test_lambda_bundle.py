"""The Lambda zip is refused, before anything is uploaded, when its functions could not start."""

from __future__ import annotations

import pytest

from clip_core.paths import PACKAGED_CONFIGS_DIR
from infra.lambda_bundle import LAMBDA_ROOT, BundleError, bundle_files


def test_a_tree_without_the_functions_code_is_refused(tmp_path):
    """An installed package has no lambda/ folder: the zip would hold configs and nothing to run."""
    with pytest.raises(BundleError, match="no Lambda handler"):
        bundle_files(lambda_root=tmp_path)


def test_configs_that_are_not_there_are_refused(tmp_path):
    """A checkout with core.symlinks=false keeps clip_core/configs as a text file: the API Lambda would fail to start."""
    link_as_text = tmp_path / "configs"
    link_as_text.write_text("../configs")
    with pytest.raises(BundleError, match="model configs"):
        bundle_files(configs_dir=link_as_text)


def test_only_the_package_data_is_bundled(tmp_path):
    configs = tmp_path / "configs"
    (configs / "models").mkdir(parents=True)
    (configs / "open_clip").mkdir()
    (configs / "models" / "clip-a.yaml").write_text("model_id: clip-a\n")
    (configs / "open_clip" / "arch.json").write_text("{}")
    (configs / "models" / "notes.txt").write_text("a stray file")
    (configs / "models" / "clip-a.yaml.swp").write_text("an editor's")
    names = {name for name in bundle_files(configs_dir=configs) if name.startswith("clip_core/configs/")}
    assert names == {"clip_core/configs/models/clip-a.yaml", "clip_core/configs/open_clip/arch.json"}


def test_the_repository_bundles(tmp_path):
    files = bundle_files(LAMBDA_ROOT, configs_dir=PACKAGED_CONFIGS_DIR)
    assert "clip_core/configs/models/clip-vit-b-32.yaml" in files and "clip_lambdas/api/app.py" in files
