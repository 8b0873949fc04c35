"""The promotion workflow, written in the order it runs; emits promotion.asl.json.

Happy path: Plan -> CreateModel -> CreateEndpointConfig (serverless) -> CreateEndpoint (a new
endpoint per version: blue/green, the previous one keeps serving) -> poll DescribeEndpoint in a
bounded Wait/Choice loop -> SmokeTest (Lambda: real invocations vs reference embeddings, and vs
the endpoint of the same embedding space that it replaces) -> SwitchTraffic (a conditional PutItem
on the model's serving pointer: compare-and-set against the revision the plan saw; the plan
decides whether the stable URL moves or only clients pinning a new space get the new endpoint) ->
PutAlarms -> Bake (wait, then any alarm in ALARM fails the promotion) -> DeleteOldAlarms (of
endpoints no longer served) -> RetireEndpoints (beyond the number kept for rollback, never one the
pointer serves) -> RecordLive -> notify.
Any failure: RestorePrevious (if traffic was switched) -> DeleteNewAlarms -> delete the new
endpoint, config and model -> RecordRejected on the model package -> notify SNS with the reason.
If the restore itself fails, nothing is deleted: both endpoints stay, and SNS says a person must act.

Each phase is one function returning its states, in the order they run: plan, create, wait, smoke,
switch, bake, finish, roll back (PHASES). A state names its successors (Next, Catch, Default) where it
is written; a phase is entered by name, and failures go forward, into the roll back phase, by the
names of its three entries (ROLL_BACK, CLEAN_UP, GIVE_UP).

The ASL is plain data: the Step Functions Data Science SDK, which built it before, only built these
dicts, predates ResultSelector and needs pkg_resources (setuptools<81).

Error names are those Step Functions really raises: optimised SageMaker integrations surface
unmodelled errors (throttling among them) as SageMaker.AmazonSageMakerException, aws-sdk ones as
SageMaker.SageMakerException; Lambda tasks also fail with Lambda.AWSLambdaException and
Lambda.SdkClientException.

Placeholders (promotion/workflow_asl.py) are filled by the template's Fn::Sub.

Regenerate the committed ASL with `python -m promotion.state_machine`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from promotion.workflow_asl import ASL_PATH, PARTITION, PLAN_FUNCTION, SMOKE_FUNCTION, TOPIC

ALL_ERRORS = ["States.ALL"]
POINTER_CACHE_SECONDS = 5  # lambda/clip_lambdas/api/endpoints.py EndpointDirectory.ttl_s
LAMBDA_TRANSIENT = ["Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException", "Lambda.TooManyRequestsException"]
SAGEMAKER_OPTIMISED_TRANSIENT = ["SageMaker.AmazonSageMakerException"]
SAGEMAKER_SDK_TRANSIENT = ["SageMaker.SageMakerException"]
DYNAMODB_TRANSIENT = ["DynamoDB.ProvisionedThroughputExceededException", "DynamoDB.RequestLimitExceeded",
                      "DynamoDB.InternalServerErrorException", "DynamoDB.AmazonDynamoDBException"]
CLOUDWATCH_TRANSIENT = ["CloudWatch.CloudWatchException", "CloudWatch.LimitExceededException"]
CONDITION_FAILED = ["DynamoDB.ConditionalCheckFailedException"]

# Where each phase starts.
PLAN, CREATE, WAIT, SMOKE, SWITCH, BAKE, FINISH = (
    "Plan", "CreateModel", "StartPolling", "SmokeTest", "SwitchTraffic", "PutAlarms", "HasOldAlarms")
# The roll back phase's entries, by what exists when the failure happens.
ROLL_BACK = "RestorePrevious"  # traffic may have been switched: restore the pointer first
CLEAN_UP = "DeleteNewEndpoint"  # the new endpoint may exist, the pointer never named it
GIVE_UP = "ReleaseLockAfterFailure"  # nothing of this execution exists


# ---- the repeated shapes -----------------------------------------------------------------------

def sdk(service: str, action: str) -> str:
    return f"arn:{PARTITION}:states:::aws-sdk:{service}:{action}"


def optimised(integration: str) -> str:
    return f"arn:{PARTITION}:states:::{integration}"


def _then(next_state: str | None) -> dict:
    return {"Next": next_state} if next_state else {"End": True}


def _retry(errors: list[str], attempts: int = 4, interval_s: int = 2) -> dict:
    """Bounded, jittered exponential backoff for errors that a retry can cure."""
    return {"ErrorEquals": errors, "IntervalSeconds": interval_s, "MaxAttempts": attempts, "BackoffRate": 2.0,
            "JitterStrategy": "FULL", "MaxDelaySeconds": 60}


def _catch(next_state: str, result_path: str = "$.error", errors: list[str] = ALL_ERRORS) -> dict:
    return {"ErrorEquals": errors, "Next": next_state, "ResultPath": result_path}


def _task(resource: str, parameters: dict, then: str | None, *, retry: dict | None = None, catch: Sequence[dict] = (),
          result_path: str | None = None, result_selector: dict | None = None) -> dict:
    """A Task: result_path None discards its output; result_selector keeps timestamps out of the state."""
    state = {"Type": "Task", "Resource": resource, "Parameters": parameters, "ResultPath": result_path}
    if result_selector is not None:
        state["ResultSelector"] = result_selector
    if retry is not None:
        state["Retry"] = [retry]
    if catch:
        state["Catch"] = list(catch)
    return state | _then(then)


def _when(variable: str, test: str, value, then: str) -> dict:
    return {"Variable": variable, test: value, "Next": then}


def _choice(*rules: dict, otherwise: str) -> dict:
    return {"Type": "Choice", "Choices": list(rules), "Default": otherwise}


def _pass(then: str, result_path: str, *, parameters: dict | None = None, result=None) -> dict:
    state = {"Type": "Pass", "ResultPath": result_path}
    state.update({"Parameters": parameters} if parameters is not None else {"Result": result})
    return state | _then(then)


def _wait(then: str, *, seconds: int | None = None, seconds_path: str | None = None) -> dict:
    return {"Type": "Wait", **({"SecondsPath": seconds_path} if seconds_path else {"Seconds": seconds}), "Next": then}


def _map(items_path: str, iterator: dict, then: str, *, max_concurrency: int, catch: list[dict], parameters: dict | None = None) -> dict:
    """A Map over items_path running `iterator` (its states in order, the first one starts); output discarded."""
    state = {"Type": "Map", "ItemsPath": items_path, "MaxConcurrency": max_concurrency,
             "Iterator": {"StartAt": next(iter(iterator)), "States": iterator}, "ResultPath": None, "Catch": catch}
    if parameters is not None:
        state["Parameters"] = parameters
    return state | _then(then)


def _failure(error: str, then: str, *, cause_path: str | None = None, cause: str | None = None) -> dict:
    """Record a failure found by a Choice in $.error, the same shape a Catch writes."""
    return _pass(then, "$.error", parameters={"Error": error, **({"Cause.$": cause_path} if cause_path else {"Cause": cause})})


def _fail(error: str, cause: str) -> dict:
    return {"Type": "Fail", "Error": error, "Cause": cause}


def _publish(subject: str, message_format: str, *paths: str, then: str) -> dict:
    message = f"States.Format('{message_format}', {', '.join(paths)})"
    return _task(optimised("sns:publish"), {"TopicArn": TOPIC, "Subject": subject, "Message.$": message}, then)


def _release_lock(then: str) -> dict:
    """Give the model's promotion lock back (only if still ours); a failure here only delays the next
    promotion until the lock expires, so it is recorded and the workflow goes on."""
    return _task(optimised("dynamodb:deleteItem"),
                 {"TableName.$": "$.plan.pointer_table", "Key.$": "$.plan.lock_key", "ConditionExpression": "#owner = :me",
                  "ExpressionAttributeNames": {"#owner": "owner"}, "ExpressionAttributeValues.$": "$.plan.lock_owner_values"},
                 then, retry=_retry(DYNAMODB_TRANSIENT), catch=[_catch(then, "$.lock_error")])


def _sagemaker_delete(action: str, parameters: dict, then: str | None, catch: Sequence[dict] = ()) -> dict:
    return _task(sdk("sagemaker", action), parameters, then, retry=_retry(SAGEMAKER_SDK_TRANSIENT), catch=catch)


# ---- the phases, in the order they run ---------------------------------------------------------

def plan() -> dict:
    """Plan (take the model's lock, decide), then promote, wait for another promotion, or end."""
    return {
        PLAN: _task(
            optimised("lambda:invoke"),
            # The execution's own input, whichever pass this is: WaitForLock loops back here.
            {"FunctionName": PLAN_FUNCTION, "Payload": {"event.$": "$$.Execution.Input", "execution_id.$": "$$.Execution.Id",
                                                        "execution_start.$": "$$.Execution.StartTime"}},
            "IsPromotion", retry=_retry(LAMBDA_TRANSIENT, attempts=3), catch=[_catch("NotifyPlanFailure")],
            result_selector={"plan.$": "$.Payload"}, result_path="$"),
        "IsPromotion": _choice(
            _when("$.plan.action", "StringEquals", "promote", CREATE),
            _when("$.plan.action", "StringEquals", "ignore", "AlreadyHandled"),
            _when("$.plan.action", "StringEquals", "wait", "WaitForLock"),
            otherwise="NotifySkipped"),
        # Another promotion of the model holds its lock: wait, then plan again against what it left.
        "WaitForLock": _wait(PLAN, seconds_path="$.plan.wait_seconds"),
        "AlreadyHandled": {"Type": "Succeed", "Comment": "a repeat of an event already handled (our own RecordLive emits one): nothing to say"},
        "NotifySkipped": _publish("clip-embedding-api promotion skipped", "{}: promotion of version {} skipped: {}",
                                  "$.plan.model_id", "$.plan.version", "$.plan.reason", then="Skipped"),
        "Skipped": {"Type": "Succeed"},
        "NotifyPlanFailure": _publish("clip-embedding-api promotion could not start", "promotion not started: {}: {}",
                                      "$.error.Error", "$.error.Cause", then="PlanFailed"),
        "PlanFailed": _fail("PlanFailed", "the promotion could not be planned; see the SNS notification"),
    }


def create() -> dict:
    """The new model, its serverless endpoint config and its endpoint (blue/green: a new endpoint per version)."""
    retry = _retry(SAGEMAKER_OPTIMISED_TRANSIENT, interval_s=5)
    return {
        CREATE: _task(
            optimised("sagemaker:createModel"),
            {"ModelName.$": "$.plan.model_name", "ExecutionRoleArn.$": "$.plan.role_arn",
             # The registered Environment carries the validated manifest digest the container checks at start.
             "PrimaryContainer": {"Image.$": "$.plan.image", "ModelDataUrl.$": "$.plan.model_data_url",
                                  "Environment.$": "$.plan.container_environment"}},
            # Nothing of this execution exists yet (a concurrent duplicate fails here): notify, clean nothing.
            "CreateEndpointConfig", retry=retry, catch=[_catch(GIVE_UP)]),
        "CreateEndpointConfig": _task(
            optimised("sagemaker:createEndpointConfig"),
            {"EndpointConfigName.$": "$.plan.endpoint_config_name",
             "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName.$": "$.plan.model_name",
                                     "ServerlessConfig.$": "$.plan.serverless_config"}]},
            "CreateEndpoint", retry=retry, catch=[_catch(CLEAN_UP)]),
        "CreateEndpoint": _task(
            optimised("sagemaker:createEndpoint"),
            {"EndpointName.$": "$.plan.endpoint_name", "EndpointConfigName.$": "$.plan.endpoint_config_name"},
            WAIT, retry=retry, catch=[_catch(CLEAN_UP)]),
    }


def wait() -> dict:
    """Poll DescribeEndpoint until InService, Failed, or out of polls."""
    return {
        WAIT: _pass("WaitForEndpoint", "$.polls", result={"count": 0}),
        "WaitForEndpoint": _wait("DescribeEndpoint", seconds_path="$.plan.poll_seconds"),
        "DescribeEndpoint": _task(
            sdk("sagemaker", "describeEndpoint"), {"EndpointName.$": "$.plan.endpoint_name"}, "EndpointReady",
            retry=_retry(SAGEMAKER_SDK_TRANSIENT, attempts=5, interval_s=5), catch=[_catch(CLEAN_UP)],
            result_selector={"status.$": "$.EndpointStatus"}, result_path="$.endpoint"),
        "EndpointReady": _choice(
            _when("$.endpoint.status", "StringEquals", "InService", SMOKE),
            _when("$.endpoint.status", "StringEquals", "Failed", "EndpointFailed"),
            _when("$.polls.count", "NumericGreaterThanEqualsPath", "$.plan.max_polls", "EndpointTimedOut"),
            otherwise="CountPoll"),
        "CountPoll": _pass("WaitForEndpoint", "$.polls", parameters={"count.$": "States.MathAdd($.polls.count, 1)"}),
        "EndpointFailed": _failure("EndpointFailed", CLEAN_UP, cause="the new endpoint reached status Failed"),
        "EndpointTimedOut": _failure("EndpointTimedOut", CLEAN_UP, cause="the new endpoint did not reach InService in time"),
    }


def smoke() -> dict:
    """Real invocations of the new endpoint, against reference embeddings and the endpoint it replaces."""
    payload = {"endpoint_name.$": "$.plan.endpoint_name", "model_id.$": "$.plan.model_id", "version.$": "$.plan.version",
               "smoke_test_uri.$": "$.plan.smoke_test_uri", "min_cosine.$": "$.plan.smoke_min_cosine",
               "compare_endpoint.$": "$.plan.compare_endpoint", "require_agreement.$": "$.plan.require_agreement",
               "min_agreement.$": "$.plan.min_agreement", "space.$": "$.plan.space"}
    return {
        SMOKE: _task(
            optimised("lambda:invoke"), {"FunctionName": SMOKE_FUNCTION, "Payload": payload}, "SmokeTestPassed",
            retry=_retry(LAMBDA_TRANSIENT, attempts=3), catch=[_catch(CLEAN_UP)],
            result_selector={"passed.$": "$.Payload.passed", "reason.$": "$.Payload.reason"}, result_path="$.smoke"),
        "SmokeTestPassed": _choice(_when("$.smoke.passed", "BooleanEquals", True, SWITCH), otherwise="SmokeTestFailed"),
        "SmokeTestFailed": _failure("SmokeTestFailed", CLEAN_UP, cause_path="$.smoke.reason"),
    }


def switch() -> dict:
    """Compare-and-set the serving pointer against the revision the plan saw (or our own landed write, on retry)."""
    condition = ("attribute_not_exists(model_id) OR revision = :seen OR revision = :next"
                 " OR (attribute_not_exists(revision) AND endpoint_name = :seen_endpoint)")
    return {
        SWITCH: _task(
            optimised("dynamodb:putItem"),
            {"TableName.$": "$.plan.pointer_table", "Item.$": "$.plan.new_pointer", "ConditionExpression": condition,
             "ExpressionAttributeValues.$": "$.plan.switch_condition_values"},
            BAKE, retry=_retry(DYNAMODB_TRANSIENT), catch=[_catch(ROLL_BACK)]),
    }


def bake() -> dict:
    """Alarms on the new endpoint, the bake period, then proof of traffic and quiet alarms."""
    alarm_fields = ("AlarmName", "AlarmDescription", "Metrics", "EvaluationPeriods", "Threshold", "ComparisonOperator",
                    "TreatMissingData", "AlarmActions")
    put_alarm = _task(sdk("cloudwatch", "putMetricAlarm"), {key + ".$": f"$.{key}" for key in alarm_fields}, None,
                      retry=_retry(CLOUDWATCH_TRANSIENT))
    return {
        BAKE: _map("$.plan.alarms", {"PutAlarm": put_alarm}, "Bake", max_concurrency=2, catch=[_catch(ROLL_BACK)]),
        "Bake": _wait("CheckTraffic", seconds_path="$.plan.bake_seconds"),
        # Quiet alarms prove nothing about an endpoint nobody called (missing data is "not breaching"): the
        # bake first needs SageMaker's own count of invocations of the new endpoint since the plan was made
        # (the smoke test's requests count). None is unknown, not good: roll back.
        "CheckTraffic": _task(
            sdk("cloudwatch", "getMetricStatistics"),
            {"Namespace": "AWS/SageMaker", "MetricName": "Invocations",
             "Dimensions": [{"Name": "EndpointName", "Value.$": "$.plan.endpoint_name"}, {"Name": "VariantName", "Value": "AllTraffic"}],
             "StartTime.$": "$.plan.planned_at", "EndTime.$": "$$.State.EnteredTime", "Period": 60, "Statistics": ["Sum"]},
            "CountTraffic", retry=_retry(CLOUDWATCH_TRANSIENT), catch=[_catch(ROLL_BACK)],
            result_selector={"datapoints.$": "$.Datapoints"}, result_path="$.traffic"),
        "CountTraffic": _pass("SawTraffic", "$.traffic", parameters={"datapoints.$": "States.ArrayLength($.traffic.datapoints)"}),
        "SawTraffic": _choice(_when("$.traffic.datapoints", "NumericGreaterThan", 0, "CheckAlarms"), otherwise="BakeSawNoTraffic"),
        "BakeSawNoTraffic": _failure("BakeSawNoTraffic", ROLL_BACK,
                                     cause="SageMaker reported no invocations of the new endpoint during the promotion: its health is unknown"),
        # The state filter narrows the answer; the states are checked again because not every
        # implementation applies StateValue together with AlarmNames.
        "CheckAlarms": _task(
            sdk("cloudwatch", "describeAlarms"), {"AlarmNames.$": "$.plan.alarm_names", "StateValue": "ALARM"},
            "AnyAlarmFiring", retry=_retry(CLOUDWATCH_TRANSIENT), catch=[_catch(ROLL_BACK)],
            result_selector={"states.$": "$.MetricAlarms[*].StateValue"}, result_path="$.bake"),
        "AnyAlarmFiring": _pass("AlarmsQuiet", "$.bake", parameters={"firing.$": "States.ArrayContains($.bake.states, 'ALARM')"}),
        "AlarmsQuiet": _choice(_when("$.bake.firing", "BooleanEquals", True, "AlarmDuringBake"), otherwise=FINISH),
        "AlarmDuringBake": _failure("AlarmDuringBake", ROLL_BACK, cause="an alarm of the new endpoint fired during the bake period"),
    }


def finish() -> dict:
    """Tidy what the switch left behind (each failure here costs money, not availability), record, notify."""
    retire_one = {
        "RetireEndpoint": _sagemaker_delete("deleteEndpoint", {"EndpointName.$": "$.name"}, "RetireEndpointConfig"),
        "RetireEndpointConfig": _sagemaker_delete("deleteEndpointConfig", {"EndpointConfigName.$": "$.name"}, "RetireStandbyConfig"),
        # Only endpoints kept for rollback after provisioned concurrency was released have one: absent is fine.
        "RetireStandbyConfig": _task(sdk("sagemaker", "deleteEndpointConfig"), {"EndpointConfigName.$": "$.standby_config_name"},
                                     "RetireModel", catch=[_catch("RetireModel", "$.standby_error")]),
        "RetireModel": _sagemaker_delete("deleteModel", {"ModelName.$": "$.name"}, None),
    }
    return {
        FINISH: _choice(_when("$.plan.has_old_alarms", "BooleanEquals", True, "DeleteOldAlarms"), otherwise="KeepsProvisionedConcurrency"),
        "DeleteOldAlarms": _task(sdk("cloudwatch", "deleteAlarms"), {"AlarmNames.$": "$.plan.old_alarm_names"}, "KeepsProvisionedConcurrency",
                                 catch=[_catch("KeepsProvisionedConcurrency", "$.alarm_cleanup_error")]),
        # The replaced endpoint, kept for rollback, moves to a config without provisioned concurrency.
        "KeepsProvisionedConcurrency": _choice(
            _when("$.plan.release_provisioned_concurrency", "BooleanEquals", True, "CreateStandbyConfig"), otherwise="RetireEndpoints"),
        "CreateStandbyConfig": _task(
            sdk("sagemaker", "createEndpointConfig"),
            {"EndpointConfigName.$": "$.plan.standby_config_name",
             "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName.$": "$.plan.previous_endpoint",
                                     "ServerlessConfig.$": "$.plan.standby_serverless_config"}]},
            "ReleaseProvisionedConcurrency", retry=_retry(SAGEMAKER_SDK_TRANSIENT), catch=[_catch("RetireEndpoints", "$.standby_error")]),
        "ReleaseProvisionedConcurrency": _task(
            sdk("sagemaker", "updateEndpoint"),
            {"EndpointName.$": "$.plan.previous_endpoint", "EndpointConfigName.$": "$.plan.standby_config_name"},
            "RetireEndpoints", retry=_retry(SAGEMAKER_SDK_TRANSIENT), catch=[_catch("RetireEndpoints", "$.standby_error")]),
        "RetireEndpoints": _map(
            "$.plan.retire_endpoints", retire_one, "RecordLive", max_concurrency=1, catch=[_catch("RecordLive", "$.retire_error")],
            parameters={"name.$": "$$.Map.Item.Value.name", "standby_config_name.$": "$$.Map.Item.Value.standby_config_name"}),
        "RecordLive": _task(
            sdk("sagemaker", "updateModelPackage"),
            {"ModelPackageArn.$": "$.plan.package_arn",
             "CustomerMetadataProperties": {"promotion": "live", "endpoint_name.$": "$.plan.endpoint_name", "approved_by.$": "$.plan.approved_by",
                                            # "stable" or "adopt": serves the stable URL; "own": only clients that pin its space
                                            "serving.$": "$.plan.space_mode"}},
            "ReleaseLockAfterSuccess", retry=_retry(SAGEMAKER_SDK_TRANSIENT), catch=[_catch("ReleaseLockAfterSuccess", "$.record_error")]),
        "ReleaseLockAfterSuccess": _release_lock("NotifySuccess"),
        "NotifySuccess": _publish("clip-embedding-api promotion succeeded", "{}: {}", "$.plan.model_id", "$.plan.reason", then="Promoted"),
        "Promoted": {"Type": "Succeed"},
    }


def roll_back() -> dict:
    """Restore the pointer, delete what this execution created, reject the package, notify; entered at
    ROLL_BACK, CLEAN_UP or GIVE_UP, by how far the promotion got."""
    def delete_new(action: str, key: str, then: str) -> dict:  # each goes on to the next, failed or not
        return _sagemaker_delete(action, {key + ".$": "$.plan.endpoint_name"}, then, catch=[_catch(then, "$.cleanup_error")])

    return {
        ROLL_BACK: _task(
            optimised("dynamodb:putItem"),
            {"TableName.$": "$.plan.pointer_table", "Item.$": "$.plan.previous_pointer",
             "ConditionExpression": "revision = :ours OR revision = :restored",
             "ExpressionAttributeValues.$": "$.plan.restore_condition_values"},
            "LetPointerCachesExpire", retry=_retry(DYNAMODB_TRANSIENT, attempts=5),
            # The pointer no longer names our endpoint (never switched, or moved on since): nothing to restore.
            catch=[_catch("DeleteNewAlarms", "$.restore_error", errors=CONDITION_FAILED),
                   _catch("ReleaseLockAfterRestoreFailure", "$.restore_error")]),
        # The API functions cache the pointer for a few seconds: let them reach the restored endpoint before
        # the new one goes away.
        "LetPointerCachesExpire": _wait("DeleteNewAlarms", seconds=POINTER_CACHE_SECONDS + 1),
        "DeleteNewAlarms": _task(sdk("cloudwatch", "deleteAlarms"), {"AlarmNames.$": "$.plan.alarm_names"}, CLEAN_UP,
                                 catch=[_catch(CLEAN_UP, "$.cleanup_error")]),
        CLEAN_UP: delete_new("deleteEndpoint", "EndpointName", "DeleteNewEndpointConfig"),
        "DeleteNewEndpointConfig": delete_new("deleteEndpointConfig", "EndpointConfigName", "DeleteNewModel"),
        "DeleteNewModel": delete_new("deleteModel", "ModelName", "RecordRejected"),
        "RecordRejected": _task(
            sdk("sagemaker", "updateModelPackage"),
            {"ModelPackageArn.$": "$.plan.package_arn", "ModelApprovalStatus": "Rejected",
             "ApprovalDescription.$": "States.Format('promotion rolled back: {}', $.error.Error)",
             "CustomerMetadataProperties": {"promotion": "rolled-back", "promotion_error.$": "$.error.Error"}},
            GIVE_UP, retry=_retry(SAGEMAKER_SDK_TRANSIENT), catch=[_catch(GIVE_UP)]),
        GIVE_UP: _release_lock("NotifyFailure"),
        "NotifyFailure": _publish("clip-embedding-api promotion rolled back", "{}: promotion of version {} failed and was rolled back: {}: {}",
                                  "$.plan.model_id", "$.plan.version", "$.error.Error", "$.error.Cause", then="PromotionFailed"),
        "PromotionFailed": _fail("PromotionFailed", "promotion rolled back; see the SNS notification"),
        # A restore that fails leaves the pointer naming the new endpoint: deleting anything then would take
        # the model down. Stop with both endpoints in place, and say that a person must act.
        "ReleaseLockAfterRestoreFailure": _release_lock("NotifyRestoreFailed"),
        "NotifyRestoreFailed": _publish(
            "clip-embedding-api promotion needs a person",
            "{}: promotion of version {} failed ({}) and restoring the previous version failed too ({}: {}). Nothing was deleted: "
            "{} still serves. Fix the cause and restore the serving pointer, or approve again.",
            "$.plan.model_id", "$.plan.version", "$.error.Error", "$.restore_error.Error", "$.restore_error.Cause", "$.plan.endpoint_name",
            then="RestoreFailed"),
        "RestoreFailed": _fail("RestoreFailed", "the previous version could not be restored; both endpoints are kept"),
    }


PHASES = (plan, create, wait, smoke, switch, bake, finish, roll_back)


def build_definition() -> dict:
    states: dict[str, dict] = {}
    for phase in PHASES:
        states.update(phase())
    return {"Comment": "clip-embedding-api: promote an approved model package to a serverless endpoint, or roll back",
            "StartAt": PLAN, "TimeoutSeconds": 7200, "States": states}


def render_asl() -> str:
    return json.dumps(build_definition(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    ASL_PATH.write_text(render_asl())
    print(f"wrote {ASL_PATH}")
