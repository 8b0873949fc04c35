"""The real-account acceptance run (`make aws-acceptance`): what the README's "Deploy to AWS" says, done.

Deploys the bootstrap and serving stacks with the tiny model, runs it through the real SageMaker
Pipeline, approves it, waits for the promotion, compares the stable URL's embeddings with the same
artifact served locally, approves a second version while a client keeps sending requests (no
request may fail), then tears everything down and lists what is left. It prints how long it took
and what it cost.

The project's resource names are fixed (`clip-embedding-api-*`), so the run refuses an account and
region where a deployment already exists rather than touch it. Its offline twin is local mode;
`tests/infra/test_acceptance.py` runs the preflight, teardown and leftover listing under moto.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from clip_core.limits import ServingLimits
from clip_core.names import BOOTSTRAP_STACK, CICD_STACK, POINTER_TABLE, PROJECT, SERVING_STACK, artifact_bucket_name
from infra.deploy import stack_outputs

MODEL_ID = "clip-tiny"
MIN_COSINE = 0.99999

# us-east-1 list prices (USD, late 2026), for the estimate printed at the end.
PRICE_PROCESSING_PER_HOUR = {"ml.m5.xlarge": 0.23, "ml.m5.2xlarge": 0.461}
PRICE_SERVERLESS_PER_GB_SECOND = 0.00002
PRICE_SERVERLESS_PROVISIONED_PER_GB_HOUR = 0.0504
PRICE_PER_MILLION_API_REQUESTS = 3.5
PRICE_LAMBDA_PER_GB_SECOND = 0.0000166667


@dataclass
class Usage:
    """What the run consumed, as far as it can count it."""

    processing_seconds: float = 0.0
    processing_instance: str = "ml.m5.2xlarge"
    serverless_gb_seconds: float = 0.0
    requests: int = 0
    lambda_gb_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def estimate_cost_usd(usage: Usage) -> float:
    """Pipeline processing time, serverless inference, API requests and Lambda; storage and logs are cents and left out."""
    return (usage.processing_seconds / 3600 * PRICE_PROCESSING_PER_HOUR[usage.processing_instance]
            + usage.serverless_gb_seconds * PRICE_SERVERLESS_PER_GB_SECOND
            + usage.requests / 1e6 * PRICE_PER_MILLION_API_REQUESTS
            + usage.lambda_gb_seconds * PRICE_LAMBDA_PER_GB_SECOND)


def preflight(session) -> list[str]:
    """Reasons not to run here; empty when the account and region hold no clip-embedding-api deployment."""
    problems = []
    cloudformation = session.client("cloudformation")
    for name in (BOOTSTRAP_STACK, SERVING_STACK, CICD_STACK):
        if _stack_exists(cloudformation, name):
            problems.append(f"stack {name} exists: this run deploys and deletes its own, so it needs a region without one")
    if _table_exists(session.client("dynamodb"), POINTER_TABLE):
        problems.append(f"DynamoDB table {POINTER_TABLE} exists (retained by an earlier deployment): delete it or use another region")
    groups = [g["ModelPackageGroupName"] for g in session.client("sagemaker").list_model_package_groups(NameContains=MODEL_ID)["ModelPackageGroupSummaryList"]]
    if MODEL_ID in groups:
        problems.append(f"model package group {MODEL_ID} exists: this run registers into it and deletes it")
    endpoints = [e["EndpointName"] for e in session.client("sagemaker").list_endpoints(NameContains="clip-")["Endpoints"]]
    if endpoints:
        problems.append(f"SageMaker endpoints {endpoints} exist: their names would collide with this run's")
    return problems


def _stack_exists(cloudformation, name: str) -> bool:
    try:
        return cloudformation.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"] != "DELETE_COMPLETE"
    except ClientError:
        return False


def _table_exists(dynamodb, name: str) -> bool:
    try:
        dynamodb.describe_table(TableName=name)
        return True
    except ClientError:
        return False


def leftovers(session) -> list[str]:
    """Everything of this project's that still exists in the account and region."""
    found = []
    cloudformation, sagemaker = session.client("cloudformation"), session.client("sagemaker")
    found += [f"stack {name}" for name in (BOOTSTRAP_STACK, SERVING_STACK, CICD_STACK) if _stack_exists(cloudformation, name)]
    found += [f"endpoint {e['EndpointName']}" for e in sagemaker.list_endpoints(NameContains="clip-")["Endpoints"]]
    found += [f"endpoint config {c['EndpointConfigName']}" for c in sagemaker.list_endpoint_configs(NameContains="clip-")["EndpointConfigs"]]
    found += [f"model {m['ModelName']}" for m in sagemaker.list_models(NameContains="clip-")["Models"]]
    found += [f"pipeline {p['PipelineName']}" for p in sagemaker.list_pipelines(PipelineNamePrefix=PROJECT)["PipelineSummaries"]]
    found += [f"model package group {g['ModelPackageGroupName']}" for g in sagemaker.list_model_package_groups(NameContains="clip-")["ModelPackageGroupSummaryList"]]
    found += [f"alarm {a['AlarmName']}" for a in session.client("cloudwatch").describe_alarms(AlarmNamePrefix="clip-")["MetricAlarms"]]
    if _table_exists(session.client("dynamodb"), POINTER_TABLE):
        found.append(f"DynamoDB table {POINTER_TABLE}")
    found += [f"log group {g['logGroupName']}" for prefix in (f"/aws/lambda/{PROJECT}", "/aws/sagemaker/Endpoints/clip-")
              for g in session.client("logs").describe_log_groups(logGroupNamePrefix=prefix).get("logGroups", [])]
    found += [f"bucket {b['Name']}" for b in session.client("s3").list_buckets()["Buckets"] if b["Name"].startswith(PROJECT)]
    return found


def teardown(session, log=print) -> list[str]:
    """Delete what the run made, in dependency order; return what is left (should be nothing)."""
    sagemaker, cloudformation = session.client("sagemaker"), session.client("cloudformation")
    for endpoint in sagemaker.list_endpoints(NameContains="clip-")["Endpoints"]:
        _quietly(sagemaker.delete_endpoint, EndpointName=endpoint["EndpointName"])
    for config in sagemaker.list_endpoint_configs(NameContains="clip-")["EndpointConfigs"]:
        _quietly(sagemaker.delete_endpoint_config, EndpointConfigName=config["EndpointConfigName"])
    for model in sagemaker.list_models(NameContains="clip-")["Models"]:
        _quietly(sagemaker.delete_model, ModelName=model["ModelName"])
    for pipeline in sagemaker.list_pipelines(PipelineNamePrefix=PROJECT)["PipelineSummaries"]:
        _quietly(sagemaker.delete_pipeline, PipelineName=pipeline["PipelineName"], ClientRequestToken=uuid.uuid4().hex)
    for group in sagemaker.list_model_package_groups(NameContains="clip-")["ModelPackageGroupSummaryList"]:
        for package in sagemaker.list_model_packages(ModelPackageGroupName=group["ModelPackageGroupName"])["ModelPackageSummaryList"]:
            _quietly(sagemaker.delete_model_package, ModelPackageName=package["ModelPackageArn"])
    alarms = [a["AlarmName"] for a in session.client("cloudwatch").describe_alarms(AlarmNamePrefix="clip-")["MetricAlarms"]]
    if alarms:
        session.client("cloudwatch").delete_alarms(AlarmNames=alarms)
    log(f"- deleting stack {SERVING_STACK}")
    _delete_stack(cloudformation, SERVING_STACK)
    _quietly(session.client("dynamodb").delete_table, TableName=POINTER_TABLE)  # retained by the stack on purpose
    _quietly(sagemaker.delete_model_package_group, ModelPackageGroupName=MODEL_ID)  # if the pipeline upsert, not the stack, made it
    account = session.client("sts").get_caller_identity()["Account"]
    for bucket in (artifact_bucket_name(account, session.region_name), *[b["Name"] for b in session.client("s3").list_buckets()["Buckets"]
                                                               if b["Name"].startswith(f"{BOOTSTRAP_STACK}-accesslogbucket")]):
        _empty_versioned_bucket(session.client("s3"), bucket)
    log(f"- deleting stack {BOOTSTRAP_STACK} (the KMS key is scheduled for deletion by CloudFormation)")
    _delete_stack(cloudformation, BOOTSTRAP_STACK)
    for prefix in (f"/aws/lambda/{PROJECT}", "/aws/sagemaker/Endpoints/clip-"):
        for group in session.client("logs").describe_log_groups(logGroupNamePrefix=prefix).get("logGroups", []):
            _quietly(session.client("logs").delete_log_group, logGroupName=group["logGroupName"])
    return leftovers(session)


def _quietly(call, **kwargs) -> None:
    try:
        call(**kwargs)
    except ClientError:
        pass


def _delete_stack(cloudformation, name: str) -> None:
    if not _stack_exists(cloudformation, name):
        return
    cloudformation.delete_stack(StackName=name)
    cloudformation.get_waiter("stack_delete_complete").wait(StackName=name, WaiterConfig={"Delay": 15, "MaxAttempts": 120})


def _empty_versioned_bucket(s3, bucket: str) -> None:
    try:
        pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
        for page in pages:
            objects = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            if objects:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
    except ClientError:
        pass


# ---- the steps that need the real services ---------------------------------------------------


def run_pipeline_and_wait(session, parameters: dict, usage: Usage, timeout_s: float = 3600, log=print) -> str:
    """Start the tiny model's pipeline, wait for it, return the registered package's ARN."""
    from clip_core.model_config import load_model_config
    from infra.deploy import pipeline_settings_from_stacks
    from pipeline.aws import start_pipeline

    sagemaker = session.client("sagemaker")
    started = time.monotonic()
    execution = start_pipeline(load_model_config(MODEL_ID), pipeline_settings_from_stacks(session), parameters)
    log(f"- pipeline execution {execution}")
    while (status := sagemaker.describe_pipeline_execution(PipelineExecutionArn=execution)["PipelineExecutionStatus"]) in ("Executing", "Stopping"):
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"pipeline execution {execution} did not finish in {timeout_s:.0f} s")
        time.sleep(30)
    usage.processing_seconds += time.monotonic() - started  # an upper bound: the jobs' own time is shorter
    if status != "Succeeded":
        raise RuntimeError(f"pipeline execution {execution} ended {status}")
    packages = sagemaker.list_model_packages(ModelPackageGroupName=MODEL_ID, SortBy="CreationTime", SortOrder="Descending")["ModelPackageSummaryList"]
    return packages[0]["ModelPackageArn"]


def approve_and_wait(session, package_arn: str, timeout_s: float = 3600, log=print) -> dict:
    """Approve in the registry (the EventBridge rule starts the workflow) and wait for that execution to end."""
    sfn = session.client("stepfunctions")
    machine = stack_outputs(session.client("cloudformation"), SERVING_STACK)["StateMachineArn"]
    before = {e["executionArn"] for e in sfn.list_executions(stateMachineArn=machine)["executions"]}
    session.client("sagemaker").update_model_package(ModelPackageArn=package_arn, ModelApprovalStatus="Approved",
                                                     ApprovalDescription="aws-acceptance run")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for execution in sfn.list_executions(stateMachineArn=machine)["executions"]:
            if execution["executionArn"] in before:
                continue
            described = sfn.describe_execution(executionArn=execution["executionArn"])
            if package_arn not in described.get("input", ""):
                continue
            if described["status"] != "RUNNING":
                log(f"- promotion {described['status']}: {execution['executionArn']}")
                return described
        time.sleep(20)
    raise TimeoutError(f"no promotion of {package_arn} finished in {timeout_s:.0f} s")


def api_client(session):
    outputs = stack_outputs(session.client("cloudformation"), SERVING_STACK)
    key = session.client("apigateway").get_api_key(apiKey=outputs["ApiKeyId"], includeValue=True)["value"]

    def post(route: str, payload: dict) -> tuple[int, dict, object]:
        request = urllib.request.Request(f"{outputs['ApiUrl']}/{route}", data=json.dumps(payload).encode(), method="POST",
                                         headers={"Content-Type": "application/json", "x-api-key": key})
        try:
            with urllib.request.urlopen(request, timeout=35) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.loads(error.read() or b"null")

    return post


def seed_requests() -> list[dict]:
    from PIL import Image

    image = io.BytesIO()
    Image.new("RGB", (320, 240), (200, 30, 60)).save(image, format="JPEG")
    encoded = base64.b64encode(image.getvalue()).decode()
    return [{"text": "a photo of a dog"}, {"texts": ["a dog", "a cat"]}, {"image": encoded}, {"images": [encoded, encoded]}]


def local_embeddings(session, package_arn: str, requests: list[dict]) -> list:
    """The same artifact, served by the same code on this machine: what the stable URL must return."""
    import tempfile
    from pathlib import Path

    from inference_code.artifact import extracted_artifact
    from inference_code.contract import parse_request
    from inference_code.embedder import ClipEmbedder

    container = session.client("sagemaker").describe_model_package(ModelPackageName=package_arn)["InferenceSpecification"]["Containers"][0]
    bucket, key = container["ModelDataUrl"][len("s3://"):].split("/", 1)
    with tempfile.TemporaryDirectory(prefix="clip-acceptance-") as workdir:
        archive = Path(workdir) / "model.tar.gz"
        session.client("s3").download_file(bucket, key, str(archive))
        with extracted_artifact(archive) as directory:
            embedder = ClipEmbedder(directory)
            answers = []
            for payload in requests:
                parsed = parse_request(json.dumps(payload).encode(), "application/json", ServingLimits())
                vectors = embedder.embed_texts(list(parsed.items)).vectors if parsed.kind == "text" else embedder.embed_image_bytes(list(parsed.items))
                answers.append(vectors.tolist() if parsed.batch else vectors[0].tolist())
            return answers


def cosine_floor(served, reference) -> float:
    import numpy as np

    a, b = np.atleast_2d(np.asarray(served, dtype=np.float64)), np.atleast_2d(np.asarray(reference, dtype=np.float64))
    return float(np.min(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


class SteadyClient:
    """Sends requests to the stable URL until stopped and counts the answers: the no-downtime check."""

    def __init__(self, post, route: str):
        self.post, self.route = post, route
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, _, _ = self.post(self.route, {"text": "a photo of a dog"})
            except OSError:
                status = 0
            self.statuses.append(status)
            self._stop.wait(0.5)

    def __enter__(self) -> "SteadyClient":
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    @property
    def failures(self) -> list[int]:
        return [s for s in self.statuses if s != 200]
