"""The one shape of the serving stack's Lambda functions: code from the zip `clip-api deploy` uploads, a
KMS-encrypted environment, X-Ray tracing, and checkov's justified skips."""

from __future__ import annotations

from clip_core.names import METRICS_NAMESPACE, METRICS_NAMESPACE_ENV
from infra.stacks.cfn import checkov_skip, getatt, ref

PYTHON_RUNTIME = "python3.12"
NO_RESERVED_CONCURRENCY = ("no reserved concurrency by default: new accounts' quotas cannot hold it; "
                           "a model config may set api.reserved_concurrency")
NO_DLQ = "invoked synchronously (API Gateway, Step Functions): errors return to the caller, a DLQ would never receive them"
NO_VPC = "calls only AWS service APIs; no private network resources to reach, so no VPC"


def lambda_function(name: str, description: str, handler: str, role_name: str, environment: dict, memory: int = 512, timeout: int = 30,
                    concurrency: int | None = None) -> dict:
    """The function `name`, run by the role of logical id `role_name`; a reserved `concurrency` only when given."""
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
        reasons.append(("CKV_AWS_115", NO_RESERVED_CONCURRENCY))
    resource["Properties"]["FunctionName"] = name
    return checkov_skip(resource, *reasons, ("CKV_AWS_116", NO_DLQ), ("CKV_AWS_117", NO_VPC))
