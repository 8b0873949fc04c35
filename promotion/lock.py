"""One promotion per model at a time: a lock item beside the serving pointer, with an owner and an expiry.

Approve v5 and v6 minutes apart and, without it, v6's plan lists v5 (still being created) for
retirement, and whichever finishes last decides what serves. The planner takes the lock before it
reads anything (a conditional PutItem: free, expired, or already ours); a promotion that finds it
held waits and plans again, so v6 plans against v5's outcome. The workflow releases it at its end
(a conditional DeleteItem: only if still ours). A holder whose execution has ended without
releasing it (the planner crashed after taking it, the execution was stopped or timed out) no
longer holds it: the planner asks Step Functions and takes it over (compare-and-set on that
owner). Otherwise a lock expires with its execution's own time limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import ClientError

from promotion.pointer import KEY

EXECUTION_LIMIT_S = 7200  # the state machine's TimeoutSeconds: no holder outlives it
TIME_NEEDED_S = 2700  # what a promotion needs at worst (20 min of polls, the bake, retries): later than this, give up


def lock_key(model_id: str) -> dict:
    return {KEY: {"S": f"lock:{model_id}"}}


@dataclass(frozen=True)
class LockHolder:
    owner: str
    expires_at: float


def decide(holder: LockHolder | None, me: str, now: float, my_deadline: float, holder_ended: bool = False) -> str:
    """'acquire' (free, expired, ours, or its holder's execution has ended), 'wait' (held, and time
    enough is left to wait), or 'give-up'."""
    if holder is None or holder.owner == me or holder.expires_at <= now or holder_ended:
        return "acquire"
    return "wait" if my_deadline - now > TIME_NEEDED_S else "give-up"


def execution_ended(stepfunctions, execution_arn: str) -> bool:
    """Whether a lock owner's execution has ended (any status but RUNNING, or gone). Unknown: not ended."""
    try:
        return stepfunctions.describe_execution(executionArn=execution_arn)["status"] != "RUNNING"
    except ClientError as error:
        return error.response["Error"]["Code"] == "ExecutionDoesNotExist"


def read_holder(dynamodb, table: str, model_id: str) -> LockHolder | None:
    item = dynamodb.get_item(TableName=table, Key=lock_key(model_id), ConsistentRead=True).get("Item")
    return LockHolder(item["owner"]["S"], float(item["expires_at"]["N"])) if item else None


def try_acquire(dynamodb, table: str, model_id: str, me: str, now: float, expires_at: float, ended_owner: str | None = None) -> bool:
    """Take the lock if it is free, expired, ours, or still held by `ended_owner` (an execution seen
    to have ended); False if someone else took it first."""
    try:
        dynamodb.put_item(
            TableName=table,
            Item={**lock_key(model_id), "owner": {"S": me}, "expires_at": {"N": str(int(expires_at))}},
            ConditionExpression="attribute_not_exists(#key) OR expires_at <= :now OR #owner = :me OR #owner = :ended",
            ExpressionAttributeNames={"#key": KEY, "#owner": "owner"},
            ExpressionAttributeValues={":now": {"N": str(int(now))}, ":me": {"S": me}, ":ended": {"S": ended_owner or me}},
        )
    except ClientError as error:
        if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    return True


def release(dynamodb, table: str, model_id: str, me: str) -> None:
    """Give the lock back if it is still ours (what the workflow's ReleaseLock states do)."""
    try:
        dynamodb.delete_item(TableName=table, Key=lock_key(model_id), ConditionExpression="#owner = :me",
                             ExpressionAttributeNames={"#owner": "owner"}, ExpressionAttributeValues={":me": {"S": me}})
    except ClientError as error:
        if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
