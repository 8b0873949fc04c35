"""`clip-api bench-bulk`: the cost arithmetic, the verdict, and a small run end to end on the tiny model."""

from __future__ import annotations

import json

import pytest

from clip_api.bench_bulk import BulkBenchResult, CostAssumptions, Measurement, costs, render


def _result(single_image_s=10.0, bulk_image_s=2.5, single_text_s=4.0, bulk_text_s=2.0, cores=2) -> BulkBenchResult:
    result = BulkBenchResult("clip-vit-b-32", "int8", "Test CPU", cores, "2026-01-01 00:00 UTC", "512x384", mean_image_bytes=30_000)
    result.measurements = [Measurement("single", "image", 1, 100, single_image_s, 1.0), Measurement("single", "text", 1, 200, single_text_s, 1.0),
                           Measurement("bulk", "image", 1, 100, bulk_image_s * 2, 1.0), Measurement("bulk", "image", 2, 100, bulk_image_s, 1.0),
                           Measurement("bulk", "text", 2, 200, bulk_text_s, 1.0)]
    result.single_image_request_s = single_image_s / 100
    return result


def test_ratios_use_the_best_bulk_run_and_the_verdict_follows():
    result = _result()
    assert result.ratio("image") == pytest.approx(4.0) and result.ratio("text") == pytest.approx(2.0)
    text = render(result, costs(result, CostAssumptions()))
    assert "images: bulk / single = 4.00x (target >= 3x: met)" in text
    assert "texts: bulk / single = 2.00x (target >= 3x: NOT met)" in text
    assert "Test CPU (2 vCPUs)" in text


def test_cost_per_million_images():
    result = _result()  # bulk: 40 images/s on 2 vCPUs; single: 0.1 s per image
    cost = costs(result, CostAssumptions("ml.m5.xlarge"))  # $0.23/h, 4 vCPUs -> 80 images/s assumed
    batch = cost["batch_transform"]
    assert batch["images_per_s_per_instance"] == pytest.approx(80.0)
    assert batch["usd"] == pytest.approx(1e6 / 80 / 3600 * 0.23)
    serverless = cost["serverless"]
    assert serverless["compute_usd"] == pytest.approx(1e6 * 0.1 * 4 * 0.00002)  # 4096 MB
    assert serverless["usd"] > serverless["compute_usd"] and serverless["with_public_api_usd"] > serverless["usd"]
    own = costs(result, CostAssumptions("ml.g9.custom", instance_price_per_h=1.0, instance_vcpus=2))["batch_transform"]
    assert own["usd"] == pytest.approx(1e6 / 40 / 3600)
    with pytest.raises(ValueError, match="no list price"):
        costs(result, CostAssumptions("ml.g9.custom"))


def test_a_small_run_through_the_command(tiny_fp32, tmp_path, capsys):
    from clip_api.cli import build_parser

    out = tmp_path / "bench.json"
    args = build_parser().parse_args(["bench-bulk", "--model", "clip-tiny", "--artifact", str(tiny_fp32.directory), "--images", "5",
                                      "--image-size", "64x48", "--texts", "7", "--workers", "1", "--json", str(out)])
    assert args.func(args) == 0
    figures = json.loads(out.read_text())
    assert {(m["path"], m["modality"], m["items"]) for m in figures["measurements"]} == {
        ("single", "image", 5), ("single", "text", 7), ("bulk", "image", 5), ("bulk", "text", 7)}
    assert figures["mismatches"] == 0 and figures["compared"] == 12 and figures["bit_identical"] == 12  # fp32: batching changes nothing
    assert set(figures["ratios"]) == {"image", "text"} and figures["cost"]["batch_transform"]["instance_type"] == "ml.m5.xlarge"
    printed = capsys.readouterr().out
    assert "| bulk | image | 1 | 5 |" in printed and "Cost per million images" in printed
