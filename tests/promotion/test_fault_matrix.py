"""Faults injected at each step of a promotion (v1 serving, v2 approved), run in moto's Step Functions engine.

After every run the invariant holds: the serving pointer names an existing, InService endpoint of an
approved version; nothing that serves was deleted; the promotion lock is free; exactly one SNS
message says what happened. The README's promotion section lists this matrix.

Faults are injected into moto's backends (the AWS side of each call), so the workflow meets them as it
would meet a service error: moto names them differently from Step Functions in AWS, so these runs
exercise the Catch paths; the Retry error names are held to AWS's by tests/infra/test_templates.py.
"""

from __future__ import annotations

import pytest
from moto.core.exceptions import JsonRESTError

from clip_core.names import POINTER_TABLE
from promotion import lock
from tests.promotion.conftest import leave_new_endpoints

V = "clip-tiny-v{}".format
ROLLED_BACK = ("FAILED", V(1), {V(1)}, "clip-embedding-api promotion rolled back")
PROMOTED = ("SUCCEEDED", V(2), {V(1), V(2)}, "clip-embedding-api promotion succeeded")
NEEDS_A_PERSON = ("FAILED", V(2), {V(1), V(2)}, "clip-embedding-api promotion needs a person")
NOT_STARTED = ("FAILED", V(1), {V(1)}, "clip-embedding-api promotion could not start")


def fail(monkeypatch, target: str, method: str, when=lambda *args, **kwargs: True, error: str = "InternalFailure"):
    """Make a moto backend method raise a service error whenever `when(*args, **kwargs)` holds."""
    import importlib

    module, cls = target.rsplit(".", 1)
    backend = getattr(importlib.import_module(module), cls)
    original = getattr(backend, method)

    def failing(self, *args, **kwargs):
        if when(*args, **kwargs):
            raise JsonRESTError(error, f"injected fault in {method}")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(backend, method, failing)


SAGEMAKER, DYNAMODB, CLOUDWATCH = "moto.sagemaker.models.SageMakerModelBackend", "moto.dynamodb.models.DynamoDBBackend", "moto.cloudwatch.models.CloudWatchBackend"


def names_v2(*args, **kwargs) -> bool:
    """The call concerns the new version (its model, config, endpoint or alarms)."""
    return any(V(2) in str(value) for value in [*args, *kwargs.values()])


def pointer_put_naming(endpoint: str):
    def when(*args, **kwargs) -> bool:
        item = kwargs.get("item") or (args[1] if len(args) > 1 else {})
        return kwargs.get("table_name", args[0] if args else "") == POINTER_TABLE and item.get("endpoint_name", {}).get("S") == endpoint
    return when


def stuck(status: str):
    return lambda monkeypatch, world: leave_new_endpoints(monkeypatch, status)


# step, fault, injection(monkeypatch, world) -> optional `during` callback, expected outcome
MATRIX = [
    ("CreateModel", "AWS error", lambda m, w: fail(m, SAGEMAKER, "create_model", names_v2), ROLLED_BACK),
    ("CreateEndpointConfig", "AWS error", lambda m, w: fail(m, SAGEMAKER, "create_endpoint_config", names_v2), ROLLED_BACK),
    ("CreateEndpoint", "AWS error", lambda m, w: fail(m, SAGEMAKER, "create_endpoint", names_v2), ROLLED_BACK),
    ("DescribeEndpoint", "AWS error", lambda m, w: fail(m, SAGEMAKER, "describe_endpoint", names_v2), ROLLED_BACK),
    ("DescribeEndpoint", "endpoint stuck in Creating", stuck("Creating"), ROLLED_BACK),
    ("DescribeEndpoint", "endpoint Failed", stuck("Failed"), ROLLED_BACK),
    ("SwitchTraffic", "AWS error", lambda m, w: fail(m, DYNAMODB, "put_item", pointer_put_naming(V(2))), ROLLED_BACK),
    ("PutAlarm", "AWS error", lambda m, w: fail(m, CLOUDWATCH, "put_metric_alarm", names_v2), ROLLED_BACK),
    ("CheckTraffic", "no invocations reported", "no-traffic", ROLLED_BACK),
    ("CheckAlarms", "AWS error", lambda m, w: fail(m, CLOUDWATCH, "get_alarms_by_alarm_names", names_v2), ROLLED_BACK),
    ("CheckAlarms", "alarm fires during the bake", lambda m, w: w.alarm_fires_after_the_switch(V(2)), ROLLED_BACK),
    ("RecordLive", "AWS error", lambda m, w: fail(m, SAGEMAKER, "update_model_package",
                                                  lambda *a, **k: "live" in str(k.get("customer_metadata_properties", ""))), PROMOTED),
    ("Plan", "Lambda crash after taking the lock", "crash:plan", NOT_STARTED),
    ("SmokeTest", "Lambda crash", "crash:smoke", ROLLED_BACK),
    ("RestorePrevious", "AWS error after an alarm", lambda m, w: (fail(m, DYNAMODB, "put_item", pointer_put_naming(V(1))), w.alarm_fires_after_the_switch(V(2)))[1],
     NEEDS_A_PERSON),
]


@pytest.mark.parametrize("step, fault, inject, expected", MATRIX, ids=[f"{step}: {fault}" for step, fault, _, _ in MATRIX])
def test_the_invariant_holds_whatever_fails(world, monkeypatch, step, fault, inject, expected):
    first = world.register_version()
    assert world.promote(first)["status"] == "SUCCEEDED"
    world.notifications()
    second = world.register_version()
    scripted = isinstance(inject, str)
    during = None if scripted else inject(monkeypatch, world)
    crash = inject.split(":", 1)[1] if scripted and inject.startswith("crash:") else None
    result = world.promote(second, during=during, traffic=inject != "no-traffic", crash=crash)
    status, serving, endpoints, subject = expected
    assert step in result["history"], result["history"]
    assert result["status"] == status, result
    if expected is PROMOTED:  # the fault did happen: the workflow recorded it and went on
        assert result["output"]["record_error"]["Error"], result["output"]
    # the serving pointer names an existing, InService endpoint of an approved version
    pointer = world.pointer()
    assert pointer.endpoint_name == serving
    monkeypatch.undo()  # read the end state without the fault
    assert world.sagemaker.describe_endpoint(EndpointName=pointer.endpoint_name)["EndpointStatus"] == "InService"
    # one of the versions this test approved, never one the workflow rejected
    assert pointer.package_arn in (first, second)
    assert world.sagemaker.describe_model_package(ModelPackageName=pointer.package_arn)["ModelApprovalStatus"] == "Approved"
    assert world.endpoints() == endpoints
    holder = lock.read_holder(world.dynamodb, POINTER_TABLE, "clip-tiny")
    notes = world.notifications()
    assert [n["subject"] for n in notes] == [subject], notes
    if crash == "plan":  # the crashed planner's lock outlives it, but not its execution: the next approval is not held up
        assert holder is not None and lock.execution_ended(world.sfn, holder.owner)
        third = world.register_version()
        again = world.promote(third)
        assert again["status"] == "SUCCEEDED" and "WaitForLock" not in again["history"], again
        assert world.serving_endpoint() == V(3)
        holder = lock.read_holder(world.dynamodb, POINTER_TABLE, "clip-tiny")
    assert holder is None
