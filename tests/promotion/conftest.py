"""A moto account holding what the promotion workflow touches, driven by local mode's promotion driver.

moto executes the state machine (execution enabled); its Lambda has no Docker and so never runs
our code: local_mode.promotion.PromotionDriver runs the planner (against the same moto account)
and queues its answer and the smoke test's for the Lambda tasks. Here: the account, fault
injection (a crashing function, endpoints that never come up, alarms) and what the tests read back.
"""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from clip_core.names import POINTER_TABLE
from local_mode.promotion import PromotionDriver
from promotion.pointer import KEY, ServingPointer, read_pointer
from promotion.workflow_asl import ASL_PATH, substitute

ACCOUNT, REGION = "123456789012", "us-east-1"
EVENT_TEMPLATE = json.loads((Path(__file__).parent.parent / "events" / "model_package_approved.json").read_text())
API_FUNCTION = "clip-embedding-api-clip-tiny"
VALIDATED_DIGEST = "ab" * 32  # what the pipeline's gate records for the container to check


SPACE_A, SPACE_B = "aaaaaaaaaaaa", "bbbbbbbbbbbb"  # two embedding spaces (inference_code.manifest.embedding_space)


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


CRASH = {"__function_error__": "Runtime.ExitError"}  # a queued result that makes the function fail (see `world`)
PASSED_SMOKE_TEST = {"passed": True, "reason": "4 requests matched", "min_cosine": 1.0}


def _simple_lambda_that_can_crash():
    """moto's Docker-less Lambda always succeeds; a queued CRASH makes it answer as a crashed function
    does (X-Amz-Function-Error: Unhandled, an errorType payload), which Step Functions fails the task on."""
    from moto.awslambda_simple.models import LambdaSimpleBackend

    original = LambdaSimpleBackend.invoke

    def invoke(self, function_name, qualifier, body, headers, response_headers):
        answer = original(self, function_name, qualifier, body, headers, response_headers)
        try:
            parsed = json.loads(answer)
        except ValueError:
            return answer
        if isinstance(parsed, dict) and "__function_error__" in parsed:
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": parsed["__function_error__"], "errorMessage": "injected: the function crashed"}).encode()
        return answer

    return LambdaSimpleBackend, invoke


def queue_lambda_result(result: dict) -> None:
    from moto.moto_api._internal.models import moto_api_backend

    moto_api_backend.set_lambda_simple_result(json.dumps(result), ACCOUNT, REGION)


@dataclass
class PromotionWorld:
    sfn: object
    sagemaker: object
    lambda_client: object
    cloudwatch: object
    sqs: object
    state_machine_arn: str
    queue_url: str
    role_arn: str
    topic_arn: str
    dynamodb: object
    driver: PromotionDriver

    def register_version(self, approve: bool = True, space: str = SPACE_A, adopt_space: str | None = None) -> str:
        """A package as the pipeline registers it (its gate's `space` recorded); approved in the registry,
        with `adopt_space` recorded at approval when given."""
        arn = self.sagemaker.create_model_package(
            ModelPackageGroupName="clip-tiny",
            ModelPackageDescription="test",
            InferenceSpecification={
                "Containers": [{"Image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/clip-embedding-api-serve@sha256:" + "ab" * 32,
                                "ModelDataUrl": "s3://clip-test-bucket/run/artifact/model.tar.gz",
                                "Environment": {"CLIP_API_MANIFEST_SHA256": VALIDATED_DIGEST}}],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": "s3://clip-test-bucket/run/evaluation/model_quality.json"}}},
            ModelApprovalStatus="PendingManualApproval",
            CustomerMetadataProperties={"space": space},
        )["ModelPackageArn"]
        if approve:
            time.sleep(0.01)  # an approval comes after the registration (moto's timestamps are in milliseconds)
            recorded = {"CustomerMetadataProperties": {"adopt_space": adopt_space}} if adopt_space else {}
            self.sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved", **recorded)
        return arn

    def event_for(self, package_arn: str) -> dict:
        event = json.loads(json.dumps(EVENT_TEMPLATE))
        event["id"] = str(uuid.uuid4())
        event["detail"]["ModelPackageArn"] = package_arn
        event["detail"]["ModelPackageVersion"] = int(package_arn.rsplit("/", 1)[1])
        return event

    def execution_arn(self, name: str) -> str:
        return self.driver.execution_arn(name)

    def plan(self, event: dict, execution_name: str = "planned-by-a-test") -> dict:
        return self.driver.plan(event, execution_name)

    def promote(self, package_arn: str, smoke: dict | None = None, during=None, after_plan=None, timeout_s: float = 120, traffic: bool = True,
                crash: str | None = None) -> dict:
        """Plan with the real planner, queue its result (and the smoke test's), run the workflow to the end.

        `after_plan` runs between planning and the execution (what another actor changes meanwhile);
        `during` runs on every poll of the running execution; `crash` ("plan" or "smoke"): that
        Lambda task's function crashes instead of answering (the planner has already taken the lock)."""
        event = self.event_for(package_arn)
        name = f"promote-{uuid.uuid4().hex[:12]}"
        plan = self.driver.prepare(event, name, lambda _plan: smoke if smoke is not None else PASSED_SMOKE_TEST,
                                   answer=lambda task, result: CRASH if task == crash else result)
        if after_plan is not None:
            after_plan()
        return self.run(event, name, plan, during, timeout_s, traffic)

    def run(self, event: dict, name: str, plan: dict, during=None, timeout_s: float = 120, traffic: bool = True) -> dict:
        """Run the workflow for `event` as execution `name` (its Lambda results already queued) to the end.

        `traffic`: report invocations of the new endpoint as SageMaker would for the smoke test's requests
        (moto's endpoints run nothing and publish no metrics)."""
        reports_traffic = traffic and plan.get("action") == "promote"
        ended = self.driver.run(event, name, plan, during, started=(lambda: self.report_invocations(plan["endpoint_name"], 4)) if reports_traffic else None,
                                timeout_s=timeout_s)
        return {"status": ended.status, "plan": plan, "output": ended.output, "error": ended.error, "history": self.driver.history(ended.execution_arn)}

    def pointer(self) -> ServingPointer:
        return read_pointer(self.dynamodb, POINTER_TABLE, "clip-tiny", consistent=True)

    def alarm_fires_after_the_switch(self, endpoint: str, then=None):
        """A `during` callback: once `endpoint`'s alarms exist (they are put after the switch), set its 5xx
        alarm to ALARM and run `then`, once. `callback.fired` says whether it happened."""
        def callback():
            if not callback.fired and f"{endpoint}-invocation-5xx" in self.alarms():
                self.cloudwatch.set_alarm_state(AlarmName=f"{endpoint}-invocation-5xx", StateValue="ALARM", StateReason="injected: 5xx errors")
                if then is not None:
                    then()
                callback.fired = True

        callback.fired = False
        return callback

    def report_invocations(self, endpoint: str, count: int) -> None:
        self.cloudwatch.put_metric_data(Namespace="AWS/SageMaker", MetricData=[{
            "MetricName": "Invocations", "Value": count, "Unit": "None",
            "Dimensions": [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": "AllTraffic"}]}])

    def set_pointer(self, pointer: ServingPointer) -> None:
        self.dynamodb.put_item(TableName=POINTER_TABLE, Item=pointer.to_item())

    def serving_endpoint(self) -> str:
        return self.pointer().endpoint_name

    def endpoints(self) -> set[str]:
        return {e["EndpointName"] for e in self.sagemaker.list_endpoints()["Endpoints"]}

    def alarms(self) -> set[str]:
        return {a["AlarmName"] for a in self.cloudwatch.describe_alarms()["MetricAlarms"]}

    def notifications(self) -> list[dict]:
        messages = []
        while True:
            batch = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                return messages
            for message in batch:
                body = json.loads(message["Body"])
                messages.append({"subject": body.get("Subject"), "message": body["Message"]})
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def world(aws_env, monkeypatch):
    from moto import mock_aws

    backend, invoke = _simple_lambda_that_can_crash()
    monkeypatch.setattr(backend, "invoke", invoke)

    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}):
        iam = boto3.client("iam", region_name=REGION)
        trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
        role_arn = iam.create_role(RoleName="clip-test-role", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
        lambda_client = boto3.client("lambda", region_name=REGION)
        arns = {}
        for name, env in ((API_FUNCTION, {"MODEL_ID": "clip-tiny", "SERVING_POINTER_TABLE": POINTER_TABLE}), ("clip-promotion-planner", {}), ("clip-smoke-test", {})):
            arns[name] = lambda_client.create_function(FunctionName=name, Runtime="python3.12", Role=role_arn, Handler="app.handler",
                                                       Code={"ZipFile": _zip()}, Environment={"Variables": env})["FunctionArn"]
        sns, sqs = boto3.client("sns", region_name=REGION), boto3.client("sqs", region_name=REGION)
        topic_arn = sns.create_topic(Name="clip-promotions")["TopicArn"]
        queue_url = sqs.create_queue(QueueName="clip-promotions-inbox")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        sagemaker.create_model_package_group(ModelPackageGroupName="clip-tiny")
        sfn = boto3.client("stepfunctions", region_name=REGION)
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(TableName=POINTER_TABLE, BillingMode="PAY_PER_REQUEST", AttributeDefinitions=[{"AttributeName": KEY, "AttributeType": "S"}],
                              KeySchema=[{"AttributeName": KEY, "KeyType": "HASH"}])
        definition = substitute(ASL_PATH.read_text(), {"Partition": "aws", "PlanFunctionArn": arns["clip-promotion-planner"], "SmokeTestFunctionArn": arns["clip-smoke-test"], "TopicArn": topic_arn})
        machine = sfn.create_state_machine(name="clip-promotion", definition=definition, roleArn=role_arn)["stateMachineArn"]
        planner_env = {"MODEL_EXECUTION_ROLE_ARN": role_arn, "TOPIC_ARN": topic_arn, "SERVING_POINTER_TABLE": POINTER_TABLE, "POLL_SECONDS": "0",
                       "MAX_POLLS": "3", "BAKE_SECONDS": "2", "SMOKE_MIN_COSINE": "0.999"}
        driver = PromotionDriver(sagemaker, dynamodb, sfn, machine, queue_lambda_result, lambda: planner_env)
        yield PromotionWorld(sfn, sagemaker, lambda_client, boto3.client("cloudwatch", region_name=REGION), sqs, machine, queue_url, role_arn, topic_arn,
                             dynamodb, driver)


def leave_new_endpoints(monkeypatch, status: str) -> None:
    """Make SageMaker leave new endpoints in `status` (moto's are InService at once)."""
    from moto.sagemaker import models

    original = models.SageMakerModelBackend.create_endpoint

    def create_endpoint(self, *args, **kwargs):
        endpoint = original(self, *args, **kwargs)
        endpoint.endpoint_status = status
        return endpoint

    monkeypatch.setattr(models.SageMakerModelBackend, "create_endpoint", create_endpoint)


@pytest.fixture
def endpoints_end_up(monkeypatch):
    return lambda status: leave_new_endpoints(monkeypatch, status)
