"""Acting on AWS (or a local stand-in such as moto): model package groups, pipeline upsert and start.

boto3 honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE>, so the same calls reach real AWS
or the local control plane.
"""

from __future__ import annotations

from pathlib import Path

import boto3
from botocore.exceptions import ClientError

from clip_core.model_config import ModelConfig
from clip_core.s3_uri import split_s3_uri
from pipeline.settings import ENTRY_SCRIPT, PipelineSettings



def ensure_model_package_group(sagemaker, config: ModelConfig) -> str:
    """Create the config's model package group unless it exists; return its ARN (idempotent)."""
    name = config.registry.model_package_group
    try:
        return sagemaker.describe_model_package_group(ModelPackageGroupName=name)["ModelPackageGroupArn"]
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("ValidationException", "ResourceNotFound"):
            raise
    return sagemaker.create_model_package_group(
        ModelPackageGroupName=name,
        ModelPackageGroupDescription=config.description,
        Tags=[{"Key": "clip-embedding-api:model-id", "Value": config.model_id}],
    )["ModelPackageGroupArn"]


def upload_entry_script(s3, settings: PipelineSettings) -> str:
    bucket, key = split_s3_uri(settings.code_uri)
    s3.upload_file(str(ENTRY_SCRIPT), bucket, key)
    return settings.code_uri


def sagemaker_session(settings: PipelineSettings):
    from sagemaker.workflow.pipeline_context import PipelineSession

    return PipelineSession(boto_session=boto3.Session(region_name=settings.region), default_bucket=settings.bucket)


def upsert_pipeline(config: ModelConfig, settings: PipelineSettings) -> str:
    from pipeline.definition import build_pipeline

    session = boto3.Session(region_name=settings.region)
    ensure_model_package_group(session.client("sagemaker"), config)
    upload_entry_script(session.client("s3"), settings)
    pipeline = build_pipeline(config, settings, sagemaker_session(settings))
    return pipeline.upsert(role_arn=settings.role_arn)["PipelineArn"]


def start_pipeline(config: ModelConfig, settings: PipelineSettings, parameters: dict | None = None) -> str:
    from pipeline.definition import pipeline_name

    sagemaker = boto3.Session(region_name=settings.region).client("sagemaker")
    response = sagemaker.start_pipeline_execution(
        PipelineName=pipeline_name(config),
        PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in (parameters or {}).items()],
    )
    return response["PipelineExecutionArn"]


def run_pipeline_locally(config: ModelConfig, settings: PipelineSettings, workdir: Path, parameters: dict | None = None, log=print,
                         session=None):
    """Upsert (so the registry and S3 hold what a real run needs), then run the definition here, against `session`'s
    S3 and registry (default: the environment's)."""
    from pipeline.definition import pipeline_definition, pipeline_name
    from pipeline.local_runner import LocalPipelineRunner

    session = session or boto3.Session(region_name=settings.region)
    s3, sagemaker = session.client("s3"), session.client("sagemaker")
    ensure_model_package_group(sagemaker, config)
    upload_entry_script(s3, settings)
    runner = LocalPipelineRunner(pipeline_definition(config, settings), s3, sagemaker, workdir, parameters, pipeline_name=pipeline_name(config), log=log)
    return runner.run()
