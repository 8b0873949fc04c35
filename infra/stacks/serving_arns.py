"""What the serving stack's parts grant on each other's resources: the artifact bucket (a parameter), the
serving pointer table, the clip endpoints, the models' package groups, the bootstrap stack's key."""

from __future__ import annotations

from infra.stacks.cfn import arn, getatt, ref
from infra.stacks.iam import allow


def artifact_bucket_arn() -> dict:
    return arn("s3", "${ArtifactBucket}", region="", account="")


def artifact_objects_arn(prefix: str = "") -> dict:
    """The artifact bucket's objects under `prefix` (all of them by default)."""
    return arn("s3", "${ArtifactBucket}/" + prefix + "*", region="", account="")


def pointer_table_arn() -> dict:
    return getatt("ServingPointerTable", "Arn")


def clip_endpoints_arn() -> dict:
    return arn("sagemaker", "endpoint/clip-*")


def model_packages_arns(groups: list[str]) -> list[dict]:
    """Every version in the models' package groups."""
    return [arn("sagemaker", f"model-package/{group}/*") for group in groups]


def use_the_key() -> dict:
    return allow(["kms:Decrypt", "kms:GenerateDataKey"], ref("KmsKeyArn"))
