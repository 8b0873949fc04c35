"""serving.yaml: the serving pointer table, the encrypted SNS topic, the model package groups, then the parts in
their own modules: SageMaker roles, the API Lambdas and the REST API, the promotion workflow."""

from __future__ import annotations

from clip_core.model_config import ModelConfig
from clip_core.names import POINTER_TABLE, PROJECT, TOPIC
from infra.stacks.cfn import RETAINED, getatt, model_logical_id, ref, sub
from infra.stacks.serving_api import STAGE, api_functions, rest_api
from infra.stacks.serving_promotion import promotion_workflow
from infra.stacks.serving_sagemaker_roles import sagemaker_roles
from promotion.pointer import KEY as POINTER_KEY


def serving_template(models: list[ModelConfig], include_demo: bool = False) -> dict:
    """The serving stack for `models` (demo-only models only when asked: local mode serves them)."""
    served = [m for m in models if include_demo or not m.demo_only]
    groups = [m.registry.model_package_group for m in served]
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"{PROJECT} serving: REST API, per-model Lambdas, promotion workflow, registry groups, notifications",
        "Parameters": _parameters(),
        "Conditions": {
            "HasEmail": {"Fn::Not": [{"Fn::Equals": [ref("NotificationEmail"), ""]}]},
            "HasCors": {"Fn::Not": [{"Fn::Equals": [ref("CorsAllowOrigin"), ""]}]},
            "NoCors": {"Fn::Equals": [ref("CorsAllowOrigin"), ""]},
        },
        "Resources": {
            **_pointer_table_and_topic(),
            **{f"{model_logical_id(model)}PackageGroup": _package_group(model) for model in served},
            **sagemaker_roles(groups),
            **api_functions(served),
            **promotion_workflow(groups),
            **rest_api(served),
        },
        "Outputs": {
            "ApiUrl": {"Value": sub(f"https://${{Api}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{STAGE}")},
            "ApiKeyId": {"Value": ref("ApiKey")},
            "TopicArn": {"Value": ref("Topic")},
            "StateMachineArn": {"Value": ref("PromotionStateMachine")},
            "ModelExecutionRoleArn": {"Value": getatt("ModelExecutionRole", "Arn")},
            "PipelineRoleArn": {"Value": getatt("PipelineRole", "Arn")},
            "TransformRoleArn": {"Value": getatt("TransformRole", "Arn")},
            "EmbedDatasetPolicyArn": {"Value": ref("EmbedDatasetPolicy")},
        },
    }


def _pointer_table_and_topic() -> dict:
    return {
        # Which endpoint serves each model: written only by the promotion workflow (see promotion/pointer.py).
        "ServingPointerTable": {
            "Type": "AWS::DynamoDB::Table", **RETAINED,
            "Properties": {
                "TableName": POINTER_TABLE, "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": POINTER_KEY, "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": POINTER_KEY, "KeyType": "HASH"}],
                "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": ref("KmsKeyArn")},
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            },
        },
        "Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": TOPIC, "KmsMasterKeyId": ref("KmsKeyArn")}},
        "TopicEmail": {"Type": "AWS::SNS::Subscription", "Condition": "HasEmail",
                       "Properties": {"TopicArn": ref("Topic"), "Protocol": "email", "Endpoint": ref("NotificationEmail")}},
    }


def _package_group(model: ModelConfig) -> dict:
    return {"Type": "AWS::SageMaker::ModelPackageGroup",
            "Properties": {"ModelPackageGroupName": model.registry.model_package_group, "ModelPackageGroupDescription": model.description}}


def _parameters() -> dict:
    return {
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
