"""Where a pipeline runs: account-specific settings, from environment variables with documented names.

The offline definition (`clip-api pipeline definition`) needs no credentials: without the
variables it uses placeholder ARNs and URIs that make the JSON reviewable.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from clip_core.names import BUCKET_ENV, PROJECT, artifact_bucket_name

PLACEHOLDER_ACCOUNT = "123456789012"
ENTRY_SCRIPT = Path(__file__).with_name("processing_entry.py")


@cache
def entry_script_name() -> str:
    """The entry script's S3 name holds its content's digest: a pipeline definition names the script it was upserted
    with, so running executions keep their script (which matches their image) when a deploy uploads a new one."""
    return f"processing_entry-{hashlib.sha256(ENTRY_SCRIPT.read_bytes()).hexdigest()[:16]}.py"


@dataclass(frozen=True)
class PipelineSettings:
    region: str
    bucket: str
    role_arn: str
    processing_image_uri: str
    serving_image_uri: str
    processing_instance_type: str = "ml.m5.2xlarge"
    prefix: str = PROJECT

    @property
    def code_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/code/{entry_script_name()}"

    def run_prefix(self, model_id: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}/pipelines/{model_id}"

    @classmethod
    def from_env(cls, env: dict | None = None) -> "PipelineSettings":
        env = os.environ if env is None else env
        region = env.get("CLIP_API_REGION") or env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or "us-east-1"
        account = env.get("CLIP_API_ACCOUNT_ID", PLACEHOLDER_ACCOUNT)
        registry = f"{account}.dkr.ecr.{region}.amazonaws.com"
        return cls(
            region=region,
            bucket=env.get(BUCKET_ENV, artifact_bucket_name(account, region)),
            role_arn=env.get("CLIP_API_PIPELINE_ROLE_ARN", f"arn:aws:iam::{account}:role/clip-embedding-api-pipeline"),
            processing_image_uri=env.get("CLIP_API_PROCESSING_IMAGE", f"{registry}/clip-embedding-api-build:latest"),
            serving_image_uri=env.get("CLIP_API_SERVING_IMAGE", f"{registry}/clip-embedding-api-serve:latest"),
            processing_instance_type=env.get("CLIP_API_PROCESSING_INSTANCE_TYPE", "ml.m5.2xlarge"),
        )
