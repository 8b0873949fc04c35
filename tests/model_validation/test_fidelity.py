"""Fidelity gates: the served embeddings reproduce open_clip's (torch fp32 eager, its tokenizer and
transform) on the whole probe set, and the check fails for the known ways of drifting."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
import torchvision.transforms.functional as F
from PIL import Image

from inference_code.embedder import ClipEmbedder
from inference_code.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from model_validation.parity import measure_parity

FP32_MIN_COSINE = 0.99999
INT8_MIN_COSINE = 0.998


def parity_of(artifact, reference, texts, images, embed_images=None):
    embedder = ClipEmbedder(artifact.directory)
    return measure_parity(
        reference,
        lambda batch: embedder.embed_texts(batch).vectors,
        embed_images or embedder.embed_image_bytes,
        texts,
        [(p.name, p.data) for p in images],
        served_token_ids=lambda batch: embedder.tokenizer(batch).ids,
    )


def assert_parity(result, threshold):
    assert result.token_ids_equal, result.token_mismatches
    assert result.text.min >= threshold, result.text.worst()
    assert result.image.min >= threshold, result.image.worst()


def test_tiny_fp32_matches_open_clip(tiny_fp32, tiny_reference, probe_texts, probe_images):
    assert_parity(parity_of(tiny_fp32, tiny_reference, probe_texts, probe_images), FP32_MIN_COSINE)


def test_tiny_int8_within_its_threshold(tiny_int8, tiny_reference, probe_texts, probe_images):
    assert_parity(parity_of(tiny_int8, tiny_reference, probe_texts, probe_images), INT8_MIN_COSINE)


def no_antialias_embedder(artifact):
    """Images resized the way several servers do it: bicubic on tensors without antialiasing."""
    embedder = ClipEmbedder(artifact.directory)
    mean = torch.tensor(OPENAI_CLIP_MEAN)[:, None, None]
    std = torch.tensor(OPENAI_CLIP_STD)[:, None, None]

    def embed(images):
        pixels = []
        for data in images:
            image = embedder.preprocessor.decode(data).convert("RGB")
            tensor = F.pil_to_tensor(image).float() / 255
            tensor = F.center_crop(F.resize(tensor, 224, interpolation=F.InterpolationMode.BICUBIC, antialias=False), 224)
            pixels.append(((tensor - mean) / std).numpy())
        return embedder.embed_pixels(np.stack(pixels))

    return embed


def large_images(images):
    return [p for p in images if p.name.startswith("photo-") or p.name == "large-1024x768-jpeg"]


def test_check_fails_for_non_antialiased_resize(tiny_fp32, tiny_reference, probe_texts, probe_images):
    result = parity_of(tiny_fp32, tiny_reference, probe_texts[:2], large_images(probe_images), no_antialias_embedder(tiny_fp32))
    assert result.image.min < FP32_MIN_COSINE


@pytest.fixture(scope="module")
def tiny_gelu_architecture(tmp_path_factory):
    """The tiny CLIP with plain GELU: what open_clip builds for OpenAI weights without '-quickgelu'."""
    from clip_core.paths import OPEN_CLIP_CONFIGS_DIR

    config = json.loads((OPEN_CLIP_CONFIGS_DIR / "clip-tiny.json").read_text())
    config["quick_gelu"] = False
    path = tmp_path_factory.mktemp("arch") / "clip-tiny-gelu.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    return "clip-tiny-gelu"


def test_check_fails_for_gelu_instead_of_quick_gelu(package_random, tiny_config, tiny_gelu_architecture, tiny_reference, probe_texts, probe_images):
    gelu = package_random(tiny_config, "fp32", architecture=tiny_gelu_architecture, name="tiny-gelu")
    assert not gelu.manifest.quick_gelu
    assert gelu.manifest.weights.sha256 == tiny_reference_weights_sha(tiny_config)  # same weights, other activation
    result = parity_of(gelu, tiny_reference, probe_texts, probe_images)
    assert result.text.min < FP32_MIN_COSINE and result.image.min < FP32_MIN_COSINE


def tiny_reference_weights_sha(config):
    from model_build.weights import build_model
    from model_build.weights_source import RANDOM_INIT, WeightsSource

    return build_model(config, WeightsSource(RANDOM_INIT), seed=0).weights.sha256


@pytest.mark.slow
def test_b32_fp32_matches_open_clip(b32_fp32, b32_reference, probe_texts, probe_images):
    assert_parity(parity_of(b32_fp32, b32_reference, probe_texts, probe_images), FP32_MIN_COSINE)


@pytest.mark.slow
def test_b32_int8_within_its_threshold(b32_int8, b32_reference, probe_texts, probe_images):
    result = parity_of(b32_int8, b32_reference, probe_texts, probe_images)
    assert_parity(result, INT8_MIN_COSINE)
    assert result.text.min < FP32_MIN_COSINE  # quantisation does change the embeddings: fp32's gate would catch it


@pytest.mark.slow
def test_b32_check_fails_for_gelu_and_for_non_antialiased_resize(package_random, b32_config, b32_fp32, b32_reference, probe_texts, probe_images):
    gelu = package_random(b32_config, "fp32", architecture="ViT-B-32", name="b32-gelu")
    assert not gelu.manifest.quick_gelu
    result = parity_of(gelu, b32_reference, probe_texts[:16], probe_images[:8])
    assert result.text.min < FP32_MIN_COSINE and result.image.min < FP32_MIN_COSINE
    resized = parity_of(b32_fp32, b32_reference, probe_texts[:2], large_images(probe_images), no_antialias_embedder(b32_fp32))
    assert resized.image.min < FP32_MIN_COSINE
