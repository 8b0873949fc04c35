import json
import tarfile

from clip_api.cli import main
import re

from inference_code.manifest import MANIFEST_FILE, embedding_space, load_manifest, sha256_file, verify_files


def test_artifact_layout_and_manifest(tiny_fp32):
    manifest = tiny_fp32.manifest
    with tarfile.open(tiny_fp32.artifact) as archive:
        names = set(archive.getnames())
    for required in (
        "manifest.json", "image_encoder.onnx", "text_encoder.onnx", "bpe_simple_vocab_16e6.txt.gz",
        "code/inference.py", "code/requirements.txt", "code/inference_code/server.py", "code/inference_code/tokenizer.py",
        "code/inference_code/bpe_simple_vocab_16e6.txt.gz",
    ):
        assert required in names
    assert not any("__pycache__" in name for name in names)
    assert manifest.model_id == "clip-tiny" and manifest.architecture == "clip-tiny" and manifest.quick_gelu
    assert manifest.variant == "fp32" and manifest.embedding_dim == 64
    assert manifest.weights.source == "random-init" and manifest.weights.seed == 0
    assert manifest.preprocess.image_size == 224 and manifest.preprocess.interpolation == "bicubic"
    assert manifest.tokenizer.context_length == 77
    assert set(manifest.versions) >= {"open_clip", "torch", "onnxruntime", "onnx"}
    assert manifest.limits["max_request_bytes"] == 4_000_000
    assert set(manifest.files) == names - {"manifest.json"} - {n for n in names if not n.count(".")} - {"code", "code/inference_code"}
    assert verify_files(tiny_fp32.directory, manifest) == []
    assert load_manifest(tiny_fp32.directory) == manifest


def test_tampered_file_is_detected(tiny_fp32, tmp_path):
    import shutil

    copy = tmp_path / "artifact"
    shutil.copytree(tiny_fp32.directory, copy)
    with open(copy / "text_encoder.onnx", "ab") as handle:
        handle.write(b"\0")
    assert verify_files(copy, tiny_fp32.manifest) == ["text_encoder.onnx"]


def test_int8_variant_is_smaller_and_recorded(tiny_fp32, tiny_int8):
    assert tiny_int8.manifest.variant == "int8"
    assert (tiny_int8.directory / "image_encoder.onnx").stat().st_size < (tiny_fp32.directory / "image_encoder.onnx").stat().st_size
    assert tiny_int8.manifest.version != tiny_fp32.manifest.version
    assert tiny_int8.manifest.weights.sha256 == tiny_fp32.manifest.weights.sha256


def test_fp32_and_int8_builds_of_the_same_weights_share_a_space(tiny_fp32, tiny_int8):
    """The space covers what determines the vectors (weights of the fp32 state dict, preprocessing, tokenizer, size),
    not the variant or the ONNX graphs: an int8 build embeds in its fp32 build's space."""
    recorded = {json.loads((p.directory / MANIFEST_FILE).read_text())["space"] for p in (tiny_fp32, tiny_int8)}
    assert recorded == {tiny_fp32.manifest.space} and re.fullmatch(r"[0-9a-f]{12}", tiny_fp32.manifest.space)
    assert embedding_space(tiny_int8.manifest) == embedding_space(tiny_fp32.manifest) == tiny_fp32.manifest.space
    assert tiny_int8.manifest.files["image_encoder.onnx"] != tiny_fp32.manifest.files["image_encoder.onnx"]


def test_other_weights_embed_in_another_space(tiny_fp32, tiny_config, package_random):
    other = package_random(tiny_config, "fp32", seed=1, name="clip-tiny-fp32-seed1")
    assert other.manifest.weights.sha256 != tiny_fp32.manifest.weights.sha256
    assert other.manifest.space != tiny_fp32.manifest.space == load_manifest(tiny_fp32.directory).space


def test_cli_package_command(tmp_path, capsys):
    assert main(["package", "clip-tiny", "--out", str(tmp_path), "--weights", "random", "--seed", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model_id"] == "clip-tiny" and summary["weights"]["seed"] == 1
    assert summary["space"] == load_manifest(tmp_path / "artifact").space
    assert sha256_file(tmp_path / "model.tar.gz") and (tmp_path / "manifest.json").is_file()


def test_cli_package_reports_unreachable_weights(tmp_path, capsys, offline_hub):
    assert main(["package", "clip-vit-b-32", "--out", str(tmp_path / "out")]) == 2
    assert "could not be downloaded" in capsys.readouterr().err
