import json
import os

import open_clip
import pytest
import torch

from model_build.weights import WeightsUnavailableError, build_model, uses_quick_gelu
from model_build.weights_source import CHECKPOINT, PRETRAINED, RANDOM_INIT, WeightsSource


def test_weights_source_parsing(tmp_path):
    assert WeightsSource.parse("pretrained") == WeightsSource(PRETRAINED)
    assert WeightsSource.parse("random-init") == WeightsSource(RANDOM_INIT)
    assert WeightsSource.parse("random") == WeightsSource(RANDOM_INIT)  # the earlier spelling, still typed and passed as a pipeline parameter
    assert WeightsSource.parse("s3://bucket/clip.safetensors") == WeightsSource(CHECKPOINT, "s3://bucket/clip.safetensors")
    assert WeightsSource.parse("/models/clip.pt").kind == CHECKPOINT
    with pytest.raises(ValueError, match="pretrained"):
        WeightsSource.parse("openai-please")


def test_one_vocabulary_in_code_and_manifests():
    """Code names a source by the manifest's words; what a manifest records is read back in either spelling."""
    assert RANDOM_INIT == "random-init"  # what every existing artifact's manifest records
    with pytest.raises(ValueError, match="not one of"):
        WeightsSource("random")
    assert WeightsSource.recorded("random-init", None) == WeightsSource.recorded("random", None) == WeightsSource(RANDOM_INIT)
    assert WeightsSource.recorded("pretrained", "https://example.com/clip.pt") == WeightsSource(PRETRAINED)
    assert WeightsSource.recorded("checkpoint", "s3://bucket/clip.pt") == WeightsSource(CHECKPOINT, "s3://bucket/clip.pt")
    with pytest.raises(ValueError, match="unknown weights source"):
        WeightsSource.recorded("openai", None)


def test_unreachable_pretrained_weights_fail_clearly_naming_alternatives(b32_config, offline_hub, monkeypatch, tmp_path):
    """The real loading code runs (the pinned file's cache, then its download); offline it must fail loudly, never fall back."""
    monkeypatch.setenv("CLIP_API_WEIGHTS_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsUnavailableError) as caught:
        build_model(b32_config, WeightsSource("pretrained"), cache_dir=str(offline_hub))
    message = str(caught.value)
    assert "ViT-B-32-quickgelu/openai" in message
    for alternative in ("--weights PATH", "s3://", "--weights random-init", "HF_HUB_OFFLINE", "CLIP_API_WEIGHTS_CACHE", b32_config.open_clip.weights_file.sha256):
        assert alternative in message


def test_tiny_config_has_no_pretrained_tag(tiny_config):
    with pytest.raises(WeightsUnavailableError, match="no pretrained tag"):
        build_model(tiny_config, WeightsSource("pretrained"))


def test_missing_checkpoint_is_a_clear_error(tiny_config, tmp_path):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_model(tiny_config, WeightsSource("checkpoint", str(tmp_path / "absent.pt")))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_weights_are_loaded_and_identified(tiny_config, tmp_path, suffix):
    random_init = build_model(tiny_config, WeightsSource(RANDOM_INIT), seed=3)
    path = tmp_path / f"clip-tiny{suffix}"
    state = {k: v.contiguous() for k, v in random_init.model.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = build_model(tiny_config, WeightsSource.parse(str(path)))
    assert loaded.weights.source == "checkpoint"
    assert loaded.weights.sha256 == random_init.weights.sha256  # same tensors, same digest
    assert loaded.weights.checkpoint_sha256 and len(loaded.weights.checkpoint_sha256) == 64
    other_seed = build_model(tiny_config, WeightsSource(RANDOM_INIT), seed=4)
    assert other_seed.weights.sha256 != random_init.weights.sha256


def test_random_init_is_deterministic_per_seed(tiny_config):
    a = build_model(tiny_config, WeightsSource(RANDOM_INIT), seed=7)
    b = build_model(tiny_config, WeightsSource(RANDOM_INIT), seed=7)
    assert a.weights.sha256 == b.weights.sha256 and a.weights.seed == 7


@pytest.mark.parametrize("model_id", ["clip-vit-b-32", "clip-vit-l-14", "clip-tiny"])
def test_served_architectures_use_quick_gelu(model_id):
    """OpenAI's weights were trained with QuickGELU: every config must build it (and the check can fail)."""
    from clip_core.model_config import load_model_config
    from model_build.weights import register_repo_architectures

    register_repo_architectures()
    config = load_model_config(model_id)
    model_cfg = open_clip.get_model_config(config.open_clip.architecture)
    assert model_cfg["quick_gelu"] is True
    if model_id == "clip-tiny":
        assert uses_quick_gelu(build_model(config, WeightsSource(RANDOM_INIT)).model)
        plain = dict(model_cfg, quick_gelu=False)
        from open_clip.model import CLIP

        assert not uses_quick_gelu(CLIP(**plain))


@pytest.mark.weights
@pytest.mark.skipif(os.environ.get("CLIP_API_WEIGHTS_TESTS") != "1", reason="needs the released weights (network): set CLIP_API_WEIGHTS_TESTS=1")
def test_pretrained_openai_weights_load(b32_config):
    """The real download (or cache) of the pinned file: its sha256 is verified before it is loaded."""
    built = build_model(b32_config, WeightsSource("pretrained"))
    assert built.weights.source == "pretrained" and built.quick_gelu
    assert built.weights.checkpoint_sha256 == b32_config.open_clip.weights_file.sha256


def test_production_configs_pin_their_weights_with_sources():
    from clip_core.model_config import load_all_model_configs

    for config in load_all_model_configs():
        if config.demo_only:
            continue
        pin = config.open_clip.weights_file
        assert pin is not None and pin.sources, config.model_id
        if pin.url.startswith("https://openaipublic.azureedge.net/clip/models/"):
            assert pin.url.split("/")[-2] == pin.sha256  # OpenAI's URLs carry the file's sha256


@pytest.mark.weights
@pytest.mark.skipif(os.environ.get("CLIP_API_WEIGHTS_TESTS") != "1", reason="needs the released weights (network): set CLIP_API_WEIGHTS_TESTS=1")
def test_released_b32_passes_the_gate(b32_config, tmp_path):
    """What the offline stand-in tests show, against the real file: download (or the cache), sha256, first-use or
    committed golden references, sanity checks, parity. Run it to check an install on a networked machine."""
    from model_build.package import package_model
    from model_build.progress import Progress
    from model_validation.validate import validate_artifact

    artifact = package_model(b32_config, tmp_path, WeightsSource("pretrained"), variant="fp32", progress=Progress(4))
    result = validate_artifact(artifact.directory, b32_config)
    report = result.report
    print(json.dumps({"golden": report["golden"], "metrics": report["metrics"], "thresholds": report["thresholds"]}, indent=2))
    assert result.passed, report["verdict"]["reasons"]
    assert report["verdict"]["golden"] in ("committed", "first-use-computed", "first-use-stored")
