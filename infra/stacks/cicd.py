"""cicd.yaml: CodePipeline (CodeStar connection source) -> CodeBuild running buildspec.yml, the image repositories
CodeBuild pushes to, and the two roles."""

from __future__ import annotations

from clip_core.names import POINTER_TABLE, PROJECT, artifact_bucket_name
from infra.stacks.cfn import (
    ACCOUNT,
    REGION,
    RETAINED,
    arn,
    checkov_skip,
    getatt,
    kms_bucket_encryption,
    public_access_block,
    ref,
    secure_transport_only,
    sub,
)
from infra.stacks.iam import ECR_AUTH_STATEMENT, LOGS_STATEMENT, allow, pass_role, policy, role

DLC_ACCOUNT = "763104351884"  # AWS Deep Learning Containers' registry account
# The images CodeBuild pushes (buildspec.yml): logical id -> repository name.
IMAGE_REPOSITORIES = {"ServingImageRepository": f"{PROJECT}-serve", "ProcessingImageRepository": f"{PROJECT}-build"}
USE_CONNECTION = ["codestar-connections:UseConnection", "codeconnections:UseConnection"]
USE_KEY = ["kms:Decrypt", "kms:GenerateDataKey"]


def image_repository(name: str) -> dict:
    """Immutable tags: a pushed tag always names the image built from its commit (packages register the digest).
    Retained: registered model packages name images in it for as long as they may be promoted or rolled back to."""
    return {"Type": "AWS::ECR::Repository", **RETAINED, "Properties": {
        "RepositoryName": name, "ImageTagMutability": "IMMUTABLE", "ImageScanningConfiguration": {"ScanOnPush": True},
        "EncryptionConfiguration": {"EncryptionType": "KMS"}}}  # AWS managed key: pulls need no key grants


def codebuild_statements() -> list[dict]:
    """What buildspec.yml does: tests, images, `clip-api deploy` of the stacks and the pipelines."""
    artifact_bucket = artifact_bucket_name(ACCOUNT, REGION)
    stacks = arn("cloudformation", f"stack/{PROJECT}-*/*")
    return [
        LOGS_STATEMENT,
        allow(["s3:GetObject", "s3:PutObject"], sub("${PipelineArtifacts.Arn}/*")),
        allow(["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:ListBucket"],
              [arn("s3", artifact_bucket, region="", account=""), arn("s3", artifact_bucket + "/*", region="", account="")]),
        allow(USE_KEY, ref("KmsKeyArn")),
        ECR_AUTH_STATEMENT,
        # Push to this stack's repositories (immutable tags), and read back the pushed digest the model package registers.
        allow(["ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload",
               "ecr:PutImage", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:DescribeRepositories", "ecr:DescribeImages"],
              [getatt(name, "Arn") for name in IMAGE_REPOSITORIES]),
        # The processing image's base is AWS's PyTorch Deep Learning Container, in AWS's own account.
        allow(["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
              arn("ecr", "repository/pytorch-training", account=DLC_ACCOUNT)),
        # OutputArtifactFormat CODEBUILD_CLONE_REF: CodeBuild clones through the connection with its own role.
        allow(USE_CONNECTION, ref("ConnectionArn")),
        allow(["cloudformation:CreateStack", "cloudformation:UpdateStack", "cloudformation:DescribeStacks",
               "cloudformation:DescribeStackEvents", "cloudformation:GetTemplate"], stacks),
        # clip-api deploy passes CloudFormation's service role on every stack call: CloudFormation acts with it, not with this role.
        pass_role(arn("iam", f"role/{PROJECT}-bootstrap-DeployRole-*", region=""), "cloudformation.amazonaws.com"),
        # Upgrading a deployment from before the serving pointer: read what each API function served, write it once.
        allow(["lambda:GetFunctionConfiguration"], arn("lambda", f"function:{PROJECT}-*")),
        allow(["dynamodb:PutItem"], arn("dynamodb", f"table/{POINTER_TABLE}")),
        # The prerequisite check of clip-api deploy: does the account already have API Gateway's CloudWatch role?
        allow(["apigateway:GET"], arn("apigateway", "/account", account="")),
        # `clip-api deploy` upserts each model's SageMaker Pipeline with the serving stack's PipelineRole.
        pass_role(arn("iam", f"role/{PROJECT}-serving-PipelineRole-*", region=""), "sagemaker.amazonaws.com"),
        allow(["sagemaker:CreatePipeline", "sagemaker:UpdatePipeline", "sagemaker:DescribePipeline", "sagemaker:StartPipelineExecution",
               "sagemaker:AddTags", "sagemaker:DescribeModelPackageGroup", "sagemaker:CreateModelPackageGroup"],
              [arn("sagemaker", f"pipeline/{PROJECT}-*"), arn("sagemaker", "model-package-group/clip-*")]),
    ]


def codepipeline_statements() -> list[dict]:
    return [
        allow(["s3:GetObject", "s3:PutObject", "s3:GetBucketVersioning"],
              [getatt("PipelineArtifacts", "Arn"), sub("${PipelineArtifacts.Arn}/*")]),
        allow(USE_CONNECTION, ref("ConnectionArn")),
        allow(["codebuild:StartBuild", "codebuild:BatchGetBuilds"], getatt("Build", "Arn")),
        allow(USE_KEY, ref("KmsKeyArn")),
    ]


def cicd_template() -> dict:
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"{PROJECT} CI/CD: git push -> CodePipeline -> CodeBuild (buildspec.yml)",
        "Parameters": {
            "ConnectionArn": {"Type": "String", "Description": "CodeStar (CodeConnections) connection to the git host"},
            "RepositoryId": {"Type": "String", "Description": "owner/repository"},
            "BranchName": {"Type": "String", "Default": "main"},
            "KmsKeyArn": {"Type": "String", "Description": "bootstrap stack's KMS key"},
        },
        "Resources": {
            "PipelineArtifacts": checkov_skip({"Type": "AWS::S3::Bucket", "Properties": {
                "BucketEncryption": kms_bucket_encryption(ref("KmsKeyArn")),
                "PublicAccessBlockConfiguration": public_access_block(),
                "VersioningConfiguration": {"Status": "Enabled"},
                "LifecycleConfiguration": {"Rules": [{"Id": "expire-build-artifacts", "Status": "Enabled", "ExpirationInDays": 90}]},
            }}, ("CKV_AWS_18", "transient pipeline artifacts; the pipeline's execution history is the audit trail")),
            "PipelineArtifactsPolicy": secure_transport_only("PipelineArtifacts"),
            **{logical_id: image_repository(name) for logical_id, name in IMAGE_REPOSITORIES.items()},
            "BuildRole": role("codebuild.amazonaws.com", [policy("build-and-deploy", codebuild_statements())],
                              "CodeBuild: test, lint, build images, deploy stacks, upsert pipelines"),
            "Build": _build_project(),
            "PipelineRole": role("codepipeline.amazonaws.com", [policy("run-pipeline", codepipeline_statements())],
                                 "CodePipeline: source and build"),
            "Pipeline": _pipeline(),
        },
        "Outputs": {"PipelineName": {"Value": ref("Pipeline")}, "BuildProject": {"Value": ref("Build")}},
    }


def _build_project() -> dict:
    return {"Type": "AWS::CodeBuild::Project", "Properties": {
        "Description": "tests, template checks, images, deploy, pipeline upsert",
        "ServiceRole": getatt("BuildRole", "Arn"),
        "EncryptionKey": ref("KmsKeyArn"),
        "Artifacts": {"Type": "CODEPIPELINE"},
        "Source": {"Type": "CODEPIPELINE", "BuildSpec": "buildspec.yml"},
        "TimeoutInMinutes": 120,
        "Environment": {"Type": "LINUX_CONTAINER", "ComputeType": "BUILD_GENERAL1_LARGE", "Image": "aws/codebuild/standard:7.0",
                        "PrivilegedMode": True},  # docker build of the serving and processing images
    }}


def _pipeline() -> dict:
    source = {"Name": "Source",
              "ActionTypeId": {"Category": "Source", "Owner": "AWS", "Provider": "CodeStarSourceConnection", "Version": "1"},
              "Configuration": {"ConnectionArn": ref("ConnectionArn"), "FullRepositoryId": ref("RepositoryId"),
                                "BranchName": ref("BranchName"), "OutputArtifactFormat": "CODEBUILD_CLONE_REF"},
              "OutputArtifacts": [{"Name": "Source"}]}
    build = {"Name": "BuildTestDeploy", "ActionTypeId": {"Category": "Build", "Owner": "AWS", "Provider": "CodeBuild", "Version": "1"},
             "Configuration": {"ProjectName": ref("Build")}, "InputArtifacts": [{"Name": "Source"}]}
    return {"Type": "AWS::CodePipeline::Pipeline", "Properties": {
        "RoleArn": getatt("PipelineRole", "Arn"),
        "PipelineType": "V2",
        "ArtifactStore": {"Type": "S3", "Location": ref("PipelineArtifacts"), "EncryptionKey": {"Id": ref("KmsKeyArn"), "Type": "KMS"}},
        "Stages": [{"Name": "Source", "Actions": [source]}, {"Name": "BuildTestDeploy", "Actions": [build]}],
    }}
