"""The serving stack's SageMaker roles: the models' execution role, the build pipelines' role, and Batch
Transform's role with the managed policy of whoever runs `clip-api embed-dataset --backend batch-transform`."""

from __future__ import annotations

from clip_core.names import PROJECT
from infra.stacks.cfn import arn, getatt
from infra.stacks.iam import (
    ECR_AUTH_STATEMENT,
    LOGS_STATEMENT,
    PULL_PROJECT_IMAGES_STATEMENT,
    PUT_METRIC_DATA_STATEMENT,
    allow,
    deny_everywhere,
    pass_role,
    policy,
    policy_document,
    role,
    when,
)
from infra.stacks.serving_arns import artifact_bucket_arn, artifact_objects_arn, model_packages_arns, pointer_table_arn, use_the_key
from promotion.plan import ADOPT_SPACE_KEY, SPACE_KEY

BATCH_PREFIX = "batch/"  # S3 keys of embed-dataset's Batch Transform inputs and outputs
BATCH_NAME_PREFIX = "clip-bt-"  # its SageMaker models and transform jobs


def sagemaker_roles(groups: list[str]) -> dict:
    """The resources, by logical id, for the models' package groups `groups`."""
    return {
        "ModelExecutionRole": role("sagemaker.amazonaws.com", [policy("serve-model", [
            allow(["s3:GetObject"], artifact_objects_arn()), use_the_key(), PULL_PROJECT_IMAGES_STATEMENT, ECR_AUTH_STATEMENT,
            PUT_METRIC_DATA_STATEMENT, LOGS_STATEMENT,
        ])], f"SageMaker models of {PROJECT}: read artifacts, pull the serving image"),
        "TransformRole": role("sagemaker.amazonaws.com", [policy("batch-transform", _transform_statements())],
                              f"SageMaker Batch Transform jobs of {PROJECT}: read the model and batch inputs, write batch outputs"),
        # What `clip-api embed-dataset --backend batch-transform` calls, for the person or CI role that runs it.
        "EmbedDatasetPolicy": {"Type": "AWS::IAM::ManagedPolicy", "Properties": {
            "Description": "run clip-api embed-dataset on Batch Transform with an approved model package",
            "PolicyDocument": policy_document(_embed_dataset_statements(groups)),
        }},
        "PipelineRole": role("sagemaker.amazonaws.com", [policy("build-models", _pipeline_statements(groups))],
                             f"SageMaker Pipelines of {PROJECT}: processing jobs, registry"),
    }


def _list_batch_keys() -> dict:
    return when(allow(["s3:ListBucket"], artifact_bucket_arn()), {"StringLike": {"s3:prefix": [BATCH_PREFIX + "*"]}})


def _transform_statements() -> list[dict]:
    """The job reads the package's model.tar.gz and its input shards, writes .out files under batch/ only
    (clip_api/batch_transform.py)."""
    return [
        allow(["s3:GetObject"], artifact_objects_arn()),
        allow(["s3:PutObject"], artifact_objects_arn(BATCH_PREFIX)),
        _list_batch_keys(),
        use_the_key(),
        PULL_PROJECT_IMAGES_STATEMENT,
        ECR_AUTH_STATEMENT,
        PUT_METRIC_DATA_STATEMENT,
        allow(["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"], arn("logs", "log-group:/aws/sagemaker/TransformJobs*")),
    ]


def _embed_dataset_statements(groups: list[str]) -> list[dict]:
    return [
        allow(["sagemaker:ListModelPackages"], "*", sid="ListModelPackagesHasNoResourceLevelPermissions"),
        allow(["sagemaker:DescribeModelPackage"], model_packages_arns(groups)),
        allow(["dynamodb:GetItem"], pointer_table_arn()),
        allow(["sagemaker:CreateModel", "sagemaker:DescribeModel", "sagemaker:AddTags"], arn("sagemaker", f"model/{BATCH_NAME_PREFIX}*")),
        allow(["sagemaker:CreateTransformJob", "sagemaker:DescribeTransformJob", "sagemaker:StopTransformJob", "sagemaker:AddTags"],
              arn("sagemaker", f"transform-job/{BATCH_NAME_PREFIX}*")),
        pass_role(getatt("TransformRole", "Arn"), "sagemaker.amazonaws.com"),
        allow(["s3:GetObject"], artifact_objects_arn()),  # the package's model.tar.gz (HeadObject: its digest) and the .out files
        allow(["s3:PutObject"], artifact_objects_arn(BATCH_PREFIX)),
        _list_batch_keys(),
        use_the_key(),
        allow(["cloudformation:DescribeStacks"], arn("cloudformation", "stack/${AWS::StackName}/*")),
    ]


def _pipeline_statements(groups: list[str]) -> list[dict]:
    return [
        # Builds read anything of the project's (code, checkpoints, earlier artifacts) but write only pipeline
        # outputs: never the templates, Lambda code or deploy records that CloudFormation and CodeBuild use.
        allow(["s3:GetObject"], artifact_objects_arn()),
        allow(["s3:PutObject"], artifact_objects_arn(f"{PROJECT}/pipelines/")),
        allow(["s3:ListBucket"], artifact_bucket_arn()),
        use_the_key(),
        PULL_PROJECT_IMAGES_STATEMENT,
        ECR_AUTH_STATEMENT,
        allow(["sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob", "sagemaker:StopProcessingJob", "sagemaker:AddTags"],
              arn("sagemaker", "processing-job/*")),
        allow(["sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage", "sagemaker:DescribeModelPackageGroup"],
              [arn("sagemaker", f"model-package/{group}*") for group in groups]
              + [arn("sagemaker", f"model-package-group/{group}") for group in groups]),
        allow(["iam:PassRole"], arn("iam", "role/${AWS::StackName}-PipelineRole-*", region="")),
        LOGS_STATEMENT,
        # A build registers for approval, never approved: whoever can start a pipeline must not skip the registry's approval.
        deny_everywhere("RegisterOnlyPendingApproval", ["sagemaker:CreateModelPackage", "sagemaker:UpdateModelPackage"],
                        {"StringNotEquals": {"sagemaker:ModelApprovalStatus": "PendingManualApproval"}}),
        # Moving the stable URL to another embedding space is the approver's decision (issue 17): a build never records it,
        # and never relabels the space its gate recorded at registration.
        deny_everywhere("NeverAdoptASpace", ["sagemaker:CreateModelPackage", "sagemaker:UpdateModelPackage"],
                        {"Null": {f"sagemaker:CustomerMetadataProperties/{ADOPT_SPACE_KEY}": "false"}}),
        deny_everywhere("NeverRelabelASpace", ["sagemaker:UpdateModelPackage"],
                        {"Null": {f"sagemaker:CustomerMetadataProperties/{SPACE_KEY}": "false"}}),
    ]
