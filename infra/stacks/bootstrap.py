"""bootstrap.yaml: the KMS key, the encrypted artifact bucket (Lambda code, model artifacts, pipeline runs) and its
access-log bucket, CloudFormation's deploy role, and API Gateway's account-level logging role."""

from __future__ import annotations

from clip_core.names import PROJECT, artifact_bucket_name
from infra.deploy_role import deploy_role_statements
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
from infra.stacks.iam import policy, policy_document, role, trust_policy


def bootstrap_template() -> dict:
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"{PROJECT} bootstrap: KMS key, the encrypted artifact bucket, CloudFormation's deploy role, "
                       "API Gateway's logging role",
        "Parameters": {
            "ManageApiGatewayAccount": {
                "Type": "String", "AllowedValues": ["true", "false"], "Default": "true",
                "Description": "set API Gateway's account-level CloudWatch role for this region "
                               "(false: the account already has one; clip-api deploy decides)"},
        },
        "Conditions": {"ManagesApiGatewayAccount": {"Fn::Equals": [ref("ManageApiGatewayAccount"), "true"]}},
        "Resources": {
            # CloudFormation's service role: every later stack create/update acts with it (clip-api deploy passes it).
            "DeployRole": role("cloudformation.amazonaws.com", [policy(f"deploy-{PROJECT}", deploy_role_statements())],
                               f"CloudFormation: deploy the {PROJECT} stacks", this_account_only=True),
            **_api_gateway_logging(),
            **_key(),
            **_buckets(),
        },
        "Outputs": {
            "ArtifactBucketName": {"Value": ref("ArtifactBucket"), "Export": {"Name": f"{PROJECT}-artifact-bucket"}},
            "KmsKeyArn": {"Value": getatt("Key", "Arn"), "Export": {"Name": f"{PROJECT}-kms-key-arn"}},
            "DeployRoleArn": {"Value": getatt("DeployRole", "Arn"), "Export": {"Name": f"{PROJECT}-deploy-role-arn"}},
            # Compared by clip-api deploy with the account's setting (a generated name is truncated: never guess it).
            "ApiGatewayCloudWatchRoleArn": {"Condition": "ManagesApiGatewayAccount", "Value": getatt("ApiGatewayCloudWatchRole", "Arn")},
        },
    }


def _api_gateway_logging() -> dict:
    """Stage logging needs the account-level CloudWatch role of API Gateway (one per account and region).
    Retained: the account setting keeps pointing at the role whatever happens to this stack."""
    push_to_logs = arn("iam", "policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs", region="", account="aws")
    return {
        "ApiGatewayCloudWatchRole": {
            "Type": "AWS::IAM::Role", "Condition": "ManagesApiGatewayAccount", **RETAINED,
            "Properties": {
                "Description": "API Gateway: push access and execution logs to CloudWatch Logs (account setting)",
                "AssumeRolePolicyDocument": trust_policy("apigateway.amazonaws.com", this_account_only=True),
                "ManagedPolicyArns": [push_to_logs],
            },
        },
        "ApiGatewayAccount": {"Type": "AWS::ApiGateway::Account", "Condition": "ManagesApiGatewayAccount", **RETAINED,
                              "Properties": {"CloudWatchRoleArn": getatt("ApiGatewayCloudWatchRole", "Arn")}},
    }


def _key() -> dict:
    this_account = {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}}
    log_groups = {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": arn("logs", "log-group:*")}}
    statements = [
        {"Sid": "AccountAdministers", "Effect": "Allow", "Principal": {"AWS": arn("iam", "root", region="")},
         "Action": "kms:*", "Resource": "*"},
        # Confused-deputy protection: the services may use the key only on this account's behalf.
        {"Sid": "ServicesUseTheKey", "Effect": "Allow",
         "Principal": {"Service": ["sns.amazonaws.com", "events.amazonaws.com", "cloudwatch.amazonaws.com", "states.amazonaws.com"]},
         "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*", "Condition": this_account},
        # Encrypted log groups: CloudWatch Logs uses the key only for this account's log groups.
        {"Sid": "CloudWatchLogsEncryptsLogGroups", "Effect": "Allow", "Principal": {"Service": sub("logs.${AWS::Region}.amazonaws.com")},
         "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"], "Resource": "*",
         "Condition": log_groups},
    ]
    return {
        "Key": {"Type": "AWS::KMS::Key", "Properties": {
            "Description": f"{PROJECT}: artifacts, Lambda environments, SNS", "EnableKeyRotation": True,
            "KeyPolicy": policy_document(statements)}},
        "KeyAlias": {"Type": "AWS::KMS::Alias", "Properties": {"AliasName": f"alias/{PROJECT}", "TargetKeyId": ref("Key")}},
    }


def _buckets() -> dict:
    access_logs = {
        "Type": "AWS::S3::Bucket",
        "Properties": {
            "BucketEncryption": {"ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
            "PublicAccessBlockConfiguration": public_access_block(),
            "VersioningConfiguration": {"Status": "Enabled"},
            "LifecycleConfiguration": {"Rules": [{"Id": "expire-logs", "Status": "Enabled", "ExpirationInDays": 365}]},
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerPreferred"}]},
        },
    }
    # Registered model.tar.gz files live under pipelines/ and must outlive their model package:
    # nothing current ever expires; only overwritten or deleted versions and broken uploads do.
    keep_current = {"Id": "expire-replaced-versions", "Status": "Enabled", "Prefix": "",
                    "NoncurrentVersionExpiration": {"NoncurrentDays": 30}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}
    artifacts = {
        "Type": "AWS::S3::Bucket",
        "Properties": {
            "BucketName": sub(artifact_bucket_name(ACCOUNT, REGION)),
            "BucketEncryption": kms_bucket_encryption(getatt("Key", "Arn")),
            "PublicAccessBlockConfiguration": public_access_block(),
            "VersioningConfiguration": {"Status": "Enabled"},
            "LoggingConfiguration": {"DestinationBucketName": ref("AccessLogBucket"), "LogFilePrefix": "artifacts/"},
            "LifecycleConfiguration": {"Rules": [keep_current]},
        },
    }
    return {
        "AccessLogBucket": checkov_skip(access_logs, ("CKV_AWS_18", "this is the access-log bucket itself"),
                                        ("CKV_AWS_145", "S3 server access logging cannot deliver to SSE-KMS buckets")),
        "ArtifactBucket": artifacts,
        "ArtifactBucketPolicy": secure_transport_only("ArtifactBucket"),
    }
