"""One promotion per model at a time: the lock's decisions as plain functions, its writes under moto, the workflow waiting in moto's engine."""

from __future__ import annotations

import time

import boto3
import pytest

from clip_core.names import POINTER_TABLE
from promotion import lock
from promotion.pointer import KEY
from tests.promotion.conftest import queue_lambda_result

ME, OTHER = "arn:aws:states:us-east-1:1:execution:m:me", "arn:aws:states:us-east-1:1:execution:m:other"


@pytest.mark.parametrize(
    "holder, deadline_in, decision",
    [
        (None, 7000, "acquire"),
        (lock.LockHolder(ME, 500), 7000, "acquire"),  # ours already (a retried Plan)
        (lock.LockHolder(OTHER, -1), 7000, "acquire"),  # expired: its execution cannot be alive any more
        (lock.LockHolder(OTHER, 3600), 7000, "wait"),
        (lock.LockHolder(OTHER, 3600), lock.TIME_NEEDED_S - 1, "give-up"),  # too little time left to promote after waiting
    ],
)
def test_decisions(holder, deadline_in, decision):
    now = 1_000_000.0
    if holder is not None:
        holder = lock.LockHolder(holder.owner, now + holder.expires_at)
    assert lock.decide(holder, ME, now, now + deadline_in) == decision


@pytest.fixture
def table(aws_env, moto_aws):
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    dynamodb.create_table(TableName=POINTER_TABLE, BillingMode="PAY_PER_REQUEST", AttributeDefinitions=[{"AttributeName": KEY, "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": KEY, "KeyType": "HASH"}])
    return dynamodb


def test_only_one_owner_at_a_time_and_only_the_owner_releases(table):
    now = time.time()
    assert lock.try_acquire(table, POINTER_TABLE, "m", ME, now, now + 100)
    assert not lock.try_acquire(table, POINTER_TABLE, "m", OTHER, now, now + 100)
    assert lock.try_acquire(table, POINTER_TABLE, "other-model", OTHER, now, now + 100)  # per model
    lock.release(table, POINTER_TABLE, "m", OTHER)  # not its lock: nothing happens
    assert lock.read_holder(table, POINTER_TABLE, "m").owner == ME
    assert lock.try_acquire(table, POINTER_TABLE, "m", OTHER, now + 101, now + 200)  # expired
    lock.release(table, POINTER_TABLE, "m", OTHER)
    assert lock.read_holder(table, POINTER_TABLE, "m") is None


def test_a_lock_whose_execution_ended_is_taken_over_only_from_that_owner(table):
    now = time.time()
    assert lock.decide(lock.LockHolder(OTHER, now + 3600), ME, now, now + 7000, holder_ended=True) == "acquire"
    assert lock.try_acquire(table, POINTER_TABLE, "m", OTHER, now, now + 3600)
    assert not lock.try_acquire(table, POINTER_TABLE, "m", ME, now, now + 3600, ended_owner="arn:aws:states:us-east-1:1:execution:m:third")
    assert lock.try_acquire(table, POINTER_TABLE, "m", ME, now, now + 3600, ended_owner=OTHER)
    assert lock.read_holder(table, POINTER_TABLE, "m").owner == ME


class _Executions:
    def __init__(self, status=None, error=None):
        self.status, self.error = status, error

    def describe_execution(self, executionArn):  # noqa: N803 - boto3's parameter name
        if self.error:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": self.error, "Message": "x"}}, "DescribeExecution")
        return {"status": self.status}


@pytest.mark.parametrize("executions, ended", [
    (_Executions("RUNNING"), False), (_Executions("FAILED"), True), (_Executions("ABORTED"), True), (_Executions("TIMED_OUT"), True),
    (_Executions(error="ExecutionDoesNotExist"), True),
    (_Executions(error="AccessDeniedException"), False),  # unknown: keep waiting rather than take a live promotion's lock
])
def test_whether_a_lock_owners_execution_has_ended(executions, ended):
    assert lock.execution_ended(executions, OTHER) is ended


def test_an_approval_waits_for_the_running_promotion_then_plans_against_its_outcome(world, monkeypatch):
    """v5 and v6 approved minutes apart: v6 waits for v5's promotion and then replaces v5, never the other way round."""
    first = world.register_version()
    assert world.promote(first)["status"] == "SUCCEEDED"
    second = world.register_version()
    running = world.execution_arn("an-earlier-promotion")
    ended = lock.execution_ended
    monkeypatch.setattr(lock, "execution_ended", lambda sfn, arn: False if arn == running else ended(sfn, arn))  # still running
    assert lock.try_acquire(world.dynamodb, POINTER_TABLE, "clip-tiny", running, time.time(), time.time() + 3600)
    event, name = world.event_for(second), "waits-for-the-lock"
    waiting = world.plan(event, name)
    assert waiting["action"] == "wait" and "an-earlier-promotion" in waiting["reason"]
    lock.release(world.dynamodb, POINTER_TABLE, "clip-tiny", running)  # the earlier promotion ends
    proceeding = world.plan(event, name)
    assert proceeding["action"] == "promote" and proceeding["previous_endpoint"] == "clip-tiny-v1"
    for result in (waiting, proceeding, {"passed": True, "reason": "4 requests matched", "min_cosine": 1.0}):
        queue_lambda_result(result)
    result = world.run(event, name, proceeding)
    assert result["status"] == "SUCCEEDED"
    assert result["history"].count("Plan") == 2 and "WaitForLock" in result["history"]
    assert world.serving_endpoint() == "clip-tiny-v2"
    assert lock.read_holder(world.dynamodb, POINTER_TABLE, "clip-tiny") is None  # released at the end


@pytest.mark.parametrize("smoke_passes", [True, False])
def test_the_lock_is_released_whatever_the_outcome(world, smoke_passes):
    package = world.register_version()
    smoke = {"passed": smoke_passes, "reason": "test", "min_cosine": 1.0 if smoke_passes else 0.1}
    result = world.promote(package, smoke=smoke)
    assert result["status"] == ("SUCCEEDED" if smoke_passes else "FAILED")
    assert lock.read_holder(world.dynamodb, POINTER_TABLE, "clip-tiny") is None
    again = world.promote(package)  # a plan that decides not to promote gives the lock back at once
    assert again["plan"]["action"] in ("ignore", "skip")
    assert lock.read_holder(world.dynamodb, POINTER_TABLE, "clip-tiny") is None


def test_a_planner_that_fails_after_taking_the_lock_gives_it_back(world, monkeypatch):
    """The workflow's PlanFailed path has no lock to release: the planner must not leave one behind."""
    import clip_lambdas.promotion_planner.app as planner

    package = world.register_version()

    def broken(*args, **kwargs):
        raise RuntimeError("ListEndpoints throttled")

    monkeypatch.setattr(planner, "read_live_state", broken)
    with pytest.raises(RuntimeError):
        world.plan(world.event_for(package), "fails-after-the-lock")
    assert lock.read_holder(world.dynamodb, POINTER_TABLE, "clip-tiny") is None
