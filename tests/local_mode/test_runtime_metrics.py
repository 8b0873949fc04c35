"""The local SageMaker runtime reports invocations as SageMaker does, so a local promotion's bake sees its traffic."""

from __future__ import annotations

import datetime as dt

import boto3

from local_mode.runtime_router import SageMakerMetrics


def test_each_invocation_is_reported_with_its_outcome(aws_env, moto_aws):
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    metrics = SageMakerMetrics(cloudwatch)
    metrics.invocation("clip-tiny-v2", 200, 0.05)
    metrics.invocation("clip-tiny-v2", 400, 0.01)
    metrics.invocation("clip-tiny-v2", 503, 0.02)
    now = dt.datetime.now(dt.timezone.utc)

    def total(name: str, endpoint: str = "clip-tiny-v2") -> float:
        points = cloudwatch.get_metric_statistics(
            Namespace="AWS/SageMaker", MetricName=name, StartTime=now - dt.timedelta(minutes=5), EndTime=now + dt.timedelta(minutes=1),
            Period=60, Statistics=["Sum"],
            Dimensions=[{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": "AllTraffic"}])["Datapoints"]
        return sum(p["Sum"] for p in points)

    assert total("Invocations") == 3 and total("Invocation4XXErrors") == 1 and total("Invocation5XXErrors") == 1
    assert total("Invocations", "clip-tiny-v1") == 0  # per endpoint, as the alarms select
