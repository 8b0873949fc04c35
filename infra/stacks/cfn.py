"""CloudFormation building blocks the stacks share: intrinsic functions, ARNs, logical ids, checkov's justified
skips, and the settings every bucket of the project has."""

from __future__ import annotations

from clip_core.model_config import ModelConfig

REGION = "${AWS::Region}"
ACCOUNT = "${AWS::AccountId}"
RETAINED = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}


def sub(text: str) -> dict:
    return {"Fn::Sub": text}


def ref(name: str) -> dict:
    return {"Ref": name}


def getatt(resource: str, attribute: str) -> dict:
    return {"Fn::GetAtt": [resource, attribute]}


def arn(service: str, resource: str, *, region: str = REGION, account: str = ACCOUNT) -> dict:
    """An ARN in the stack's partition, by default in its region and account; `resource` may hold ${...} too."""
    return sub(f"arn:${{AWS::Partition}}:{service}:{region}:{account}:{resource}")


def model_logical_id(model: ModelConfig) -> str:
    """The prefix of a model's resources' logical ids: clip-vit-b-32 -> ClipVitB32."""
    return "".join(part.capitalize() for part in model.model_id.replace("-", " ").split())


def checkov_skip(resource: dict, *reasons: tuple[str, str]) -> dict:
    """Attach justified checkov suppressions, (rule, why) pairs, to a resource: the only writer of that metadata."""
    resource.setdefault("Metadata", {})["checkov"] = {"skip": [{"id": rule, "comment": why} for rule, why in reasons]}
    return resource


def public_access_block() -> dict:
    return {"BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}


def kms_bucket_encryption(key_arn: dict) -> dict:
    default = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}
    return {"ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": default, "BucketKeyEnabled": True}]}


def secure_transport_only(bucket: str) -> dict:
    """The bucket policy that refuses plain-HTTP requests to the bucket `bucket` (a logical id) and its objects."""
    deny = {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": [getatt(bucket, "Arn"), sub(f"${{{bucket}.Arn}}/*")], "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    return {"Type": "AWS::S3::BucketPolicy",
            "Properties": {"Bucket": ref(bucket), "PolicyDocument": {"Version": "2012-10-17", "Statement": [deny]}}}


def encrypted_log_group(key_arn: dict) -> dict:
    return {"Type": "AWS::Logs::LogGroup", "Properties": {"RetentionInDays": 365, "KmsKeyId": key_arn}}
