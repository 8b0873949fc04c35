"""The offline parts of the real-account acceptance run (infra/acceptance.py), under moto."""

from __future__ import annotations

import boto3
import pytest

from infra import acceptance
from clip_core.names import BOOTSTRAP_STACK, SERVING_STACK
from infra.deploy import deploy


@pytest.fixture
def deployed(aws_env, moto_aws, monkeypatch):
    """moto 5.2.5 has no DeleteModelPackageGroup: a stand-in that removes the group from its backend, as SageMaker does."""
    from moto.core.responses import ActionResult
    from moto.sagemaker.responses import SageMakerResponse

    def delete_model_package_group(self):
        self.sagemaker_backend.model_package_groups.pop(self._get_param("ModelPackageGroupName"))
        return ActionResult({})

    monkeypatch.setattr(SageMakerResponse, "delete_model_package_group", delete_model_package_group, raising=False)
    from clip_core.model_config import load_model_config

    session = boto3.Session(region_name="us-east-1")
    tiny = load_model_config("clip-tiny").model_copy(update={"demo_only": False})
    assert acceptance.preflight(session) == []  # an empty account is a place to run
    deploy(session, ("clip-tiny",), vendor_dependencies=False, log=lambda _: None, configs=[tiny])
    return session


def test_preflight_refuses_an_account_that_already_holds_a_deployment(deployed):
    problems = acceptance.preflight(deployed)
    assert any(BOOTSTRAP_STACK in p for p in problems) and any(SERVING_STACK in p for p in problems)


def test_teardown_leaves_nothing_of_a_run_behind(deployed):
    from clip_core.names import POINTER_TABLE
    from promotion.pointer import ServingPointer

    sagemaker = deployed.client("sagemaker")
    role = deployed.client("iam").list_roles()["Roles"][0]["Arn"]
    sagemaker.create_model(ModelName="clip-tiny-v1", ExecutionRoleArn=role, PrimaryContainer={"Image": "img", "ModelDataUrl": "s3://b/m.tar.gz"})
    sagemaker.create_endpoint_config(EndpointConfigName="clip-tiny-v1", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "clip-tiny-v1", "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1}}])
    sagemaker.create_endpoint(EndpointName="clip-tiny-v1", EndpointConfigName="clip-tiny-v1")
    deployed.client("dynamodb").put_item(TableName=POINTER_TABLE, Item=ServingPointer("clip-tiny", "clip-tiny-v1", 1).to_item())
    deployed.client("cloudwatch").put_metric_alarm(AlarmName="clip-tiny-v1-throttles", MetricName="Throttles", Namespace="ClipEmbeddingApi",
                                                   Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold")
    before = acceptance.leftovers(deployed)
    for expected in ("endpoint clip-tiny-v1", "model clip-tiny-v1", f"stack {SERVING_STACK}", "pipeline clip-embedding-api-clip-tiny",
                     f"DynamoDB table {POINTER_TABLE}", "alarm clip-tiny-v1-throttles"):
        assert expected in before, before
    assert acceptance.teardown(deployed, log=lambda _: None) == []


def test_the_cost_estimate_adds_what_was_used():
    assert acceptance.estimate_cost_usd(acceptance.Usage()) == 0
    hour_of_processing = acceptance.Usage(processing_seconds=3600, processing_instance="ml.m5.2xlarge")
    assert acceptance.estimate_cost_usd(hour_of_processing) == pytest.approx(acceptance.PRICE_PROCESSING_PER_HOUR["ml.m5.2xlarge"])
    more = acceptance.Usage(processing_seconds=3600, requests=1_000_000, serverless_gb_seconds=1000)
    assert acceptance.estimate_cost_usd(more) > acceptance.estimate_cost_usd(hour_of_processing)


def test_the_steady_client_counts_every_failed_answer():
    answers = iter([200, 200, 503, 200, 0])

    def post(route, payload):
        status = next(answers, 200)
        if status == 0:
            raise ConnectionResetError("reset")
        return status, {}, [1.0]

    with acceptance.SteadyClient(post, "tiny") as client:
        import time

        deadline = time.monotonic() + 10
        while len(client.statuses) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert client.failures == [503, 0]


def test_cosine_floor_is_the_worst_item():
    assert acceptance.cosine_floor([[1, 0], [0, 1]], [[1, 0], [0, 1]]) == pytest.approx(1.0)
    assert acceptance.cosine_floor([[1, 0], [0, 1]], [[1, 0], [1, 0]]) == pytest.approx(0.0)
    assert acceptance.cosine_floor([0.6, 0.8], [0.6, 0.8]) == pytest.approx(1.0)
