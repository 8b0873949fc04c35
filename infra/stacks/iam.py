"""IAM builders the stacks share: policy documents, statements, service roles, and the statements several roles
repeat. (infra/iam_policy.py evaluates the policies these build; infra/deploy_role.py writes CloudFormation's own.)"""

from __future__ import annotations

from clip_core.names import PROJECT
from infra.stacks.cfn import arn, ref


def policy_document(statements: list[dict]) -> dict:
    return {"Version": "2012-10-17", "Statement": statements}


def policy(name: str, statements: list[dict]) -> dict:
    return {"PolicyName": name, "PolicyDocument": policy_document(statements)}


def allow(actions: list[str], resources, sid: str | None = None) -> dict:
    statement = {"Effect": "Allow", "Action": actions, "Resource": resources}
    if sid:
        statement["Sid"] = sid
    return statement


def deny_everywhere(sid: str, actions: list[str], condition: dict) -> dict:
    """A guard rail: `actions` are refused on every resource when `condition` holds, whatever else allows them."""
    return {"Sid": sid, "Effect": "Deny", "Action": actions, "Resource": "*", "Condition": condition}


def when(statement: dict, condition: dict) -> dict:
    return {**statement, "Condition": condition}


def pass_role(role_arn, service: str) -> dict:
    """iam:PassRole on `role_arn`, only to `service`."""
    return when(allow(["iam:PassRole"], role_arn), {"StringEquals": {"iam:PassedToService": service}})


def trust_policy(service: str, *, this_account_only: bool = False) -> dict:
    """`service` may assume the role; with this_account_only, only on this account's behalf (confused deputy)."""
    statement = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    if this_account_only:
        statement["Condition"] = {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}}
    return policy_document([statement])


def role(service: str, policies: list[dict], description: str, *, this_account_only: bool = False) -> dict:
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "Description": description,
            "AssumeRolePolicyDocument": trust_policy(service, this_account_only=this_account_only),
            "Policies": policies,
        },
    }


LOGS_STATEMENT = allow(["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"], arn("logs", "log-group:/aws/*"))
XRAY_STATEMENT = allow(["xray:PutTraceSegments", "xray:PutTelemetryRecords"], "*", sid="XRayHasNoResourceLevelPermissions")
ECR_AUTH_STATEMENT = allow(["ecr:GetAuthorizationToken"], "*", sid="EcrAuthHasNoResourceLevelPermissions")
PUT_METRIC_DATA_STATEMENT = allow(["cloudwatch:PutMetricData"], "*", sid="PutMetricDataHasNoResourceLevelPermissions")
PULL_PROJECT_IMAGES_STATEMENT = allow(["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], arn("ecr", f"repository/{PROJECT}-*"))
