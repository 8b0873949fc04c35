"""What was validated is what runs: the container checks the artifact before it loads anything, and refuses to serve otherwise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from inference_code.embedder import ClipEmbedder
from inference_code.manifest import (
    MANIFEST_FILE,
    VALIDATED_MANIFEST_ENV,
    ArtifactIntegrityError,
    Manifest,
    embedding_space,
    load_manifest,
    sha256_file,
    verify_artifact,
)


def test_an_untouched_artifact_loads_with_and_without_the_validated_digest(artifact_copy):
    assert ClipEmbedder(artifact_copy).manifest.model_id == "clip-tiny"
    assert ClipEmbedder(artifact_copy, validated_manifest_sha256=sha256_file(artifact_copy / MANIFEST_FILE)).manifest.model_id == "clip-tiny"


def test_a_changed_file_is_refused(artifact_copy):
    with open(artifact_copy / "text_encoder.onnx", "r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ArtifactIntegrityError, match="text_encoder.onnx"):
        ClipEmbedder(artifact_copy)


def test_a_rewritten_manifest_is_refused_against_the_validated_digest(artifact_copy):
    """Swap a file and rewrite the manifest's digests to match: only the digest the gate recorded catches it."""
    import json

    validated = sha256_file(artifact_copy / MANIFEST_FILE)
    manifest = json.loads((artifact_copy / MANIFEST_FILE).read_text())
    (artifact_copy / "bpe_simple_vocab_16e6.txt.gz").write_bytes(b"not the vocabulary")
    manifest["files"]["bpe_simple_vocab_16e6.txt.gz"] = sha256_file(artifact_copy / "bpe_simple_vocab_16e6.txt.gz")
    manifest["space"] = embedding_space(Manifest.from_dict({**manifest, "space": ""}))  # another vocabulary: another space
    (artifact_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert verify_artifact(artifact_copy).model_id == "clip-tiny"  # the manifest alone now agrees with the files...
    with pytest.raises(ArtifactIntegrityError, match="validated"):
        ClipEmbedder(artifact_copy, validated_manifest_sha256=validated)


def rewrite_manifest(artifact_dir, **changes) -> None:
    import json

    manifest = json.loads((artifact_dir / MANIFEST_FILE).read_text())
    for key, value in changes.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    (artifact_dir / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_a_manifest_whose_recorded_space_differs_is_refused(artifact_copy, tiny_fp32):
    """A space that does not follow from the manifest's weights, preprocessing, tokenizer and size is refused on load."""
    other = "0" * 12 if tiny_fp32.manifest.space != "0" * 12 else "1" * 12
    rewrite_manifest(artifact_copy, space=other)
    with pytest.raises(ArtifactIntegrityError, match="embedding space"):
        verify_artifact(artifact_copy)
    with pytest.raises(ArtifactIntegrityError, match="embedding space"):
        ClipEmbedder(artifact_copy)


def test_changed_weights_under_the_recorded_space_are_refused(artifact_copy):
    """Claiming the old space for other weights (a changed weights digest) is refused too."""
    import json

    weights = json.loads((artifact_copy / MANIFEST_FILE).read_text())["weights"]
    rewrite_manifest(artifact_copy, weights={**weights, "sha256": "e" * 64})
    with pytest.raises(ArtifactIntegrityError, match="embedding space"):
        load_manifest(artifact_copy)


def test_a_manifest_packaged_before_spaces_loads_with_its_computed_space(artifact_copy, tiny_fp32):
    rewrite_manifest(artifact_copy, space=None)
    assert "space" not in (artifact_copy / MANIFEST_FILE).read_text()
    assert verify_artifact(artifact_copy).space == embedding_space(tiny_fp32.manifest) == tiny_fp32.manifest.space


def test_the_server_refuses_to_start_on_a_mismatch(artifact_copy, monkeypatch):
    monkeypatch.setenv(VALIDATED_MANIFEST_ENV, "0" * 64)
    result = subprocess.run([sys.executable, "-m", "inference_code", "serve", "--model-dir", str(artifact_copy), "--port", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "refusing to serve" in result.stderr and "not the artifact that passed the validation gate" in result.stderr
