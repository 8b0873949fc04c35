"""Upsert, start and run-local against moto: a validated artifact is registered PendingManualApproval."""

from __future__ import annotations

import json
import re
import shutil

import boto3
import pytest

from clip_core.model_config import load_model_config
from pipeline.aws import ensure_model_package_group, run_pipeline_locally, start_pipeline, upsert_pipeline
from pipeline.definition import pipeline_definition, pipeline_name
from clip_core.s3_uri import split_s3_uri
from pipeline.settings import PipelineSettings


def test_model_package_group_creation_is_idempotent(moto_aws, tiny_config):
    sagemaker = boto3.client("sagemaker")
    assert ensure_model_package_group(sagemaker, tiny_config) == ensure_model_package_group(sagemaker, tiny_config)
    assert len(sagemaker.list_model_package_groups()["ModelPackageGroupSummaryList"]) == 1


def test_upsert_creates_then_updates_and_start_runs(moto_aws, tiny_config):
    settings = PipelineSettings.from_env()
    arn = upsert_pipeline(tiny_config, settings)
    assert upsert_pipeline(tiny_config, settings) == arn
    described = boto3.client("sagemaker").describe_pipeline(PipelineName=pipeline_name(tiny_config))
    assert json.loads(described["PipelineDefinition"]) == pipeline_definition(tiny_config, settings)
    assert start_pipeline(tiny_config, settings, {"WeightsSource": "random"}).startswith("arn:aws:sagemaker")
    bucket, key = split_s3_uri(settings.code_uri)
    assert boto3.client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"] > 0


def test_run_local_registers_a_pending_package_with_metrics(moto_aws, tiny_config, tmp_path):
    settings = PipelineSettings.from_env()
    result = run_pipeline_locally(tiny_config, settings, tmp_path, {"WeightsSource": "random", "GitCommit": "abc1234"}, log=lambda _: None)
    assert result.status == "Succeeded", result.failure_reason
    assert [s.name for s in result.steps] == ["Package", "Validate", "CheckValidation", "Register-RegisterModel"]
    sagemaker, s3 = boto3.client("sagemaker"), boto3.client("s3")
    package = sagemaker.describe_model_package(ModelPackageName=result.model_package_arn)
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    assert package["ModelPackageGroupName"] == "clip-tiny"
    metadata = package["CustomerMetadataProperties"]
    assert metadata["model_id"] == "clip-tiny" and metadata["git_commit"] == "abc1234" and metadata["weights_source"] == "random-init"
    assert len(metadata["weights_sha256"]) == 64
    assert re.fullmatch(r"[0-9a-f]{12}", metadata["space"])  # the embedding space, from the validated manifest
    model_data = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    bucket, key = split_s3_uri(model_data)
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 1_000_000
    quality_uri = package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    bucket, key = split_s3_uri(quality_uri)
    quality = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert quality["embedding_quality_metrics"]["parity_min_cosine"]["value"] >= 0.99999


@pytest.fixture
def strict_configs(tmp_path, monkeypatch):
    """A copy of configs/ whose tiny model refuses random-init weights, seen by the processing jobs too."""
    from clip_core.paths import CONFIGS_DIR

    copy = tmp_path / "configs"
    shutil.copytree(CONFIGS_DIR, copy)
    path = copy / "models" / "clip-tiny.yaml"
    path.write_text(path.read_text().replace("allow_random_init: true", "allow_random_init: false"))
    monkeypatch.setenv("CLIP_API_CONFIGS_DIR", str(copy))
    return copy


def test_failing_validation_registers_nothing_and_says_why(moto_aws, strict_configs, tmp_path):
    config = load_model_config("clip-tiny", strict_configs / "models")
    assert config.validation.allow_random_init is False
    result = run_pipeline_locally(config, PipelineSettings.from_env(), tmp_path / "runs", {"WeightsSource": "random"}, log=lambda _: None)
    assert result.status == "Failed" and result.model_package_arn is None
    assert "random-init" in result.failure_reason and result.failure_reason.startswith("ValidationFailed:")
    assert [s.name for s in result.steps][-1] == "ValidationFailed"
    packages = boto3.client("sagemaker").list_model_packages(ModelPackageGroupName="clip-tiny")["ModelPackageSummaryList"]
    assert packages == []


def test_unknown_parameter_is_refused(moto_aws, tiny_config, tmp_path):
    with pytest.raises(ValueError, match="unknown pipeline parameters"):
        run_pipeline_locally(tiny_config, PipelineSettings.from_env(), tmp_path, {"Weights": "random"}, log=lambda _: None)
