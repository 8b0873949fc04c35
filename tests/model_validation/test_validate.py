"""The validation gate on real artifacts: faithful ones pass, artifacts broken on purpose fail for the right reason."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from clip_api.cli import main
from inference_code.manifest import MANIFEST_FILE, ArtifactIntegrityError, Manifest, load_manifest, sha256_file
from model_validation.golden import GoldenReferences, golden_path
from model_validation.validate import validate_artifact


def reasons_of(result) -> list[str]:
    return result.report["verdict"]["reasons"]


def only_image_parity_and_golden(reasons: list[str]) -> bool:
    """A broken image path fails image parity; the golden check, which sees the same embeddings, may fail too."""
    return any(r.startswith("image parity") for r in reasons) and all(r.startswith(("image parity", "golden:")) for r in reasons)


def copy_artifact(package, tmp_path):
    target = tmp_path / "artifact"
    shutil.copytree(package.directory, target)
    return target


def rewrite_manifest(directory, changes: dict[tuple[str, ...], object]) -> None:
    """Change manifest fields as a packager would: the recorded embedding space is recomputed, so the manifest stays consistent."""
    data = json.loads((directory / MANIFEST_FILE).read_text())
    for (*parents, leaf), value in changes.items():
        node = data
        for key in parents:
            node = node[key]
        node[leaf] = value
    data["space"] = Manifest.from_dict({**data, "space": ""}).space
    (directory / MANIFEST_FILE).write_text(json.dumps(data))


def test_faithful_tiny_artifact_passes_with_golden_references(tiny_fp32, tiny_config):
    result = validate_artifact(tiny_fp32.directory, tiny_config)
    assert result.passed, reasons_of(result)
    metrics = result.report["metrics"]
    assert metrics["parity_min_cosine"] >= 0.99999 and metrics["token_ids_equal"] is True
    assert metrics["golden_min_cosine"] >= 0.99999  # the shipped golden file of the tiny model's weights
    assert metrics["deterministic"] and metrics["max_norm_error"] < 1e-5 and metrics["embedding_dim_ok"]
    assert metrics["latency_image_p50_ms"] > 0
    assert golden_path("clip-tiny").is_file()


def test_perturbed_weights_fail_the_golden_check(tiny_config, tmp_path, package_random):
    from model_build.package import package_model
    from model_build.progress import Progress
    from model_build.weights import build_model
    from model_build.weights_source import RANDOM_INIT, WeightsSource

    model = build_model(tiny_config, WeightsSource(RANDOM_INIT), seed=0).model
    generator = torch.Generator().manual_seed(1)
    state = {k: v + 0.05 * torch.randn(v.shape, generator=generator) * v.std() if v.dtype.is_floating_point and v.numel() > 1 else v
             for k, v in model.state_dict().items()}
    checkpoint = tmp_path / "perturbed.pt"
    torch.save(state, checkpoint)
    result_pkg = package_model(tiny_config, tmp_path / "out", WeightsSource.parse(str(checkpoint)), progress=Progress(4, enabled=False))
    result = validate_artifact(result_pkg.directory, tiny_config)
    reasons = reasons_of(result)
    assert any(r.startswith("golden: min cosine") for r in reasons), reasons
    assert result.report["metrics"]["parity_min_cosine"] >= 0.99999  # the serving path itself is faithful


def test_gelu_instead_of_quick_gelu_fails(tiny_config, tiny_gelu_artifact):
    reasons = reasons_of(validate_artifact(tiny_gelu_artifact.directory, tiny_config))
    assert any("architecture clip-tiny-gelu differs" in r for r in reasons)
    assert any(r.startswith("text parity") for r in reasons) and any(r.startswith("image parity") for r in reasons)


@pytest.fixture(scope="module")
def tiny_gelu_artifact(package_random, tiny_config, tmp_path_factory):
    import open_clip

    from clip_core.paths import OPEN_CLIP_CONFIGS_DIR

    config = json.loads((OPEN_CLIP_CONFIGS_DIR / "clip-tiny.json").read_text())
    config["quick_gelu"] = False
    path = tmp_path_factory.mktemp("gelu-arch") / "clip-tiny-gelu.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    return package_random(tiny_config, "fp32", architecture="clip-tiny-gelu", name="validate-gelu")


def test_wrong_normalisation_constants_fail_image_parity(tiny_fp32, tiny_config, tmp_path):
    artifact = copy_artifact(tiny_fp32, tmp_path)
    rewrite_manifest(artifact, {("preprocess", "mean"): [0.485, 0.456, 0.406], ("preprocess", "std"): [0.229, 0.224, 0.225]})
    reasons = reasons_of(validate_artifact(artifact, tiny_config))
    assert only_image_parity_and_golden(reasons), reasons


def test_non_antialiased_resize_fails_image_parity(tiny_fp32, tiny_config, tmp_path):
    """Serving code that resizes without antialiasing (nearest neighbour), shipped with a consistent manifest."""
    artifact = copy_artifact(tiny_fp32, tmp_path)
    source = artifact / "code" / "inference_code" / "preprocess.py"
    text = source.read_text()
    patched = text.replace("image.resize(resized_size(*image.size, size), Image.Resampling.BICUBIC)",
                           "image.resize(resized_size(*image.size, size), Image.Resampling.NEAREST)")
    assert patched != text
    source.write_text(patched)
    rewrite_manifest(artifact, {("files", "code/inference_code/preprocess.py"): sha256_file(source)})
    reasons = reasons_of(validate_artifact(artifact, tiny_config))
    assert only_image_parity_and_golden(reasons), reasons


def test_tampered_artifact_fails_its_file_check(tiny_fp32, tiny_config, tmp_path):
    artifact = copy_artifact(tiny_fp32, tmp_path)
    with open(artifact / "code" / "requirements.txt", "a") as handle:
        handle.write("evil-package\n")
    assert any("sha256" in r for r in reasons_of(validate_artifact(artifact, tiny_config)))


def test_a_manifest_claiming_another_space_is_refused_by_the_gate(tiny_fp32, tiny_config, tmp_path, capsys):
    """New normalisation constants under the old space id: the gate refuses to read the manifest, and registers nothing."""
    artifact = copy_artifact(tiny_fp32, tmp_path)
    data = json.loads((artifact / MANIFEST_FILE).read_text())
    data["preprocess"]["mean"] = [0.485, 0.456, 0.406]
    (artifact / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ArtifactIntegrityError, match="embedding space"):
        validate_artifact(artifact, tiny_config)
    assert main(["validate", str(artifact), "--report", str(tmp_path / "report.json")]) == 2
    assert "embedding space" in capsys.readouterr().err and not (tmp_path / "report.json").exists()


def test_int8_held_to_a_threshold_it_cannot_meet(tiny_int8, tiny_config):
    strict = tiny_config.model_copy(update={"validation": tiny_config.validation.model_copy(update={"parity_min_cosine": {"fp32": 0.99999, "int8": 0.99999}})})
    reasons = reasons_of(validate_artifact(tiny_int8.directory, strict))
    assert any(r.startswith("text parity") and "(int8)" in r for r in reasons), reasons
    assert validate_artifact(tiny_int8.directory, tiny_config).passed  # its own threshold (0.998) it meets


def test_random_init_artifact_under_a_production_config_fails(tiny_fp32, tiny_config):
    production = tiny_config.model_copy(update={"validation": tiny_config.validation.model_copy(update={"allow_random_init": False})})
    reasons = reasons_of(validate_artifact(tiny_fp32.directory, production))
    assert reasons == ["weights are random-init and the model config does not allow it (demo/test configs only)"]


def test_stale_golden_file_is_reported(tiny_fp32, tiny_config, tmp_path):
    golden = GoldenReferences.load(golden_path("clip-tiny"))
    stale = GoldenReferences(golden.text, golden.image, {**golden.metadata, "probe_set_sha256": "0" * 64})
    stale.save(tmp_path / "stale.npz")
    reasons = reasons_of(validate_artifact(tiny_fp32.directory, tiny_config, golden_file=tmp_path / "stale.npz"))
    assert any("different probe set" in r for r in reasons)


@pytest.mark.slow
def test_random_init_b32_validates_offline_and_is_refused_by_its_production_config(b32_fp32, b32_config):
    result = validate_artifact(b32_fp32.directory, b32_config)
    assert result.report["metrics"]["parity_min_cosine"] >= 0.99999
    assert reasons_of(result) == ["weights are random-init and the model config does not allow it (demo/test configs only)"]
    # the full-size architecture at random init is far from the sanity thresholds set from chance
    metrics, thresholds = result.report["metrics"], result.report["thresholds"]
    assert metrics["zero_shot_top1"] < thresholds["zero_shot_min_top1"]
    assert metrics["text_similarity_accuracy"] < thresholds["text_similarity_min_accuracy"]


def test_cli_validate_and_references(tiny_fp32, tmp_path, capsys):
    report = tmp_path / "out" / "evaluation.json"
    assert main(["validate", str(tiny_fp32.artifact), "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["verdict"]["passed"] is True and data["artifact"]["version"] == tiny_fp32.manifest.version
    assert json.loads((report.parent / "model_quality.json").read_text())["embedding_quality_metrics"]
    capsys.readouterr()
    assert main(["validate", str(tiny_fp32.artifact), "--report", str(report), "--model-id", "clip-vit-b-32", "--fail-on-reject"]) == 1
    assert json.loads(report.read_text())["verdict"]["reasons"] == ["the artifact is a build of clip-tiny (64-d), not of clip-vit-b-32 (512-d)"]

    out = tmp_path / "golden.npz"
    assert main(["references", "clip-tiny", "--weights", "random", "--seed", "0", "--out", str(out)]) == 0
    fresh, shipped = GoldenReferences.load(out), GoldenReferences.load(golden_path("clip-tiny"))
    assert fresh.metadata["weights_sha256"] == shipped.metadata["weights_sha256"] == load_manifest(tiny_fp32.directory).weights.sha256
    assert np.allclose(fresh.text, shipped.text, atol=1e-6) and np.allclose(fresh.image, shipped.image, atol=1e-6)


def test_cli_references_without_weights_fails_clearly(offline_hub, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("CLIP_API_WEIGHTS_CACHE", str(tmp_path / "empty-cache"))  # never the real cache: it would write configs/
    assert main(["references", "clip-vit-b-32"]) == 2
    assert "could not be downloaded" in capsys.readouterr().err


def test_random_weights_of_another_seed_are_not_held_to_the_committed_golden_file(tiny_config, package_random):
    """Another seed is other weights on purpose (another embedding space); a perturbed checkpoint still fails (above)."""
    other = package_random(tiny_config, "fp32", seed=1, name="clip-tiny-fp32-seed1")
    result = validate_artifact(other.directory, tiny_config)
    assert result.passed, reasons_of(result)
    assert result.report["golden"]["case"] == "none" and "seed 1 has no golden references" in result.report["golden"]["note"]
