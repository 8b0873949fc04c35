"""The manifest records the serving runtime the gate validated with; the container refuses any other."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from inference_code.embedder import ClipEmbedder
from inference_code.manifest import (
    ALLOW_RUNTIME_MISMATCH_ENV,
    MANIFEST_FILE,
    ArtifactIntegrityError,
    RuntimeMismatchError,
    load_manifest,
    runtime_versions,
    verify_artifact,
)


def rewrite_runtime(directory, runtime: dict) -> None:
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest["runtime"] = runtime
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_the_manifest_records_the_runtime_packaging_and_validation_ran_with(tiny_fp32):
    runtime = load_manifest(tiny_fp32.directory).runtime
    assert set(runtime) >= {"onnxruntime", "numpy", "pillow", "python"}
    assert runtime == runtime_versions()
    assert runtime["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.mark.parametrize("name", ["onnxruntime", "numpy", "pillow", "python"])
def test_another_runtime_is_refused(artifact_copy, name, monkeypatch):
    monkeypatch.delenv(ALLOW_RUNTIME_MISMATCH_ENV, raising=False)
    rewrite_runtime(artifact_copy, {**runtime_versions(), name: "0.0.1"})
    with pytest.raises(RuntimeMismatchError, match=rf"{name} 0\.0\.1 -> "):
        ClipEmbedder(artifact_copy)
    assert issubclass(RuntimeMismatchError, ArtifactIntegrityError)  # server.serve: exit 3, as for a changed file


def test_a_manifest_without_a_runtime_record_is_refused(artifact_copy, monkeypatch):
    monkeypatch.delenv(ALLOW_RUNTIME_MISMATCH_ENV, raising=False)
    rewrite_runtime(artifact_copy, {})
    with pytest.raises(RuntimeMismatchError, match=r"onnxruntime \(not recorded\)"):
        verify_artifact(artifact_copy)


def test_the_local_escape_hatch_is_explicit_and_logged(artifact_copy, monkeypatch, caplog):
    rewrite_runtime(artifact_copy, {**runtime_versions(), "onnxruntime": "0.0.1"})
    monkeypatch.setenv(ALLOW_RUNTIME_MISMATCH_ENV, "true")  # only "1" opens it
    with pytest.raises(RuntimeMismatchError):
        verify_artifact(artifact_copy)
    monkeypatch.setenv(ALLOW_RUNTIME_MISMATCH_ENV, "1")
    # another library's logging.config call (disable_existing_loggers) may have disabled the logger in this process
    monkeypatch.setattr(logging.getLogger("inference_code.manifest"), "disabled", False)
    caplog.set_level(logging.WARNING, logger="inference_code.manifest")
    assert verify_artifact(artifact_copy).model_id == "clip-tiny"
    assert "serving anyway" in caplog.text and "onnxruntime 0.0.1" in caplog.text


def test_the_server_refuses_to_start_under_another_runtime(artifact_copy, monkeypatch):
    monkeypatch.delenv(ALLOW_RUNTIME_MISMATCH_ENV, raising=False)
    rewrite_runtime(artifact_copy, {**runtime_versions(), "pillow": "0.0.1"})
    result = subprocess.run([sys.executable, "-m", "inference_code", "serve", "--model-dir", str(artifact_copy), "--port", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "refusing to serve" in result.stderr and "pillow 0.0.1 -> " in result.stderr
