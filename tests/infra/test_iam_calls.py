"""Every AWS call the Lambdas make, recorded under moto with a botocore event hook, is allowed by the
rendered policy of the function's own role (moto accepts any call; a real account evaluates IAM).

The handlers run as Lambda runs them: the real entry point, the environment CloudFormation gives the
function (resolved from the rendered template), clients made by boto3's default session."""

from __future__ import annotations

import copy
import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from infra import iam_policy as ip
from infra.iam_policy import ACCOUNT, REGION, Deployment
from tests.infra.conftest import change_templates


@dataclass
class Context:
    function_name: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = "req-1"

    @property
    def invoked_function_arn(self) -> str:
        return ip.arn("lambda", f"function:{self.function_name}")

    def get_remaining_time_in_millis(self) -> int:
        return 25_000


def function_of(deployment: Deployment, handler: str, **env):
    """(physical name, role key, resolved environment) of the rendered function with `handler` (and env values)."""
    for stack, logical, resource in deployment.resources_of_type("AWS::Lambda::Function"):
        props = resource["Properties"]
        variables = props.get("Environment", {}).get("Variables", {})
        if props["Handler"] == handler and all(variables.get(k) == v for k, v in env.items()):
            return stack.physical[logical][0], deployment.role_for_arn(props["Role"]).key, variables
    raise LookupError(handler)


@pytest.fixture
def recorder(aws_env):
    """moto, and a recorder on boto3's default session (Lambda code makes its clients there)."""
    from moto import mock_aws

    with mock_aws():
        boto3.setup_default_session(region_name=REGION)
        recorder = ip.CallRecorder().attach(boto3.DEFAULT_SESSION.events)
        yield recorder
        recorder.detach(boto3.DEFAULT_SESSION.events)
    boto3.DEFAULT_SESSION = None


def create_tables(deployment: Deployment) -> None:
    """The DynamoDB tables of the rendered templates, as CloudFormation would create them."""
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    for stack, logical, resource in deployment.resources_of_type("AWS::DynamoDB::Table"):
        props = resource["Properties"]
        dynamodb.create_table(TableName=stack.physical[logical][0], KeySchema=props["KeySchema"],
                              AttributeDefinitions=props["AttributeDefinitions"], BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"))


def set_pointer(table: str, model_id: str, endpoint: str, version: int, package_arn: str) -> None:
    from promotion.pointer import ServingPointer

    boto3.client("dynamodb", region_name=REGION).put_item(TableName=table, Item=ServingPointer(model_id, endpoint, version, package_arn).to_item())


def denied_calls(deployment: Deployment, role: str, calls) -> list[str]:
    out = []
    for call in calls:
        for request in ip.call_requests(call, deployment):
            if not deployment.allowed(role, request.action, request.resource, request.context):
                out.append(f"{call.service}.{call.operation}: {request}")
    return sorted(set(out))


# ------------------------------------------------------------------------------------------ planner


def run_planner(deployment: Deployment, recorder, monkeypatch) -> tuple[str, list]:
    from clip_core.model_config import load_model_config

    name, role, env = function_of(deployment, "clip_lambdas.promotion_planner.app.handler")
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    config = load_model_config("clip-vit-b-32")
    group = config.registry.model_package_group
    create_tables(deployment)
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    sagemaker.create_model_package_group(ModelPackageGroupName=group)
    arns = []
    for _ in range(2):  # registered for approval, then approved in the registry, as the planner requires
        arns.append(sagemaker.create_model_package(
            ModelPackageGroupName=group, ModelApprovalStatus="PendingManualApproval",
            InferenceSpecification={"Containers": [{"Image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/clip-embedding-api-serve@sha256:" + "ab" * 32,
                                                    "ModelDataUrl": "s3://b/run/model.tar.gz", "Environment": {"CLIP_API_MANIFEST_SHA256": "ab" * 32}}],
                                    "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]},
            CustomerMetadataProperties={"space": "0123456789ab"},
        )["ModelPackageArn"])
        time.sleep(0.01)  # an approval comes after the registration (moto's timestamps are in milliseconds)
        sagemaker.update_model_package(ModelPackageArn=arns[-1], ModelApprovalStatus="Approved")
    from promotion.plan import resource_name

    set_pointer(env["SERVING_POINTER_TABLE"], config.model_id, resource_name(config.model_id, 1), 1, arns[0])
    event = json.loads((Path(__file__).parents[1] / "events" / "model_package_approved.json").read_text())
    event["detail"].update({"ModelPackageArn": arns[1], "ModelPackageGroupName": group, "ModelPackageVersion": 2, "ModelApprovalStatus": "Approved"})
    from promotion import lock

    # a lock left by an execution that crashed: the planner asks Step Functions whether it ended, then takes it over
    crashed = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:clip-embedding-api-promotion:crashed"
    lock.try_acquire(boto3.client("dynamodb", region_name=REGION), env["SERVING_POINTER_TABLE"], config.model_id, crashed, time.time(), time.time() + 3600)
    recorder.calls.clear()
    from clip_lambdas.promotion_planner import app

    execution = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:clip-embedding-api-promotion:check"
    plan = app.handler({"event": event, "execution_id": execution, "execution_start": "2026-11-29T12:00:00Z"}, Context(name))  # the Plan task's payload
    assert plan["action"] == "promote", plan
    return role, list(recorder.calls)


def test_the_planner_role_allows_every_call_the_planner_makes(deployment, recorder, monkeypatch):
    role, calls = run_planner(deployment, recorder, monkeypatch)
    assert {c.operation for c in calls} >= {"DescribeModelPackage", "DescribeExecution"}
    assert denied_calls(deployment, role, calls) == []


def test_planner_check_bites(rendered, recorder, monkeypatch):
    broken = copy.deepcopy(rendered)
    for pol in broken["serving.yaml"]["Resources"]["PlannerRole"]["Properties"]["Policies"]:
        for statement in pol["PolicyDocument"]["Statement"]:
            statement["Action"] = [a for a in ip._as_list(statement["Action"]) if a != "sagemaker:DescribeModelPackage"] or ["sagemaker:ListTags"]
    deployment = Deployment(broken)
    role, calls = run_planner(deployment, recorder, monkeypatch)
    assert any(d.startswith("sagemaker.DescribeModelPackage: sagemaker:DescribeModelPackage") for d in denied_calls(deployment, role, calls))


# ---------------------------------------------------------------------------------------- smoke test


def test_the_smoke_test_role_allows_every_call_the_smoke_test_makes(deployment, recorder, monkeypatch):
    name, role, env = function_of(deployment, "clip_lambdas.smoke_test.app.handler")
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    bucket = deployment.stacks["bootstrap"].outputs["ArtifactBucketName"]
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=bucket)
    key = "clip-embedding-api/pipelines/clip-vit-b-32/run/evaluation/smoke_test.json"
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({"format_version": 1, "cases": [{"request": {"text": "a"}, "expected": [1.0, 0.0]}]}))
    recorder.calls.clear()
    from clip_lambdas.smoke_test import app

    app.handler({"endpoint_name": "clip-vit-b-32-v2", "model_id": "clip-vit-b-32", "version": 2,
                 "smoke_test_uri": f"s3://{bucket}/{key}", "min_cosine": 0.999}, Context(name))
    operations = {c.operation for c in recorder.calls}
    assert {"GetObject", "InvokeEndpoint"} <= operations, operations
    assert denied_calls(deployment, role, recorder.calls) == []


# ------------------------------------------------------------------------------------------ API


def test_the_api_role_allows_every_call_the_api_makes(deployment, recorder, monkeypatch):
    from clip_core.model_config import load_model_config

    name, role, env = function_of(deployment, "clip_lambdas.api.app.handler", MODEL_ID="clip-vit-b-32")
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    create_tables(deployment)
    if "SERVING_POINTER_TABLE" in env:
        set_pointer(env["SERVING_POINTER_TABLE"], "clip-vit-b-32", "clip-vit-b-32-v2", 2, ip.arn("sagemaker", "model-package/clip-vit-b-32/2"))
    module = importlib.import_module("clip_lambdas.api.app")
    for attribute in ("runtime", "dynamodb", "lambda_client", "directory"):
        if hasattr(module.Clients, attribute):
            monkeypatch.setattr(module.Clients, attribute, None)
    if hasattr(module.Clients, "runtimes"):
        monkeypatch.setattr(module.Clients, "runtimes", {})
    from tests.lambda_api.conftest import api_event

    route = "/" + load_model_config("clip-vit-b-32").route
    recorder.calls.clear()
    module.handler(api_event(route, {"text": "a photo of a dog"}), Context(name))
    operations = {c.operation for c in recorder.calls}
    assert "InvokeEndpoint" in operations, operations
    assert denied_calls(deployment, role, recorder.calls) == []


def test_call_mapping_knows_encrypted_buckets_and_passed_roles(deployment):
    bucket = deployment.stacks["bootstrap"].outputs["ArtifactBucketName"]
    get = ip.Call("s3", "s3", "GetObject", {"Bucket": bucket, "Key": "k"})
    assert [r.action for r in ip.call_requests(get, deployment)] == ["s3:GetObject", "kms:Decrypt"]
    create = ip.Call("sagemaker", "sagemaker", "CreatePipeline", {"PipelineName": "clip-embedding-api-b32", "RoleArn": "arn:aws:iam::1:role/r"})
    requests = ip.call_requests(create, deployment)
    assert [(r.action, r.context) for r in requests] == [("sagemaker:CreatePipeline", {}),
                                                          ("iam:PassRole", {"iam:PassedToService": "sagemaker.amazonaws.com"})]
    with pytest.raises(LookupError):
        ip.call_requests(ip.Call("ec2", "ec2", "RunInstances", {}), deployment)


# ------------------------------------------------------------------- CI: clip-api deploy, pipelines


@pytest.fixture
def every_session_recorded(monkeypatch):
    """A recorder on every boto3 session made from now on (deploy, pipeline upsert and the SageMaker SDK make their own)."""
    recorder = ip.CallRecorder()
    original = boto3.session.Session.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        recorder.attach(self.events)

    monkeypatch.setattr(boto3.session.Session, "__init__", init)
    return recorder


def codebuild_environment(deployment: Deployment) -> dict:
    """What the deploy step of buildspec.yml sees: the project's variables (rendered) and what pre_build exports."""
    _, build = deployment.find("Build", stack="cicd")
    env = {v["Name"]: str(v["Value"]) for v in build["Properties"]["Environment"].get("EnvironmentVariables", [])}
    registry = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
    return {**env, "CLIP_API_ACCOUNT_ID": ACCOUNT, "CLIP_API_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
            "CLIP_API_SERVING_IMAGE": f"{registry}/clip-embedding-api-serve:abc1234", "CLIP_API_PROCESSING_IMAGE": f"{registry}/clip-embedding-api-build:abc1234"}


def test_the_codebuild_role_allows_every_call_of_deploy_and_pipeline_start(deployment, moto_aws, every_session_recorded, monkeypatch):
    """`clip-api deploy` and `clip-api pipeline start` as CodeBuild runs them, every call checked against the
    CodeBuild role; CloudFormation must act through a service role, which the caller may pass."""
    from clip_core.model_config import load_model_config
    from infra.deploy import deploy, pipeline_settings_from_stacks
    from pipeline.aws import start_pipeline

    monkeypatch.delenv("CLIP_API_BUCKET", raising=False)
    for key, value in codebuild_environment(deployment).items():
        monkeypatch.setenv(key, value)
    session = boto3.Session(region_name=REGION)
    # The administrator's first deploy (README "Deploy to AWS"): the bootstrap, and with it the deploy role, exist before CI runs.
    deploy(session, ("clip-vit-b-32",), vendor_dependencies=False, log=lambda _: None)
    every_session_recorded.calls.clear()
    change_templates(monkeypatch, "bootstrap.yaml", "serving.yaml", "cicd.yaml", mark=" (changed by a push)")
    deploy(session, ("clip-vit-b-32",), vendor_dependencies=False, log=lambda _: None)
    start_pipeline(load_model_config("clip-vit-b-32"), pipeline_settings_from_stacks(session))
    calls = every_session_recorded.calls
    operations = {c.operation for c in calls}
    assert {"UpdateStack", "UpdatePipeline", "StartPipelineExecution"} <= operations, operations
    # Without RoleARN CloudFormation creates every resource with CodeBuild's own rights (roles, keys, functions...).
    unrouted = [f"{c.operation} {c.params.get('StackName')} passes no CloudFormation service role (RoleARN)"
                for c in calls if c.operation in ("CreateStack", "UpdateStack", "CreateChangeSet") and not c.params.get("RoleARN")]
    problems = unrouted + denied_calls(deployment, deployment.role("cicd/BuildRole").key, calls)
    assert problems == [], "\n".join(problems)
