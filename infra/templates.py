"""CloudFormation templates, generated from configs/models/*.yaml and committed under infra/.

  bootstrap.yaml  KMS key and the encrypted artifact bucket (Lambda code, model artifacts, pipeline runs)
  serving.yaml    REST API with API keys and a usage plan, one API Lambda per model, the promotion
                  state machine with its planner and smoke-test Lambdas, the EventBridge rule, the
                  model package groups, the encrypted SNS topic, alarms, least-privilege roles
  cicd.yaml       CodePipeline (CodeStar connection source) -> CodeBuild running buildspec.yml

Regenerate with `clip-api infra render`; a test fails when the committed files drift.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from clip_core.model_config import ModelConfig, load_all_model_configs
from clip_core.names import (
    CORS_ALLOW_ORIGIN_ENV,
    METRICS_NAMESPACE,
    METRICS_NAMESPACE_ENV,
    MODEL_ID_ENV,
    PLANNER_FUNCTION,
    POINTER_TABLE,
    POINTER_TABLE_ENV,
    PROJECT,
    SERVED_MODELS_ENV,
    SMOKE_TEST_FUNCTION,
    STATE_MACHINE,
    TOPIC,
    model_resource_name,
)
from infra.deploy_role import deploy_role_statements
from promotion.events import approval_event_pattern
from promotion.plan import ADOPT_SPACE_KEY, SPACE_KEY
from promotion.pointer import KEY as POINTER_KEY
from promotion.workflow_asl import ASL_PATH

INFRA_DIR = Path(__file__).parent
PYTHON_RUNTIME = "python3.12"
DLC_ACCOUNT = "763104351884"  # AWS Deep Learning Containers' registry account


def sub(text: str) -> dict:
    return {"Fn::Sub": text}


def ref(name: str) -> dict:
    return {"Ref": name}


def getatt(resource: str, attribute: str) -> dict:
    return {"Fn::GetAtt": [resource, attribute]}


def logical(model: ModelConfig) -> str:
    return "".join(part.capitalize() for part in model.model_id.replace("-", " ").split())


def policy(name: str, statements: list[dict]) -> dict:
    return {"PolicyName": name, "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}


def allow(actions: list[str], resources, sid: str | None = None) -> dict:
    statement = {"Effect": "Allow", "Action": actions, "Resource": resources}
    if sid:
        statement["Sid"] = sid
    return statement


def role(service: str, policies: list[dict], description: str) -> dict:
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "Description": description,
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
            },
            "Policies": policies,
        },
    }


def checkov_skip(resource: dict, *reasons: tuple[str, str]) -> dict:
    """Attach justified checkov suppressions to a resource."""
    resource.setdefault("Metadata", {})["checkov"] = {"skip": [{"id": rule, "comment": why} for rule, why in reasons]}
    return resource


LOGS_STATEMENT = allow(["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"], sub("arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/*"))
XRAY_STATEMENT = allow(["xray:PutTraceSegments", "xray:PutTelemetryRecords"], "*", sid="XRayHasNoResourceLevelPermissions")


def lambda_function(description: str, handler: str, role_name: str, environment: dict, memory: int = 512, timeout: int = 30,
                    concurrency: int | None = None) -> dict:
    resource = {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "Description": description,
            "Runtime": PYTHON_RUNTIME,
            "Architectures": ["x86_64"],
            "Handler": handler,
            "Code": {"S3Bucket": ref("ArtifactBucket"), "S3Key": ref("LambdaCodeKey")},
            "Role": getatt(role_name, "Arn"),
            "MemorySize": memory,
            "Timeout": timeout,
            "TracingConfig": {"Mode": "Active"},
            "KmsKeyArn": ref("KmsKeyArn"),
            "Environment": {"Variables": {METRICS_NAMESPACE_ENV: METRICS_NAMESPACE, "LOG_LEVEL": "INFO", **environment}},
        },
    }
    reasons = []
    if concurrency:
        resource["Properties"]["ReservedConcurrentExecutions"] = concurrency
    else:
        reasons.append(("CKV_AWS_115", "no reserved concurrency by default: new accounts' quotas cannot hold it; a model config may set api.reserved_concurrency"))
    return checkov_skip(
        resource, *reasons,
        ("CKV_AWS_116", "invoked synchronously (API Gateway, Step Functions): errors return to the caller, a DLQ would never receive them"),
        ("CKV_AWS_117", "calls only AWS service APIs; no private network resources to reach, so no VPC"),
    )


def bootstrap_template() -> dict:
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "clip-embedding-api bootstrap: KMS key, the encrypted artifact bucket, CloudFormation's deploy role, API Gateway's logging role",
        "Parameters": {
            "ManageApiGatewayAccount": {
                "Type": "String", "AllowedValues": ["true", "false"], "Default": "true",
                "Description": "set API Gateway's account-level CloudWatch role for this region (false: the account already has one; clip-api deploy decides)"},
        },
        "Conditions": {"ManagesApiGatewayAccount": {"Fn::Equals": [ref("ManageApiGatewayAccount"), "true"]}},
        "Resources": {
            # CloudFormation's service role: every later stack create/update acts with it (clip-api deploy passes it).
            "DeployRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "Description": "CloudFormation: deploy the clip-embedding-api stacks",
                    "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                        "Effect": "Allow", "Principal": {"Service": "cloudformation.amazonaws.com"}, "Action": "sts:AssumeRole",
                        "Condition": {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}}}]},
                    "Policies": [policy("deploy-clip-embedding-api", deploy_role_statements())],
                },
            },
            # Stage logging needs the account-level CloudWatch role of API Gateway (one per account and region).
            # Retained: the account setting keeps pointing at the role whatever happens to this stack.
            "ApiGatewayCloudWatchRole": {
                "Type": "AWS::IAM::Role", "Condition": "ManagesApiGatewayAccount", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
                "Properties": {
                    "Description": "API Gateway: push access and execution logs to CloudWatch Logs (account setting)",
                    "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                        "Effect": "Allow", "Principal": {"Service": "apigateway.amazonaws.com"}, "Action": "sts:AssumeRole",
                        "Condition": {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}}}]},
                    "ManagedPolicyArns": [sub("arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs")],
                },
            },
            "ApiGatewayAccount": {"Type": "AWS::ApiGateway::Account", "Condition": "ManagesApiGatewayAccount",
                                  "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
                                  "Properties": {"CloudWatchRoleArn": getatt("ApiGatewayCloudWatchRole", "Arn")}},
            "Key": {
                "Type": "AWS::KMS::Key",
                "Properties": {
                    "Description": "clip-embedding-api: artifacts, Lambda environments, SNS",
                    "EnableKeyRotation": True,
                    "KeyPolicy": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {"Sid": "AccountAdministers", "Effect": "Allow", "Principal": {"AWS": sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")},
                             "Action": "kms:*", "Resource": "*"},
                            # Confused-deputy protection: the services may use the key only on this account's behalf.
                            {"Sid": "ServicesUseTheKey", "Effect": "Allow",
                             "Principal": {"Service": ["sns.amazonaws.com", "events.amazonaws.com", "cloudwatch.amazonaws.com", "states.amazonaws.com"]},
                             "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*",
                             "Condition": {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}}},
                            # Encrypted log groups: CloudWatch Logs uses the key only for this account's log groups.
                            {"Sid": "CloudWatchLogsEncryptsLogGroups", "Effect": "Allow",
                             "Principal": {"Service": sub("logs.${AWS::Region}.amazonaws.com")},
                             "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"], "Resource": "*",
                             "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": sub("arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:*")}}},
                        ],
                    },
                },
            },
            "KeyAlias": {"Type": "AWS::KMS::Alias", "Properties": {"AliasName": f"alias/{PROJECT}", "TargetKeyId": ref("Key")}},
            "AccessLogBucket": checkov_skip({
                "Type": "AWS::S3::Bucket",
                "Properties": {
                    "BucketEncryption": {"ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
                    "PublicAccessBlockConfiguration": _public_access_block(),
                    "VersioningConfiguration": {"Status": "Enabled"},
                    "LifecycleConfiguration": {"Rules": [{"Id": "expire-logs", "Status": "Enabled", "ExpirationInDays": 365}]},
                    "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerPreferred"}]},
                },
            }, ("CKV_AWS_18", "this is the access-log bucket itself"), ("CKV_AWS_145", "S3 server access logging cannot deliver to SSE-KMS buckets")),
            "ArtifactBucket": {
                "Type": "AWS::S3::Bucket",
                "Properties": {
                    "BucketName": sub(f"{PROJECT}-${{AWS::AccountId}}-${{AWS::Region}}"),
                    "BucketEncryption": {"ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": getatt("Key", "Arn")}, "BucketKeyEnabled": True}]},
                    "PublicAccessBlockConfiguration": _public_access_block(),
                    "VersioningConfiguration": {"Status": "Enabled"},
                    "LoggingConfiguration": {"DestinationBucketName": ref("AccessLogBucket"), "LogFilePrefix": "artifacts/"},
                    # Registered model.tar.gz files live under pipelines/ and must outlive their model package:
                    # nothing current ever expires; only overwritten or deleted versions and broken uploads do.
                    "LifecycleConfiguration": {"Rules": [{"Id": "expire-replaced-versions", "Status": "Enabled", "Prefix": "",
                                                          "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
                                                          "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}]},
                },
            },
            "ArtifactBucketPolicy": {
                "Type": "AWS::S3::BucketPolicy",
                "Properties": {
                    "Bucket": ref("ArtifactBucket"),
                    "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                        "Resource": [getatt("ArtifactBucket", "Arn"), sub("${ArtifactBucket.Arn}/*")],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]},
                },
            },
        },
        "Outputs": {
            "ArtifactBucketName": {"Value": ref("ArtifactBucket"), "Export": {"Name": f"{PROJECT}-artifact-bucket"}},
            "KmsKeyArn": {"Value": getatt("Key", "Arn"), "Export": {"Name": f"{PROJECT}-kms-key-arn"}},
            "DeployRoleArn": {"Value": getatt("DeployRole", "Arn"), "Export": {"Name": f"{PROJECT}-deploy-role-arn"}},
            # Compared by clip-api deploy with the account's setting (a generated name is truncated: never guess it).
            "ApiGatewayCloudWatchRoleArn": {"Condition": "ManagesApiGatewayAccount", "Value": getatt("ApiGatewayCloudWatchRole", "Arn")},
        },
    }


def _public_access_block() -> dict:
    return {"BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}


LOCK_ITEMS_ONLY = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["lock:*"]}}
BATCH_PREFIX = "batch/"  # S3 keys of embed-dataset's Batch Transform inputs and outputs
BATCH_NAME_PREFIX = "clip-bt-"  # its SageMaker models and transform jobs


def serving_template(models: list[ModelConfig], include_demo: bool = False) -> dict:
    """The serving stack for `models` (demo-only models only when asked: local mode serves them)."""
    served = [m for m in models if include_demo or not m.demo_only]
    groups = [m.registry.model_package_group for m in served]
    resources: dict = {}
    params = {
        "ArtifactBucket": {"Type": "String", "Description": "bootstrap stack's artifact bucket"},
        "KmsKeyArn": {"Type": "String", "Description": "bootstrap stack's KMS key"},
        "LambdaCodeKey": {"Type": "String", "Description": "S3 key of the Lambda code zip (clip-api deploy uploads it)"},
        "NotificationEmail": {"Type": "String", "Default": "", "Description": "e-mail subscribed to promotion notifications (optional)"},
        "CorsAllowOrigin": {"Type": "String", "Default": "", "Description": "allowed CORS origin; empty disables CORS"},
        "ApiRateLimit": {"Type": "Number", "Default": 50, "MinValue": 1},
        "ApiBurstLimit": {"Type": "Number", "Default": 100, "MinValue": 1},
        "ApiDailyQuota": {"Type": "Number", "Default": 100000, "MinValue": 1},
        # Bounded so that polls (max_polls of them), the bake and retries fit the workflow's 2 h limit.
        "BakeSeconds": {"Type": "Number", "Default": 300, "MinValue": 0, "MaxValue": 1800},
        "PollSeconds": {"Type": "Number", "Default": 30, "MinValue": 0, "MaxValue": 60},
    }
    conditions = {"HasEmail": {"Fn::Not": [{"Fn::Equals": [ref("NotificationEmail"), ""]}]}}
    conditions["HasCors"] = {"Fn::Not": [{"Fn::Equals": [ref("CorsAllowOrigin"), ""]}]}
    conditions["NoCors"] = {"Fn::Equals": [ref("CorsAllowOrigin"), ""]}
    bucket_arn = sub("arn:${AWS::Partition}:s3:::${ArtifactBucket}")
    objects_arn = sub("arn:${AWS::Partition}:s3:::${ArtifactBucket}/*")
    endpoint_arn = sub("arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:endpoint/clip-*")
    kms_use = allow(["kms:Decrypt", "kms:GenerateDataKey"], ref("KmsKeyArn"))

    pointer_table_arn = getatt("ServingPointerTable", "Arn")
    # Which endpoint serves each model: written only by the promotion workflow (see promotion/pointer.py).
    resources["ServingPointerTable"] = {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
        "Properties": {
            "TableName": POINTER_TABLE, "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": POINTER_KEY, "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": POINTER_KEY, "KeyType": "HASH"}],
            "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": ref("KmsKeyArn")},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        },
    }
    resources["Topic"] = {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": TOPIC, "KmsMasterKeyId": ref("KmsKeyArn")}}
    resources["TopicEmail"] = {"Type": "AWS::SNS::Subscription", "Condition": "HasEmail",
                               "Properties": {"TopicArn": ref("Topic"), "Protocol": "email", "Endpoint": ref("NotificationEmail")}}
    for model in served:
        resources[f"{logical(model)}PackageGroup"] = {
            "Type": "AWS::SageMaker::ModelPackageGroup",
            "Properties": {"ModelPackageGroupName": model.registry.model_package_group, "ModelPackageGroupDescription": model.description},
        }

    resources["ModelExecutionRole"] = role("sagemaker.amazonaws.com", [policy("serve-model", [
        allow(["s3:GetObject"], objects_arn),
        kms_use,
        allow(["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], sub("arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/" + PROJECT + "-*")),
        allow(["ecr:GetAuthorizationToken"], "*", sid="EcrAuthHasNoResourceLevelPermissions"),
        allow(["cloudwatch:PutMetricData"], "*", sid="PutMetricDataHasNoResourceLevelPermissions"),
        LOGS_STATEMENT,
    ])], "SageMaker models of clip-embedding-api: read artifacts, pull the serving image")
    # Batch Transform (clip-api embed-dataset): the job reads the package's model.tar.gz and its
    # input shards, writes .out files under batch/ only (clip_api/batch_transform.py).
    batch_objects_arn = sub("arn:${AWS::Partition}:s3:::${ArtifactBucket}/" + BATCH_PREFIX + "*")
    resources["TransformRole"] = role("sagemaker.amazonaws.com", [policy("batch-transform", [
        allow(["s3:GetObject"], objects_arn),
        allow(["s3:PutObject"], batch_objects_arn),
        {**allow(["s3:ListBucket"], bucket_arn), "Condition": {"StringLike": {"s3:prefix": [BATCH_PREFIX + "*"]}}},
        kms_use,
        allow(["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], sub("arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/" + PROJECT + "-*")),
        allow(["ecr:GetAuthorizationToken"], "*", sid="EcrAuthHasNoResourceLevelPermissions"),
        allow(["cloudwatch:PutMetricData"], "*", sid="PutMetricDataHasNoResourceLevelPermissions"),
        allow(["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
              sub("arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/sagemaker/TransformJobs*")),
    ])], "SageMaker Batch Transform jobs of clip-embedding-api: read the model and batch inputs, write batch outputs")
    sm_arn = "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:"
    # What `clip-api embed-dataset --backend batch-transform` calls, for the person or CI role that runs it.
    resources["EmbedDatasetPolicy"] = {"Type": "AWS::IAM::ManagedPolicy", "Properties": {
        "Description": "run clip-api embed-dataset on Batch Transform with an approved model package",
        "PolicyDocument": {"Version": "2012-10-17", "Statement": [
            allow(["sagemaker:ListModelPackages"], "*", sid="ListModelPackagesHasNoResourceLevelPermissions"),
            allow(["sagemaker:DescribeModelPackage"], [sub(sm_arn + "model-package/" + g + "/*") for g in groups]),
            allow(["dynamodb:GetItem"], pointer_table_arn),
            allow(["sagemaker:CreateModel", "sagemaker:DescribeModel", "sagemaker:AddTags"], sub(sm_arn + "model/" + BATCH_NAME_PREFIX + "*")),
            allow(["sagemaker:CreateTransformJob", "sagemaker:DescribeTransformJob", "sagemaker:StopTransformJob", "sagemaker:AddTags"],
                  sub(sm_arn + "transform-job/" + BATCH_NAME_PREFIX + "*")),
            {**allow(["iam:PassRole"], getatt("TransformRole", "Arn")), "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}},
            allow(["s3:GetObject"], objects_arn),  # the package's model.tar.gz (HeadObject: its digest) and the .out files
            allow(["s3:PutObject"], batch_objects_arn),
            {**allow(["s3:ListBucket"], bucket_arn), "Condition": {"StringLike": {"s3:prefix": [BATCH_PREFIX + "*"]}}},
            kms_use,
            allow(["cloudformation:DescribeStacks"], sub("arn:${AWS::Partition}:cloudformation:${AWS::Region}:${AWS::AccountId}:stack/${AWS::StackName}/*")),
        ]},
    }}
    resources["PipelineRole"] = role("sagemaker.amazonaws.com", [policy("build-models", [
        # Builds read anything of the project's (code, checkpoints, earlier artifacts) but write only pipeline
        # outputs: never the templates, Lambda code or deploy records that CloudFormation and CodeBuild use.
        allow(["s3:GetObject"], objects_arn),
        allow(["s3:PutObject"], sub("arn:${AWS::Partition}:s3:::${ArtifactBucket}/" + PROJECT + "/pipelines/*")),
        allow(["s3:ListBucket"], bucket_arn),
        kms_use,
        allow(["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], sub("arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/" + PROJECT + "-*")),
        allow(["ecr:GetAuthorizationToken"], "*", sid="EcrAuthHasNoResourceLevelPermissions"),
        allow(["sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob", "sagemaker:StopProcessingJob", "sagemaker:AddTags"],
              sub("arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:processing-job/*")),
        allow(["sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage", "sagemaker:DescribeModelPackageGroup"],
              [sub("arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:model-package/" + g + "*") for g in groups]
              + [sub("arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:model-package-group/" + g) for g in groups]),
        allow(["iam:PassRole"], sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${AWS::StackName}-PipelineRole-*")),
        LOGS_STATEMENT,
        # A build registers for approval, never approved: whoever can start a pipeline must not skip the registry's approval.
        {"Sid": "RegisterOnlyPendingApproval", "Effect": "Deny", "Action": ["sagemaker:CreateModelPackage", "sagemaker:UpdateModelPackage"],
         "Resource": "*", "Condition": {"StringNotEquals": {"sagemaker:ModelApprovalStatus": "PendingManualApproval"}}},
        # Moving the stable URL to another embedding space is the approver's decision (issue 17): a build never records it,
        # and never relabels the space its gate recorded at registration.
        {"Sid": "NeverAdoptASpace", "Effect": "Deny", "Action": ["sagemaker:CreateModelPackage", "sagemaker:UpdateModelPackage"],
         "Resource": "*", "Condition": {"Null": {f"sagemaker:CustomerMetadataProperties/{ADOPT_SPACE_KEY}": "false"}}},
        {"Sid": "NeverRelabelASpace", "Effect": "Deny", "Action": ["sagemaker:UpdateModelPackage"],
         "Resource": "*", "Condition": {"Null": {f"sagemaker:CustomerMetadataProperties/{SPACE_KEY}": "false"}}},
    ])], "SageMaker Pipelines of clip-embedding-api: processing jobs, registry")

    resources["ApiFunctionRole"] = role("lambda.amazonaws.com", [policy("invoke-endpoints", [
        allow(["sagemaker:InvokeEndpoint"], endpoint_arn),
        allow(["dynamodb:GetItem"], pointer_table_arn),
        kms_use, LOGS_STATEMENT, XRAY_STATEMENT,
    ])], "API Lambdas: invoke the clip endpoints")
    for model in served:
        name = model_resource_name(model.model_id)
        env = {MODEL_ID_ENV: model.model_id, POINTER_TABLE_ENV: ref("ServingPointerTable"), SERVED_MODELS_ENV: ",".join(m.model_id for m in served),
               CORS_ALLOW_ORIGIN_ENV: ref("CorsAllowOrigin"), "POWERTOOLS_SERVICE_NAME": name}
        function = lambda_function(f"{model.description}: public API", "embedding_api.app.handler", "ApiFunctionRole", env,
                                   concurrency=model.api.reserved_concurrency)
        function["Properties"]["FunctionName"] = name
        resources[f"{logical(model)}ApiFunction"] = function
        for metric in ("Errors", "Throttles"):
            resources[f"{logical(model)}ApiFunction{metric}"] = {
                "Type": "AWS::CloudWatch::Alarm",
                "Properties": {"AlarmDescription": f"{name}: Lambda {metric.lower()}", "Namespace": "AWS/Lambda", "MetricName": metric,
                               "Dimensions": [{"Name": "FunctionName", "Value": ref(f"{logical(model)}ApiFunction")}], "Statistic": "Sum",
                               "Period": 60, "EvaluationPeriods": 1, "Threshold": 1, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                               "TreatMissingData": "notBreaching", "AlarmActions": [ref("Topic")]},
            }

    resources["PlannerRole"] = role("lambda.amazonaws.com", [policy("plan-promotions", [
        allow(["sagemaker:DescribeModelPackage"], [sub("arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:model-package/" + g + "/*") for g in groups]),
        allow(["sagemaker:ListEndpoints"], "*", sid="ListEndpointsHasNoResourceLevelPermissions"),
        allow(["dynamodb:GetItem"], pointer_table_arn),
        # The per-model promotion lock (promotion/lock.py): lock items only, never a serving pointer.
        {**allow(["dynamodb:PutItem", "dynamodb:DeleteItem"], pointer_table_arn), "Condition": LOCK_ITEMS_ONLY},
        # Whether a lock's owner (an execution of the promotion workflow) has ended without releasing it.
        # (the action's resource types are execution and express: ours is a standard workflow, both are named)
        allow(["states:DescribeExecution"], [sub(f"arn:${{AWS::Partition}}:states:${{AWS::Region}}:${{AWS::AccountId}}:{kind}:{STATE_MACHINE}:*")
                                             for kind in ("execution", "express")]),
        kms_use, LOGS_STATEMENT, XRAY_STATEMENT,
    ])], "promotion planner: read the package and what is live")
    resources["PlannerFunction"] = lambda_function(
        "clip-embedding-api: plan a promotion", "promotion_planner.app.handler", "PlannerRole",
        {"MODEL_EXECUTION_ROLE_ARN": getatt("ModelExecutionRole", "Arn"), "TOPIC_ARN": ref("Topic"), POINTER_TABLE_ENV: ref("ServingPointerTable"),
         "BAKE_SECONDS": ref("BakeSeconds"), "POLL_SECONDS": ref("PollSeconds"), "POWERTOOLS_SERVICE_NAME": "clip-promotion-planner"})
    resources["PlannerFunction"]["Properties"]["FunctionName"] = PLANNER_FUNCTION
    resources["SmokeTestRole"] = role("lambda.amazonaws.com", [policy("smoke-test", [
        allow(["s3:GetObject"], objects_arn), allow(["sagemaker:InvokeEndpoint"], endpoint_arn), kms_use, LOGS_STATEMENT, XRAY_STATEMENT,
    ])], "promotion smoke test: invoke the new endpoint")
    resources["SmokeTestFunction"] = lambda_function("clip-embedding-api: smoke-test a new endpoint", "smoke_test.app.handler", "SmokeTestRole",
                                                     {"POWERTOOLS_SERVICE_NAME": "clip-smoke-test"}, timeout=120)
    resources["SmokeTestFunction"]["Properties"]["FunctionName"] = SMOKE_TEST_FUNCTION

    sagemaker_arn = "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}"
    resources["StateMachineLogs"] = {"Type": "AWS::Logs::LogGroup", "Properties": {"RetentionInDays": 365, "KmsKeyId": ref("KmsKeyArn")}}
    resources["StateMachineRole"] = role("states.amazonaws.com", [policy("promote", [
        allow(["lambda:InvokeFunction"], [getatt("PlannerFunction", "Arn"), getatt("SmokeTestFunction", "Arn")]),
        allow(["sagemaker:CreateModel", "sagemaker:DeleteModel"], sub(sagemaker_arn + ":model/clip-*")),
        allow(["sagemaker:CreateEndpointConfig", "sagemaker:DeleteEndpointConfig"], sub(sagemaker_arn + ":endpoint-config/clip-*")),
        allow(["sagemaker:CreateEndpoint", "sagemaker:DescribeEndpoint", "sagemaker:DeleteEndpoint", "sagemaker:UpdateEndpoint"], endpoint_arn),
        # CreateEndpoint is authorised against the endpoint config it deploys as well as the endpoint.
        allow(["sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint"], sub(sagemaker_arn + ":endpoint-config/clip-*")),
        # The optimised createModel/createEndpointConfig/createEndpoint integrations call ListTags on what they create.
        allow(["sagemaker:AddTags", "sagemaker:ListTags"], [sub(sagemaker_arn + ":model/clip-*"), sub(sagemaker_arn + ":endpoint-config/clip-*"), endpoint_arn]),
        allow(["sagemaker:UpdateModelPackage"], [sub(sagemaker_arn + ":model-package/" + g + "/*") for g in groups]),
        # The workflow records outcomes (metadata, Rejected): approving is a person's act in the registry, never the workflow's.
        {"Sid": "NeverApprove", "Effect": "Deny", "Action": ["sagemaker:UpdateModelPackage"], "Resource": "*",
         "Condition": {"StringEquals": {"sagemaker:ModelApprovalStatus": "Approved"}}},
        # ... nor records an embedding space or the decision to adopt one
        *({"Sid": f"NeverWrite{sid}", "Effect": "Deny", "Action": ["sagemaker:UpdateModelPackage"], "Resource": "*",
           "Condition": {"Null": {f"sagemaker:CustomerMetadataProperties/{key}": "false"}}} for sid, key in (("Space", SPACE_KEY), ("AdoptSpace", ADOPT_SPACE_KEY))),
        {**allow(["iam:PassRole"], getatt("ModelExecutionRole", "Arn")), "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}},
        allow(["dynamodb:PutItem"], pointer_table_arn),
        {**allow(["dynamodb:DeleteItem"], pointer_table_arn), "Condition": LOCK_ITEMS_ONLY},  # releasing the promotion lock
        allow(["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms", "cloudwatch:DescribeAlarms"], sub("arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:clip-*")),
        allow(["sns:Publish"], ref("Topic")),
        kms_use,
        allow(["cloudwatch:GetMetricStatistics"], "*", sid="MetricReadsHaveNoResourceLevelPermissions"),  # the bake's traffic check
        allow(["logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery", "logs:ListLogDeliveries",
               "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups"], "*", sid="LogDeliveryHasNoResourceLevelPermissions"),
        XRAY_STATEMENT,
        # Step Functions' X-Ray tracing reads the sampling rules as well as sending segments.
        allow(["xray:GetSamplingRules", "xray:GetSamplingTargets"], "*", sid="XRaySamplingHasNoResourceLevelPermissions"),
    ])], "promotion workflow")
    resources["PromotionStateMachine"] = {
        "Type": "AWS::StepFunctions::StateMachine",
        "Properties": {
            "StateMachineName": STATE_MACHINE,
            "RoleArn": getatt("StateMachineRole", "Arn"),
            # Fn::Sub over the committed ASL (its ${...} placeholders are the only ${ in it): CloudFormation
            # and moto's stand-in both accept this form, unlike DefinitionSubstitutions.
            "DefinitionString": {"Fn::Sub": [json.dumps(json.loads(ASL_PATH.read_text()), separators=(",", ":")), {
                "Partition": ref("AWS::Partition"), "PlanFunctionArn": getatt("PlannerFunction", "Arn"),
                "SmokeTestFunctionArn": getatt("SmokeTestFunction", "Arn"), "TopicArn": ref("Topic")}]},
            "LoggingConfiguration": {"Level": "ERROR", "IncludeExecutionData": False,
                                     "Destinations": [{"CloudWatchLogsLogGroup": {"LogGroupArn": getatt("StateMachineLogs", "Arn")}}]},
            "TracingConfiguration": {"Enabled": True},
        },
    }
    resources["EventsRole"] = role("events.amazonaws.com", [policy("start-promotion", [allow(["states:StartExecution"], ref("PromotionStateMachine"))])],
                                   "EventBridge: start promotions")
    resources["ApprovalRule"] = {
        "Type": "AWS::Events::Rule",
        "Properties": {"Description": "an approval in a clip model package group starts a promotion", "EventPattern": approval_event_pattern(groups),
                       "State": "ENABLED", "Targets": [{"Id": "promotion", "Arn": ref("PromotionStateMachine"), "RoleArn": getatt("EventsRole", "Arn")}]},
    }
    _add_rest_api(resources, served)
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "clip-embedding-api serving: REST API, per-model Lambdas, promotion workflow, registry groups, notifications",
        "Parameters": params,
        "Conditions": conditions,
        "Resources": resources,
        "Outputs": {
            "ApiUrl": {"Value": sub("https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/prod")},
            "ApiKeyId": {"Value": ref("ApiKey")},
            "TopicArn": {"Value": ref("Topic")},
            "StateMachineArn": {"Value": ref("PromotionStateMachine")},
            "ModelExecutionRoleArn": {"Value": getatt("ModelExecutionRole", "Arn")},
            "PipelineRoleArn": {"Value": getatt("PipelineRole", "Arn")},
            "TransformRoleArn": {"Value": getatt("TransformRole", "Arn")},
            "EmbedDatasetPolicyArn": {"Value": ref("EmbedDatasetPolicy")},
        },
    }


def _add_rest_api(resources: dict, served: list[ModelConfig]) -> None:
    resources["Api"] = {"Type": "AWS::ApiGateway::RestApi", "Properties": {
        "Name": PROJECT, "Description": "CLIP embeddings at stable URLs", "EndpointConfiguration": {"Types": ["REGIONAL"]},
        "ApiKeySourceType": "HEADER", "MinimumCompressionSize": 1024}}
    routes = [(f"{logical(m)}Route", m.route, f"{logical(m)}ApiFunction", ref("Api"), getatt("Api", "RootResourceId")) for m in served]
    resources["V1Resource"] = {"Type": "AWS::ApiGateway::Resource", "Properties": {"RestApiId": ref("Api"), "ParentId": getatt("Api", "RootResourceId"), "PathPart": "v1"}}
    routes.append(("OpenAiRoute", "embeddings", f"{logical(served[0])}ApiFunction", ref("Api"), ref("V1Resource")))
    methods: dict[str, list[str]] = {"POST": [], "OPTIONS": []}
    for name, path, function, api, parent in routes:
        resources[f"{name}Resource"] = {"Type": "AWS::ApiGateway::Resource", "Properties": {"RestApiId": api, "ParentId": parent, "PathPart": path}}
        for verb, key_required in (("POST", True), ("OPTIONS", False)):  # OPTIONS: CORS preflight carries no API key
            method = f"{name}{verb.capitalize()}"
            proxy = {"Type": "AWS_PROXY", "IntegrationHttpMethod": "POST", "TimeoutInMillis": 29000,
                     "Uri": sub(f"arn:${{AWS::Partition}}:apigateway:${{AWS::Region}}:lambda:path/2015-03-31/functions/${{{function}.Arn}}/invocations")}
            properties = {"RestApiId": api, "ResourceId": ref(f"{name}Resource"), "HttpMethod": verb, "ApiKeyRequired": key_required,
                          "AuthorizationType": "NONE", "Integration": proxy}
            resources[method] = checkov_skip({"Type": "AWS::ApiGateway::Method", "Properties": properties},
                                             ("CKV_AWS_59", "access is controlled by API keys with a usage plan (throttle and quota), as the public contract specifies"))
            if verb == "OPTIONS":
                # Without CORS (CorsAllowOrigin empty) there is no OPTIONS method: an unauthenticated request never reaches the function.
                resources[method]["Condition"] = "HasCors"
            methods[verb].append(method)
        resources[f"{name}Permission"] = {"Type": "AWS::Lambda::Permission", "Properties": {
            "Action": "lambda:InvokeFunction", "FunctionName": ref(function), "Principal": "apigateway.amazonaws.com",
            "SourceArn": sub("arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${Api}/*/*/*")}}
    # A Deployment is a snapshot: CloudFormation makes a new one only for a new logical id. Naming it after
    # the routes and methods it snapshots makes every change to them reach the stage.
    # One Deployment per CORS setting, since the OPTIONS methods exist only with CORS.
    snapshot = {name: resources[name] for name in sorted(resources) if resources[name]["Type"] in ("AWS::ApiGateway::Resource", "AWS::ApiGateway::Method")}
    digest = hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).hexdigest()[:12]
    deployment, cors_deployment = f"ApiDeployment{digest}", f"ApiDeploymentWithCors{digest}"
    resources[deployment] = {"Type": "AWS::ApiGateway::Deployment", "Condition": "NoCors", "DependsOn": methods["POST"],
                             "Properties": {"RestApiId": ref("Api")}}
    resources[cors_deployment] = {"Type": "AWS::ApiGateway::Deployment", "Condition": "HasCors", "DependsOn": methods["POST"] + methods["OPTIONS"],
                                  "Properties": {"RestApiId": ref("Api")}}
    resources["ApiAccessLogs"] = {"Type": "AWS::Logs::LogGroup", "Properties": {"RetentionInDays": 365, "KmsKeyId": ref("KmsKeyArn")}}
    resources["ApiStage"] = checkov_skip({"Type": "AWS::ApiGateway::Stage", "Properties": {
        "RestApiId": ref("Api"), "DeploymentId": {"Fn::If": ["HasCors", ref(cors_deployment), ref(deployment)]}, "StageName": "prod", "TracingEnabled": True,
        "AccessLogSetting": {"DestinationArn": getatt("ApiAccessLogs", "Arn"),
                             "Format": '{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","apiKeyId":"$context.identity.apiKeyId",'
                                       '"path":"$context.path","status":"$context.status","latency":"$context.responseLatency"}'},
        "MethodSettings": [{"ResourcePath": "/*", "HttpMethod": "*", "MetricsEnabled": True, "LoggingLevel": "ERROR", "DataTraceEnabled": False,
                            "ThrottlingRateLimit": ref("ApiRateLimit"), "ThrottlingBurstLimit": ref("ApiBurstLimit")}],
    }}, ("CKV_AWS_120", "embeddings of arbitrary inputs are not worth caching at the gateway: responses are large and rarely repeat"))
    resources["ApiKey"] = {"Type": "AWS::ApiGateway::ApiKey", "DependsOn": ["ApiStage"], "Properties": {
        "Enabled": True, "Description": "default consumer key (create one per consumer)", "StageKeys": [{"RestApiId": ref("Api"), "StageName": "prod"}]}}
    resources["UsagePlan"] = {"Type": "AWS::ApiGateway::UsagePlan", "DependsOn": ["ApiStage"], "Properties": {
        "UsagePlanName": f"{PROJECT}-default", "ApiStages": [{"ApiId": ref("Api"), "Stage": "prod"}],
        "Throttle": {"RateLimit": ref("ApiRateLimit"), "BurstLimit": ref("ApiBurstLimit")},
        "Quota": {"Limit": ref("ApiDailyQuota"), "Period": "DAY"}}}
    resources["UsagePlanKey"] = {"Type": "AWS::ApiGateway::UsagePlanKey", "Properties": {"KeyId": ref("ApiKey"), "KeyType": "API_KEY", "UsagePlanId": ref("UsagePlan")}}
    for metric, threshold, statistic in (("5XXError", 1, "Sum"), ("Latency", 10000, "Average")):
        resources[f"Api{metric}Alarm"] = {"Type": "AWS::CloudWatch::Alarm", "Properties": {
            "AlarmDescription": f"{PROJECT} API {metric}", "Namespace": "AWS/ApiGateway", "MetricName": metric,
            "Dimensions": [{"Name": "ApiName", "Value": PROJECT}, {"Name": "Stage", "Value": "prod"}], "Statistic": statistic, "Period": 60,
            "EvaluationPeriods": 5, "Threshold": threshold, "ComparisonOperator": "GreaterThanOrEqualToThreshold", "TreatMissingData": "notBreaching",
            "AlarmActions": [ref("Topic")]}}


# The images CodeBuild pushes (buildspec.yml): logical id -> repository name.
IMAGE_REPOSITORIES = {"ServingImageRepository": f"{PROJECT}-serve", "ProcessingImageRepository": f"{PROJECT}-build"}


def image_repository(name: str) -> dict:
    """Immutable tags: a pushed tag always names the image built from its commit (packages register the digest).
    Retained: registered model packages name images in it for as long as they may be promoted or rolled back to."""
    return {"Type": "AWS::ECR::Repository", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain", "Properties": {
        "RepositoryName": name, "ImageTagMutability": "IMMUTABLE", "ImageScanningConfiguration": {"ScanOnPush": True},
        "EncryptionConfiguration": {"EncryptionType": "KMS"}}}  # AWS managed key: pulls need no key grants


def cicd_template() -> dict:
    artifact_arn = getatt("PipelineArtifacts", "Arn")
    codebuild_role = role("codebuild.amazonaws.com", [policy("build-and-deploy", [
        LOGS_STATEMENT,
        allow(["s3:GetObject", "s3:PutObject"], sub("${PipelineArtifacts.Arn}/*")),
        allow(["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:ListBucket"], [sub("arn:${AWS::Partition}:s3:::" + PROJECT + "-${AWS::AccountId}-${AWS::Region}"),
                                                                 sub("arn:${AWS::Partition}:s3:::" + PROJECT + "-${AWS::AccountId}-${AWS::Region}/*")]),
        allow(["kms:Decrypt", "kms:GenerateDataKey"], ref("KmsKeyArn")),
        allow(["ecr:GetAuthorizationToken"], "*", sid="EcrAuthHasNoResourceLevelPermissions"),
        # Push to this stack's repositories (immutable tags), and read back the pushed digest the model package registers.
        allow(["ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage",
               "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:DescribeRepositories", "ecr:DescribeImages"],
              [getatt(name, "Arn") for name in IMAGE_REPOSITORIES]),
        # The processing image's base is AWS's PyTorch Deep Learning Container, in AWS's own account.
        allow(["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
              sub("arn:${AWS::Partition}:ecr:${AWS::Region}:" + DLC_ACCOUNT + ":repository/pytorch-training")),
        # OutputArtifactFormat CODEBUILD_CLONE_REF: CodeBuild clones through the connection with its own role.
        allow(["codestar-connections:UseConnection", "codeconnections:UseConnection"], ref("ConnectionArn")),
        allow(["cloudformation:CreateStack", "cloudformation:UpdateStack", "cloudformation:DescribeStacks", "cloudformation:DescribeStackEvents",
               "cloudformation:GetTemplate"],
              sub("arn:${AWS::Partition}:cloudformation:${AWS::Region}:${AWS::AccountId}:stack/" + PROJECT + "-*/*")),
        # clip-api deploy passes CloudFormation's service role on every stack call: CloudFormation acts with it, not with this role.
        {**allow(["iam:PassRole"], sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:role/" + PROJECT + "-bootstrap-DeployRole-*")),
         "Condition": {"StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}}},
        # Upgrading a deployment from before the serving pointer: read what each API function served, write it once.
        allow(["lambda:GetFunctionConfiguration"], sub("arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:" + PROJECT + "-*")),
        allow(["dynamodb:PutItem"], sub("arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/" + POINTER_TABLE)),
        # The prerequisite check of clip-api deploy: does the account already have API Gateway's CloudWatch role?
        allow(["apigateway:GET"], sub("arn:${AWS::Partition}:apigateway:${AWS::Region}::/account")),
        # `clip-api deploy` upserts each model's SageMaker Pipeline with the serving stack's PipelineRole.
        {**allow(["iam:PassRole"], sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:role/" + PROJECT + "-serving-PipelineRole-*")),
         "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}},
        allow(["sagemaker:CreatePipeline", "sagemaker:UpdatePipeline", "sagemaker:DescribePipeline", "sagemaker:StartPipelineExecution", "sagemaker:AddTags",
               "sagemaker:DescribeModelPackageGroup", "sagemaker:CreateModelPackageGroup"],
              [sub("arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:pipeline/" + PROJECT + "-*"),
               sub("arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:model-package-group/clip-*")]),
    ])], "CodeBuild: test, lint, build images, deploy stacks, upsert pipelines")
    pipeline_role = role("codepipeline.amazonaws.com", [policy("run-pipeline", [
        allow(["s3:GetObject", "s3:PutObject", "s3:GetBucketVersioning"], [artifact_arn, sub("${PipelineArtifacts.Arn}/*")]),
        allow(["codestar-connections:UseConnection", "codeconnections:UseConnection"], ref("ConnectionArn")),
        allow(["codebuild:StartBuild", "codebuild:BatchGetBuilds"], getatt("Build", "Arn")),
        allow(["kms:Decrypt", "kms:GenerateDataKey"], ref("KmsKeyArn")),
    ])], "CodePipeline: source and build")
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "clip-embedding-api CI/CD: git push -> CodePipeline -> CodeBuild (buildspec.yml)",
        "Parameters": {
            "ConnectionArn": {"Type": "String", "Description": "CodeStar (CodeConnections) connection to the git host"},
            "RepositoryId": {"Type": "String", "Description": "owner/repository"},
            "BranchName": {"Type": "String", "Default": "main"},
            "KmsKeyArn": {"Type": "String", "Description": "bootstrap stack's KMS key"},
        },
        "Resources": {
            "PipelineArtifacts": {"Type": "AWS::S3::Bucket", "Properties": {
                "BucketEncryption": {"ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": ref("KmsKeyArn")}, "BucketKeyEnabled": True}]},
                "PublicAccessBlockConfiguration": _public_access_block(),
                "VersioningConfiguration": {"Status": "Enabled"},
                "LifecycleConfiguration": {"Rules": [{"Id": "expire-build-artifacts", "Status": "Enabled", "ExpirationInDays": 90}]},
            }, "Metadata": {"checkov": {"skip": [{"id": "CKV_AWS_18", "comment": "transient pipeline artifacts; the pipeline's execution history is the audit trail"}]}}},
            "PipelineArtifactsPolicy": {"Type": "AWS::S3::BucketPolicy", "Properties": {"Bucket": ref("PipelineArtifacts"), "PolicyDocument": {
                "Version": "2012-10-17", "Statement": [{"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                                                        "Resource": [artifact_arn, sub("${PipelineArtifacts.Arn}/*")],
                                                        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}}},
            **{logical_id: image_repository(name) for logical_id, name in IMAGE_REPOSITORIES.items()},
            "BuildRole": codebuild_role,
            "Build": {"Type": "AWS::CodeBuild::Project", "Properties": {
                "Description": "tests, template checks, images, deploy, pipeline upsert",
                "ServiceRole": getatt("BuildRole", "Arn"),
                "EncryptionKey": ref("KmsKeyArn"),
                "Artifacts": {"Type": "CODEPIPELINE"},
                "Source": {"Type": "CODEPIPELINE", "BuildSpec": "buildspec.yml"},
                "TimeoutInMinutes": 120,
                "Environment": {"Type": "LINUX_CONTAINER", "ComputeType": "BUILD_GENERAL1_LARGE", "Image": "aws/codebuild/standard:7.0",
                                "PrivilegedMode": True},  # docker build of the serving and processing images
            }},
            "PipelineRole": pipeline_role,
            "Pipeline": {"Type": "AWS::CodePipeline::Pipeline", "Properties": {
                "RoleArn": getatt("PipelineRole", "Arn"),
                "PipelineType": "V2",
                "ArtifactStore": {"Type": "S3", "Location": ref("PipelineArtifacts"), "EncryptionKey": {"Id": ref("KmsKeyArn"), "Type": "KMS"}},
                "Stages": [
                    {"Name": "Source", "Actions": [{"Name": "Source", "ActionTypeId": {"Category": "Source", "Owner": "AWS", "Provider": "CodeStarSourceConnection", "Version": "1"},
                                                    "Configuration": {"ConnectionArn": ref("ConnectionArn"), "FullRepositoryId": ref("RepositoryId"), "BranchName": ref("BranchName"),
                                                                      "OutputArtifactFormat": "CODEBUILD_CLONE_REF"},
                                                    "OutputArtifacts": [{"Name": "Source"}]}]},
                    {"Name": "BuildTestDeploy", "Actions": [{"Name": "BuildTestDeploy", "ActionTypeId": {"Category": "Build", "Owner": "AWS", "Provider": "CodeBuild", "Version": "1"},
                                                             "Configuration": {"ProjectName": ref("Build")}, "InputArtifacts": [{"Name": "Source"}]}]},
                ],
            }},
        },
        "Outputs": {"PipelineName": {"Value": ref("Pipeline")}, "BuildProject": {"Value": ref("Build")}},
    }


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:
        return True


def render(template: dict) -> str:
    header = "# Generated by `clip-api infra render` from infra/templates.py and configs/models/: do not edit by hand.\n"
    return header + yaml.dump(template, Dumper=_NoAliases, sort_keys=False, width=140)


def templates(configs: list[ModelConfig] | None = None) -> dict[str, dict]:
    configs = load_all_model_configs() if configs is None else configs
    return {"bootstrap.yaml": bootstrap_template(), "serving.yaml": serving_template(configs), "cicd.yaml": cicd_template()}


def write_all(directory: Path = INFRA_DIR) -> list[Path]:
    paths = []
    for name, template in templates().items():
        (directory / name).write_text(render(template))
        paths.append(directory / name)
    return paths
