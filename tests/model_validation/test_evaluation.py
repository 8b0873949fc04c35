"""The verdict rules as pure functions: each way an artifact can be wrong yields its own reason."""

from dataclasses import replace

import pytest

from model_validation.evaluation import ArtifactFacts, Metrics, Thresholds, build_report, decide, model_quality

FACTS = ArtifactFacts(
    model_id="clip-vit-b-32", version="abc", variant="int8", weights_source="pretrained", weights_sha256="f" * 64,
    architecture="ViT-B-32-quickgelu", expected_architecture="ViT-B-32-quickgelu", quick_gelu=True,
    files_ok=True, reference_weights_match=True, has_golden=True, space="0123456789ab",
)
METRICS = Metrics(
    parity_text_min_cosine=0.9995, parity_text_mean_cosine=0.9998, parity_image_min_cosine=0.9997,
    parity_image_mean_cosine=0.9999, token_ids_equal=True, golden_min_cosine=0.9993, zero_shot_top1=0.92,
    max_norm_error=1e-7, deterministic=True, embedding_dim_ok=True, latency_text_p50_ms=5, latency_text_p95_ms=6,
    latency_image_p50_ms=30, latency_image_p95_ms=35,
)
THRESHOLDS = Thresholds(parity_min_cosine=0.998, golden_min_cosine=0.999, zero_shot_min_top1=0.8, allow_random_init=False)


def test_a_faithful_pretrained_artifact_passes():
    assert decide(FACTS, METRICS, THRESHOLDS) == []


@pytest.mark.parametrize(
    "facts, metrics, thresholds, expected",
    [
        ({"files_ok": False}, {}, {}, "sha256"),
        ({"architecture": "ViT-B-32"}, {}, {}, "architecture ViT-B-32 differs"),
        ({"reference_weights_match": False}, {}, {}, "weights digest differs"),
        ({}, {"parity_text_min_cosine": 0.99}, {}, "text parity"),
        ({}, {"parity_image_min_cosine": 0.99}, {}, "image parity"),
        ({}, {"token_ids_equal": False}, {}, "tokenizer ids"),
        ({}, {"golden_min_cosine": 0.95}, {}, "golden: min cosine"),
        ({"golden_stale": True}, {}, {}, "different probe set"),
        ({"weights_source": "random-init"}, {}, {}, "random-init"),
        ({"has_golden": False}, {"golden_min_cosine": None}, {}, "no golden reference"),
        ({}, {"zero_shot_top1": 0.1}, {}, "zero-shot"),
        ({}, {"max_norm_error": 0.01}, {}, "unit norm"),
        ({}, {"deterministic": False}, {}, "different embeddings twice"),
        ({}, {"embedding_dim_ok": False}, {}, "embedding size"),
        ({"variant": "fp32"}, {}, {"parity_min_cosine": 0.99999}, "text parity"),
    ],
)
def test_each_failure_has_its_reason(facts, metrics, thresholds, expected):
    reasons = decide(replace(FACTS, **facts), replace(METRICS, **metrics), replace(THRESHOLDS, **thresholds))
    assert len(reasons) >= 1 and any(expected in reason for reason in reasons), reasons


def test_random_init_passes_only_where_the_config_allows_it():
    facts = replace(FACTS, weights_source="random-init", has_golden=False)
    metrics = replace(METRICS, golden_min_cosine=None, zero_shot_top1=0.0)
    assert decide(facts, metrics, replace(THRESHOLDS, allow_random_init=True)) == []
    assert decide(facts, metrics, THRESHOLDS) != []


def test_report_shape_for_json_get_and_model_quality():
    report = build_report(FACTS, replace(METRICS, parity_text_min_cosine=0.5), THRESHOLDS)
    assert report["verdict"]["passed"] is False and report["verdict"]["status"] == "failed"
    assert report["metrics"]["parity_min_cosine"] == 0.5
    assert report["thresholds"]["parity_min_cosine"] == 0.998
    assert report["artifact"]["variant"] == "int8"
    assert report["artifact"]["space"] == "0123456789ab"  # registered as the package's `space` metadata
    quality = model_quality(report)["embedding_quality_metrics"]
    assert quality["parity_min_cosine"] == {"value": 0.5, "standard_deviation": "NaN"}
