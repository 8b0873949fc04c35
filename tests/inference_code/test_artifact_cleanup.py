"""Temporary extractions of a model.tar.gz are removed on every exit path (issue 13): they used to
pile up in the temp directory (28 of them, 3.4 GB, after one test run and a benchmark)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from inference_code.artifact import extracted_artifact, open_artifact
from tests.conftest import REPO_ROOT, free_port, wait_for_http


def extractions(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("clip-artifact-*"))


@pytest.mark.parametrize(
    "command, sig",
    [
        (["-m", "inference_code", "serve", "--host", "127.0.0.1", "--model-dir"], signal.SIGTERM),
        (["-m", "inference_code", "serve", "--host", "127.0.0.1", "--model-dir"], signal.SIGINT),
        (["-m", "clip_api.cli", "serve", "--host", "127.0.0.1"], signal.SIGTERM),
    ],
    ids=["container-sigterm", "container-ctrl-c", "clip-api-serve-sigterm"],
)
def test_server_removes_its_extraction_on_signal(tiny_fp32, tmp_path, command, sig):
    port = free_port()
    args = [sys.executable, *command, str(tiny_fp32.artifact), "--port", str(port)]
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", timeout_s=90)
        assert len(extractions(tmp_path)) == 1  # it did extract there
        process.send_signal(sig)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert extractions(tmp_path) == [], output.decode(errors="replace")[-2000:]


def test_extracted_artifact_removes_on_error_and_open_artifact_at_exit(tiny_fp32, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(RuntimeError):
        with extracted_artifact(tiny_fp32.artifact) as directory:
            assert (directory / "manifest.json").is_file()
            raise RuntimeError("boom")
    assert extractions(tmp_path) == []
    with extracted_artifact(tiny_fp32.directory) as directory:  # a directory is used in place, never removed
        assert directory == tiny_fp32.directory
    assert tiny_fp32.directory.is_dir()
    # open_artifact's extraction lives until the process exits
    script = f"from inference_code.artifact import open_artifact; print(open_artifact({str(tiny_fp32.artifact)!r}))"
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    printed = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True).stdout
    assert printed.strip().startswith(str(tmp_path))
    assert extractions(tmp_path) == []


def test_a_bad_archive_leaves_nothing(tmp_path, monkeypatch):
    import tarfile
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    archive = tmp_path / "not-an-artifact.tar.gz"
    (tmp_path / "readme.txt").write_text("hello")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "readme.txt", arcname="readme.txt")
    with pytest.raises(FileNotFoundError):
        open_artifact(archive)
    assert extractions(tmp_path / "tmp") == []
