"""The CloudFormation service role that `clip-api deploy` passes on every stack call.

CloudFormation acts with this role, not with the caller's credentials: CodeBuild's role needs only
`iam:PassRole` on it, not the power to create roles, keys, buckets and functions itself.

The actions are what CloudFormation's resource handlers declare they call (the `handlers`
permissions of the resource provider schemas, which cfn-lint ships; a test checks this list
against them), each scoped to this project's names. Handler permissions of features the templates
do not use (VPC-attached Lambdas, Kinesis streaming of DynamoDB, S3 Tables, ...) are left out and
listed in `UNUSED_HANDLER_PERMISSIONS` with the reason.
"""

from __future__ import annotations

from clip_core.names import PROJECT


def _arn(service: str, resource: str, region: bool = True, account: bool = True) -> dict:
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:{service}:{'${AWS::Region}' if region else ''}:{'${AWS::AccountId}' if account else ''}:{resource}"}


PROJECT_KEY = {"Fn::GetAtt": ["Key", "Arn"]}  # the bootstrap's own key: the role lives in the same stack
# The only managed policy any of the project's roles attaches (API Gateway's logging role).
ATTACHABLE_POLICIES = [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"}]

# service -> (actions, resources). Names CloudFormation generates are <stack>-<logical id>-<suffix>,
# and both stacks are named clip-embedding-api-*, so every generated name starts with the prefix.
SCOPED_ACTIONS: dict[str, tuple[list[str], list]] = {
    "apigateway": (["apigateway:GET", "apigateway:POST", "apigateway:PUT", "apigateway:PATCH", "apigateway:DELETE", "apigateway:UpdateRestApiPolicy"],
                   [_arn("apigateway", "/restapis", account=False), _arn("apigateway", "/restapis/*", account=False),
                    _arn("apigateway", "/apikeys", account=False), _arn("apigateway", "/apikeys/*", account=False),
                    _arn("apigateway", "/usageplans", account=False), _arn("apigateway", "/usageplans/*", account=False),
                    _arn("apigateway", "/account", account=False), _arn("apigateway", "/tags/*", account=False)]),
    "cloudwatch": (["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms", "cloudwatch:DescribeAlarms", "cloudwatch:ListTagsForResource",
                    "cloudwatch:TagResource", "cloudwatch:UntagResource"], [_arn("cloudwatch", f"alarm:{PROJECT}-*")]),
    "dynamodb": (["dynamodb:CreateTable", "dynamodb:DeleteTable", "dynamodb:DescribeTable", "dynamodb:UpdateTable", "dynamodb:DescribeTimeToLive",
                  "dynamodb:UpdateTimeToLive", "dynamodb:DescribeContinuousBackups", "dynamodb:UpdateContinuousBackups",
                  "dynamodb:DescribeContributorInsights", "dynamodb:UpdateContributorInsights", "dynamodb:ListTagsOfResource",
                  "dynamodb:TagResource", "dynamodb:UntagResource", "dynamodb:GetResourcePolicy", "dynamodb:PutResourcePolicy",
                  "dynamodb:DeleteResourcePolicy", "dynamodb:DescribeImport", "dynamodb:DescribeKinesisStreamingDestination"],
                 [_arn("dynamodb", f"table/{PROJECT}-*")]),
    "events": (["events:PutRule", "events:DeleteRule", "events:DescribeRule", "events:PutTargets", "events:RemoveTargets", "events:ListTargetsByRule",
                "events:ListTagsForResource", "events:TagResource", "events:UntagResource"], [_arn("events", f"rule/{PROJECT}-*")]),
    "iam": (["iam:CreateRole", "iam:DeleteRole", "iam:GetRole", "iam:UpdateRole", "iam:UpdateRoleDescription", "iam:UpdateAssumeRolePolicy",
             "iam:PutRolePolicy", "iam:GetRolePolicy", "iam:DeleteRolePolicy", "iam:ListRolePolicies", "iam:ListAttachedRolePolicies",
             "iam:TagRole", "iam:UntagRole"],
            [_arn("iam", f"role/{PROJECT}-*", region=False)]),
    "kms": (["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy", "kms:GetKeyRotationStatus", "kms:EnableKeyRotation", "kms:ListResourceTags",
             "kms:TagResource", "kms:UntagResource", "kms:UpdateKeyDescription", "kms:EnableKey", "kms:CreateGrant", "kms:RevokeGrant",
             "kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"], [PROJECT_KEY]),
    "kms-alias": (["kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"], [_arn("kms", f"alias/{PROJECT}"), PROJECT_KEY]),
    "lambda": (["lambda:CreateFunction", "lambda:DeleteFunction", "lambda:GetFunction", "lambda:UpdateFunctionCode", "lambda:UpdateFunctionConfiguration",
                "lambda:PutFunctionConcurrency", "lambda:DeleteFunctionConcurrency", "lambda:GetFunctionCodeSigningConfig",
                "lambda:GetFunctionRecursionConfig", "lambda:PutFunctionRecursionConfig", "lambda:GetRuntimeManagementConfig",
                "lambda:PutRuntimeManagementConfig", "lambda:GetFunctionScalingConfig", "lambda:TagResource", "lambda:UntagResource",
                "lambda:PublishVersion", "lambda:AddPermission", "lambda:RemovePermission", "lambda:GetPolicy"],
               [_arn("lambda", f"function:{PROJECT}-*")]),
    "logs": (["logs:CreateLogGroup", "logs:DeleteLogGroup", "logs:PutRetentionPolicy", "logs:DeleteRetentionPolicy", "logs:AssociateKmsKey",
              "logs:DisassociateKmsKey", "logs:TagResource", "logs:UntagResource", "logs:ListTagsForResource", "logs:GetDataProtectionPolicy"],
             [_arn("logs", f"log-group:{PROJECT}-*"), _arn("logs", f"log-group:{PROJECT}-*:*")]),
    "s3": (["s3:CreateBucket", "s3:DeleteBucket", "s3:ListBucket", "s3:GetBucketAcl", "s3:PutBucketAcl", "s3:GetBucketCORS", "s3:GetBucketLogging",
            "s3:PutBucketLogging", "s3:GetBucketNotification", "s3:GetBucketObjectLockConfiguration", "s3:GetBucketOwnershipControls",
            "s3:PutBucketOwnershipControls", "s3:GetBucketPublicAccessBlock", "s3:PutBucketPublicAccessBlock", "s3:GetBucketTagging",
            "s3:PutBucketTagging", "s3:GetBucketVersioning", "s3:PutBucketVersioning", "s3:GetBucketWebsite", "s3:GetEncryptionConfiguration",
            "s3:PutEncryptionConfiguration", "s3:GetLifecycleConfiguration", "s3:PutLifecycleConfiguration", "s3:GetReplicationConfiguration",
            "s3:GetAccelerateConfiguration", "s3:GetAnalyticsConfiguration", "s3:GetIntelligentTieringConfiguration",
            "s3:GetInventoryConfiguration", "s3:GetMetricsConfiguration", "s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy",
            "s3:ListTagsForResource", "s3:TagResource", "s3:UntagResource", "s3:GetObject", "s3:GetObjectVersion"],
           [{"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::{PROJECT}-*"}]),
    "sagemaker": (["sagemaker:CreateModelPackageGroup", "sagemaker:DeleteModelPackageGroup", "sagemaker:DescribeModelPackageGroup",
                   "sagemaker:GetModelPackageGroupPolicy", "sagemaker:PutModelPackageGroupPolicy", "sagemaker:DeleteModelPackageGroupPolicy",
                   "sagemaker:AddTags", "sagemaker:DeleteTags", "sagemaker:ListTags"], [_arn("sagemaker", "model-package-group/clip-*")]),
    "sns": (["sns:CreateTopic", "sns:DeleteTopic", "sns:GetTopicAttributes", "sns:SetTopicAttributes", "sns:ListSubscriptionsByTopic",
             "sns:ListTagsForResource", "sns:TagResource", "sns:UntagResource", "sns:Subscribe",
             "sns:GetDataProtectionPolicy", "sns:PutDataProtectionPolicy"], [_arn("sns", f"{PROJECT}-*")]),
    "states": (["states:CreateStateMachine", "states:DeleteStateMachine", "states:DescribeStateMachine", "states:UpdateStateMachine",
                "states:ListTagsForResource", "states:TagResource", "states:UntagResource"], [_arn("states", f"stateMachine:{PROJECT}-*")]),
}

# Actions that have no resource-level permissions (the Service Authorization Reference lists no resource type for them).
UNSCOPED_ACTIONS = ["logs:DescribeLogGroups", "logs:DescribeResourcePolicies", "logs:CreateLogDelivery", "logs:PutResourcePolicy",
                    "logs:DeleteResourcePolicy", "logs:DescribeIndexPolicies", "kms:ListAliases", "sns:Unsubscribe",
                    "sns:GetSubscriptionAttributes", "sns:SetSubscriptionAttributes"]
# The services CloudFormation hands this project's roles to, when it creates their functions, state machines, rules and stages.
PASSED_TO = ["lambda.amazonaws.com", "states.amazonaws.com", "events.amazonaws.com", "apigateway.amazonaws.com"]

UNUSED_HANDLER_PERMISSIONS: dict[str, str] = {
    "ec2:": "no Lambda is attached to a VPC",
    "elasticfilesystem:": "no Lambda mounts EFS",
    "s3files:": "no Lambda mounts S3 files",
    "s3tables:": "no bucket is an S3 table bucket",
    "kinesis:": "no DynamoDB table streams to Kinesis",
    "firehose:": "no log group delivers to Firehose",
    "iam:CreateServiceLinkedRole": "no resource here needs a service-linked role created by CloudFormation",
    "iam:PutRolePermissionsBoundary": "no role has a permissions boundary",
    "iam:DeleteRolePermissionsBoundary": "no role has a permissions boundary",
    "kms:CreateKey": "the key is created once, with the stack, by the administrator who bootstraps the account (the role does not exist yet)",
    "kms:ScheduleKeyDeletion": "the key is never deleted by a deploy: its deletion is a person's decision",
    "kms:DisableKey": "the key is never disabled by a deploy",
    "kms:DisableKeyRotation": "rotation stays enabled",
    "lambda:AssociateRuntimeAlias": "no runtime aliases",
    "lambda:PassCapacityProvider": "no Lambda capacity providers",
    "lambda:PutFunctionScalingConfig": "no scaling configs",
    "lambda:GetLayerVersion": "no layers",
    "lambda:GetCodeSigningConfig": "no code signing",
    "lambda:PutFunctionCodeSigningConfig": "no code signing",
    "lambda:DeleteFunctionCodeSigningConfig": "no code signing",
    "dynamodb:ImportTable": "the table is never created from an S3 import",
    "dynamodb:CreateTableReplica": "no global tables",
    "dynamodb:AssociateTableReplica": "no global tables",
    "dynamodb:EnableKinesisStreamingDestination": "no Kinesis streaming",
    "dynamodb:DisableKinesisStreamingDestination": "no Kinesis streaming",
    "dynamodb:UpdateKinesisStreamingDestination": "no Kinesis streaming",
    "dynamodb:Scan": "the handler reads items only when importing or replicating: neither is used",
    "dynamodb:Query": "the handler reads items only when importing or replicating: neither is used",
    "dynamodb:GetItem": "the handler reads items only when importing or replicating: neither is used",
    "dynamodb:PutItem": "CloudFormation never writes the serving pointer: only the promotion workflow does",
    "dynamodb:UpdateItem": "CloudFormation never writes the serving pointer: only the promotion workflow does",
    "dynamodb:DeleteItem": "CloudFormation never writes the serving pointer: only the promotion workflow does",
    "dynamodb:BatchWriteItem": "CloudFormation never writes the serving pointer: only the promotion workflow does",
    "logs:CreateLogStream": "CloudFormation writes no log events",
    "logs:PutLogEvents": "CloudFormation writes no log events",
    "logs:DescribeLogStreams": "CloudFormation writes no log events",
    "logs:DeleteDataProtectionPolicy": "no data protection policies on log groups",
    "logs:PutDataProtectionPolicy": "no data protection policies on log groups",
    "logs:PutIndexPolicy": "no field index policies",
    "logs:DeleteIndexPolicy": "no field index policies",
    "logs:PutBearerTokenAuthentication": "no bearer-token log ingestion",
    "logs:PutLogGroupDeletionProtection": "no deletion protection setting on log groups",
    "s3:REST.PUT.OBJECT": "not an IAM action (an S3 server-access-log operation name in the Logs schema)",
    "s3:GetObjectMetadata": "not an IAM action (DynamoDB's import handler lists it); imports are not used",
    "s3:DeleteObject": "buckets are never emptied by a deploy: registered artifacts must outlive stack changes",
    "s3:PutObjectAcl": "no object ACLs",
    "s3:PutObjectLockConfiguration": "no object lock configuration is set by the bootstrap",
    "s3:PutBucketObjectLockConfiguration": "no object lock configuration is set by the bootstrap",
    "s3:PutBucketCORS": "no CORS on buckets",
    "s3:DeleteBucketCors": "no CORS on buckets",
    "s3:PutBucketNotification": "no bucket notifications",
    "s3:PutBucketWebsite": "no website buckets",
    "s3:DeleteBucketWebsite": "no website buckets",
    "s3:PutBucketReplication": "no replication",
    "s3:PutReplicationConfiguration": "no replication",
    "s3:DeleteBucketReplication": "no replication",
    "s3:PutAccelerateConfiguration": "no transfer acceleration",
    "s3:PutAnalyticsConfiguration": "no analytics configurations",
    "s3:DeleteBucketAnalyticsConfiguration": "no analytics configurations",
    "s3:PutIntelligentTieringConfiguration": "no intelligent tiering",
    "s3:PutInventoryConfiguration": "no inventory configurations",
    "s3:PutMetricsConfiguration": "no request metrics configurations",
    "s3:DeleteBucketMetricsConfiguration": "no request metrics configurations",
    "s3:DeleteBucketEncryption": "encryption is never removed",
    "s3:DeleteBucketLifecycle": "lifecycle rules are replaced, never removed",
    "s3:GetBucketAbac": "no attribute-based access control on buckets",
    "s3:PutBucketAbac": "no attribute-based access control on buckets",
    "s3:CreateBucketMetadataTableConfiguration": "no S3 metadata tables",
    "s3:GetBucketMetadataTableConfiguration": "no S3 metadata tables",
    "s3:DeleteBucketMetadataTableConfiguration": "no S3 metadata tables",
    "s3:UpdateBucketMetadataAnnotationTableConfiguration": "no S3 metadata tables",
    "s3:UpdateBucketMetadataInventoryTableConfiguration": "no S3 metadata tables",
    "s3:UpdateBucketMetadataJournalTableConfiguration": "no S3 metadata tables",
    "cloudtrail:": "no trails",
    "organizations:": "no organisation-level resources",
}


def deploy_role_statements() -> list[dict]:
    statements = [{"Sid": service.replace("-", "").capitalize() + "ResourcesOfThisProject", "Effect": "Allow", "Action": actions, "Resource": resources}
                  for service, (actions, resources) in SCOPED_ACTIONS.items()]
    statements.append({"Sid": "AttachOnlyTheProjectsManagedPolicies", "Effect": "Allow", "Action": ["iam:AttachRolePolicy", "iam:DetachRolePolicy"],
                       "Resource": _arn("iam", f"role/{PROJECT}-*", region=False), "Condition": {"ArnEquals": {"iam:PolicyARN": ATTACHABLE_POLICIES}}})
    # The role must not widen itself: a change to its own policy is an administrator's deploy.
    statements.append({"Sid": "NeverChangeItself", "Effect": "Deny",
                       "Action": ["iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:AttachRolePolicy", "iam:DetachRolePolicy",
                                  "iam:UpdateAssumeRolePolicy", "iam:DeleteRole", "iam:PutRolePermissionsBoundary", "iam:DeleteRolePermissionsBoundary"],
                       "Resource": _arn("iam", f"role/{PROJECT}-bootstrap-DeployRole-*", region=False)})
    statements.append({"Sid": "PassThisProjectsRoles", "Effect": "Allow", "Action": ["iam:PassRole"], "Resource": _arn("iam", f"role/{PROJECT}-*", region=False),
                       "Condition": {"StringEquals": {"iam:PassedToService": PASSED_TO}}})
    statements.append({"Sid": "NoResourceLevelPermissions", "Effect": "Allow", "Action": UNSCOPED_ACTIONS, "Resource": "*"})
    return statements
