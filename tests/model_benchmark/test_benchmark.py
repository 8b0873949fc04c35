"""The benchmark reuses a package from an earlier run only if this code would serve it."""

from __future__ import annotations

import json
import shutil

from model_benchmark.benchmark import _reusable


def test_only_packages_this_code_would_serve_are_reused(tiny_fp32, tmp_path):
    copy = tmp_path / "artifact"
    shutil.copytree(tiny_fp32.directory, copy)
    assert _reusable(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "runtime": {}}))  # made by older code: no runtime recorded
    assert not _reusable(copy)
    assert not _reusable(tmp_path / "missing")
