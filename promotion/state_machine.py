"""The promotion workflow, defined with the Step Functions Data Science SDK; emits promotion.asl.json.

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

Error names are those Step Functions really raises: optimised SageMaker integrations surface
unmodelled errors (throttling among them) as SageMaker.AmazonSageMakerException, aws-sdk ones as
SageMaker.SageMakerException; Lambda tasks also fail with Lambda.AWSLambdaException and
Lambda.SdkClientException.

Placeholders ${Partition}, ${PlanFunctionArn}, ${SmokeTestFunctionArn} and ${TopicArn} are filled
by the template's Fn::Sub (tests and local mode substitute them the same way).

Regenerate the committed ASL with `python -m promotion.state_machine`.
"""

from __future__ import annotations

import json
from pathlib import Path

from stepfunctions.steps import Catch, Chain, Choice, ChoiceRule, Fail, Map, Pass, Retry, Succeed, Task, Wait
from stepfunctions.steps.states import Graph

ASL_PATH = Path(__file__).with_name("promotion.asl.json")
PARTITION = "${Partition}"
PLAN_FUNCTION = "${PlanFunctionArn}"
SMOKE_FUNCTION = "${SmokeTestFunctionArn}"
TOPIC = "${TopicArn}"
ALL_ERRORS = ["States.ALL"]
POINTER_CACHE_SECONDS = 5  # lambda/embedding_api/endpoints.py EndpointDirectory.ttl_s
LAMBDA_TRANSIENT = ["Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException", "Lambda.TooManyRequestsException"]
SAGEMAKER_OPTIMISED_TRANSIENT = ["SageMaker.AmazonSageMakerException"]
SAGEMAKER_SDK_TRANSIENT = ["SageMaker.SageMakerException"]
DYNAMODB_TRANSIENT = ["DynamoDB.ProvisionedThroughputExceededException", "DynamoDB.RequestLimitExceeded",
                      "DynamoDB.InternalServerErrorException", "DynamoDB.AmazonDynamoDBException"]
CLOUDWATCH_TRANSIENT = ["CloudWatch.CloudWatchException", "CloudWatch.LimitExceededException"]
CONDITION_FAILED = ["DynamoDB.ConditionalCheckFailedException"]


class SdkTask(Task):
    """Task with ResultSelector, which ASL has but SDK 2.3.0 predates (keeps timestamps out of state)."""

    def __init__(self, state_id, result_selector: dict | None = None, **kwargs):
        super().__init__(state_id, **kwargs)
        if result_selector is not None:
            self.fields["result_selector"] = result_selector


def sdk(service: str, action: str) -> str:
    return f"arn:{PARTITION}:states:::aws-sdk:{service}:{action}"


def optimised(integration: str) -> str:
    return f"arn:{PARTITION}:states:::{integration}"


def _retry(state, errors: list[str], attempts: int = 4, interval_s: int = 2):
    """Bounded, jittered exponential backoff for errors that a retry can cure."""
    retry = Retry(error_equals=errors, interval_seconds=interval_s, max_attempts=attempts, backoff_rate=2.0)
    retry.fields["jitter_strategy"] = "FULL"
    retry.fields["max_delay_seconds"] = 60
    state.add_retry(retry)
    return state


def _catch_to(state, next_step, errors=ALL_ERRORS):
    state.add_catch(Catch(error_equals=errors, next_step=next_step, result_path="$.error"))
    return state


def _failure(state_id: str, error: str, cause_path: str | None = None, cause: str | None = None) -> Pass:
    """Record a failure found by a Choice in $.error, the same shape a Catch writes."""
    parameters = {"Error": error}
    parameters.update({"Cause.$": cause_path} if cause_path else {"Cause": cause})
    return Pass(state_id, parameters=parameters, result_path="$.error")


def _publish(state_id: str, subject: str, message_format: str, *paths: str) -> Task:
    return Task(
        state_id,
        resource=optimised("sns:publish"),
        parameters={"TopicArn": TOPIC, "Subject": subject, "Message.$": f"States.Format('{message_format}', {', '.join(paths)})"},
        result_path=None,
    )


def _release_lock(state_id: str, next_step):
    """Give the model's promotion lock back (only if still ours); a failure here only delays the next
    promotion until the lock expires, so it is recorded and the workflow goes on."""
    task = SdkTask(
        state_id, resource=optimised("dynamodb:deleteItem"),
        parameters={"TableName.$": "$.plan.pointer_table", "Key.$": "$.plan.lock_key", "ConditionExpression": "#owner = :me",
                    "ExpressionAttributeNames": {"#owner": "owner"}, "ExpressionAttributeValues.$": "$.plan.lock_owner_values"},
        result_path=None)
    _retry(task, DYNAMODB_TRANSIENT)
    task.add_catch(Catch(error_equals=ALL_ERRORS, next_step=next_step, result_path="$.lock_error"))
    task.next(next_step)
    return task


def build_definition() -> dict:
    # ---- failure handling (built first: the happy path points into it) ----------------------
    promotion_failed = Fail("PromotionFailed", error="PromotionFailed", cause="promotion rolled back; see the SNS notification")
    notify_failure = _publish(
        "NotifyFailure", "clip-embedding-api promotion rolled back",
        "{}: promotion of version {} failed and was rolled back: {}: {}",
        "$.plan.model_id", "$.plan.version", "$.error.Error", "$.error.Cause",
    )
    notify_failure.next(promotion_failed)
    release_after_failure = _release_lock("ReleaseLockAfterFailure", notify_failure)
    record_rejected = SdkTask(
        "RecordRejected",
        resource=sdk("sagemaker", "updateModelPackage"),
        parameters={
            "ModelPackageArn.$": "$.plan.package_arn",
            "ModelApprovalStatus": "Rejected",
            "ApprovalDescription.$": "States.Format('promotion rolled back: {}', $.error.Error)",
            "CustomerMetadataProperties": {"promotion": "rolled-back", "promotion_error.$": "$.error.Error"},
        },
        result_path=None,
    )
    _retry(record_rejected, SAGEMAKER_SDK_TRANSIENT)
    _catch_to(record_rejected, release_after_failure).next(release_after_failure)

    def delete(state_id, action, key):
        task = SdkTask(state_id, resource=sdk("sagemaker", action), parameters={key + ".$": "$.plan.endpoint_name"}, result_path=None)
        _retry(task, SAGEMAKER_SDK_TRANSIENT)
        task.add_catch(Catch(error_equals=ALL_ERRORS, next_step=None, result_path="$.cleanup_error"))
        return task

    delete_endpoint = delete("DeleteNewEndpoint", "deleteEndpoint", "EndpointName")
    delete_config = delete("DeleteNewEndpointConfig", "deleteEndpointConfig", "EndpointConfigName")
    delete_model = delete("DeleteNewModel", "deleteModel", "ModelName")
    for task, following in ((delete_endpoint, delete_config), (delete_config, delete_model), (delete_model, record_rejected)):
        task.catches[0].next_step = following
        task.next(following)
    cleanup = delete_endpoint

    delete_new_alarms = SdkTask("DeleteNewAlarms", resource=sdk("cloudwatch", "deleteAlarms"),
                                parameters={"AlarmNames.$": "$.plan.alarm_names"}, result_path=None)
    delete_new_alarms.add_catch(Catch(error_equals=ALL_ERRORS, next_step=cleanup, result_path="$.cleanup_error"))
    delete_new_alarms.next(cleanup)
    # A restore that fails leaves the pointer naming the new endpoint: deleting anything then would take
    # the model down. Stop with both endpoints in place, and say that a person must act.
    restore_failed = Fail("RestoreFailed", error="RestoreFailed", cause="the previous version could not be restored; both endpoints are kept")
    notify_restore_failed = _publish(
        "NotifyRestoreFailed", "clip-embedding-api promotion needs a person",
        "{}: promotion of version {} failed ({}) and restoring the previous version failed too ({}: {}). Nothing was deleted: "
        "{} still serves. Fix the cause and restore the serving pointer, or approve again.",
        "$.plan.model_id", "$.plan.version", "$.error.Error", "$.restore_error.Error", "$.restore_error.Cause", "$.plan.endpoint_name",
    )
    notify_restore_failed.next(restore_failed)
    release_after_restore_failure = _release_lock("ReleaseLockAfterRestoreFailure", notify_restore_failed)
    restore_previous = SdkTask(
        "RestorePrevious",
        resource=optimised("dynamodb:putItem"),
        parameters={"TableName.$": "$.plan.pointer_table", "Item.$": "$.plan.previous_pointer",
                    "ConditionExpression": "revision = :ours OR revision = :restored",
                    "ExpressionAttributeValues.$": "$.plan.restore_condition_values"},
        result_path=None,
    )
    _retry(restore_previous, DYNAMODB_TRANSIENT, attempts=5)
    # The pointer no longer names our endpoint (never switched, or moved on since): nothing to restore.
    restore_previous.add_catch(Catch(error_equals=CONDITION_FAILED, next_step=delete_new_alarms, result_path="$.restore_error"))
    restore_previous.add_catch(Catch(error_equals=ALL_ERRORS, next_step=release_after_restore_failure, result_path="$.restore_error"))
    # The API functions cache the pointer for a few seconds: let them reach the restored endpoint before
    # the new one goes away.
    drain = Wait("LetPointerCachesExpire", seconds=POINTER_CACHE_SECONDS + 1)
    drain.next(delete_new_alarms)
    restore_previous.next(drain)

    # ---- happy path --------------------------------------------------------------------------
    promoted = Succeed("Promoted")
    notify_success = _publish("NotifySuccess", "clip-embedding-api promotion succeeded", "{}: {}",
                              "$.plan.model_id", "$.plan.reason")
    notify_success.next(promoted)
    release_after_success = _release_lock("ReleaseLockAfterSuccess", notify_success)
    record_live = SdkTask(
        "RecordLive",
        resource=sdk("sagemaker", "updateModelPackage"),
        parameters={"ModelPackageArn.$": "$.plan.package_arn",
                    "CustomerMetadataProperties": {"promotion": "live", "endpoint_name.$": "$.plan.endpoint_name", "approved_by.$": "$.plan.approved_by",
                                                   # "stable" or "adopt": serves the stable URL; "own": only clients that pin its space
                                                   "serving.$": "$.plan.space_mode"}},
        result_path=None,
    )
    _retry(record_live, SAGEMAKER_SDK_TRANSIENT)
    record_live.add_catch(Catch(error_equals=ALL_ERRORS, next_step=release_after_success, result_path="$.record_error"))
    record_live.next(release_after_success)

    retire_model = _retry(SdkTask("RetireModel", resource=sdk("sagemaker", "deleteModel"), parameters={"ModelName.$": "$.name"}, result_path=None),
                          SAGEMAKER_SDK_TRANSIENT)
    # Only endpoints kept for rollback after provisioned concurrency was released have one: absent is fine.
    retire_standby = SdkTask("RetireStandbyConfig", resource=sdk("sagemaker", "deleteEndpointConfig"),
                             parameters={"EndpointConfigName.$": "$.standby_config_name"}, result_path=None)
    retire_standby.add_catch(Catch(error_equals=ALL_ERRORS, next_step=retire_model, result_path="$.standby_error"))
    retire_one = Chain([
        _retry(SdkTask("RetireEndpoint", resource=sdk("sagemaker", "deleteEndpoint"), parameters={"EndpointName.$": "$.name"}, result_path=None),
               SAGEMAKER_SDK_TRANSIENT),
        _retry(SdkTask("RetireEndpointConfig", resource=sdk("sagemaker", "deleteEndpointConfig"), parameters={"EndpointConfigName.$": "$.name"},
                       result_path=None), SAGEMAKER_SDK_TRANSIENT),
        retire_standby,
        retire_model,
    ])
    retire = Map("RetireEndpoints", items_path="$.plan.retire_endpoints",
                 parameters={"name.$": "$$.Map.Item.Value.name", "standby_config_name.$": "$$.Map.Item.Value.standby_config_name"},
                 max_concurrency=1, iterator=retire_one, result_path=None)
    retire.add_catch(Catch(error_equals=ALL_ERRORS, next_step=record_live, result_path="$.retire_error"))
    retire.next(record_live)

    # The replaced endpoint, kept for rollback, moves to a config without provisioned concurrency. A
    # failure here costs money, not availability: it is recorded and the promotion goes on.
    release_to_standby = SdkTask("ReleaseProvisionedConcurrency", resource=sdk("sagemaker", "updateEndpoint"),
                                 parameters={"EndpointName.$": "$.plan.previous_endpoint", "EndpointConfigName.$": "$.plan.standby_config_name"},
                                 result_path=None)
    _retry(release_to_standby, SAGEMAKER_SDK_TRANSIENT)
    release_to_standby.add_catch(Catch(error_equals=ALL_ERRORS, next_step=retire, result_path="$.standby_error"))
    release_to_standby.next(retire)
    create_standby = SdkTask(
        "CreateStandbyConfig", resource=sdk("sagemaker", "createEndpointConfig"),
        parameters={"EndpointConfigName.$": "$.plan.standby_config_name",
                    "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName.$": "$.plan.previous_endpoint",
                                            "ServerlessConfig.$": "$.plan.standby_serverless_config"}]},
        result_path=None)
    _retry(create_standby, SAGEMAKER_SDK_TRANSIENT)
    create_standby.add_catch(Catch(error_equals=ALL_ERRORS, next_step=retire, result_path="$.standby_error"))
    create_standby.next(release_to_standby)
    releases_capacity = Choice("KeepsProvisionedConcurrency")
    releases_capacity.add_choice(ChoiceRule.BooleanEquals("$.plan.release_provisioned_concurrency", True), create_standby)
    releases_capacity.default_choice(retire)

    delete_old_alarms = SdkTask("DeleteOldAlarms", resource=sdk("cloudwatch", "deleteAlarms"),
                                parameters={"AlarmNames.$": "$.plan.old_alarm_names"}, result_path=None)
    delete_old_alarms.add_catch(Catch(error_equals=ALL_ERRORS, next_step=releases_capacity, result_path="$.alarm_cleanup_error"))
    delete_old_alarms.next(releases_capacity)
    has_old_alarms = Choice("HasOldAlarms")
    has_old_alarms.add_choice(ChoiceRule.BooleanEquals("$.plan.has_old_alarms", True), delete_old_alarms)
    has_old_alarms.default_choice(releases_capacity)

    alarm_fired = _failure("AlarmDuringBake", "AlarmDuringBake", cause="an alarm of the new endpoint fired during the bake period")
    alarm_fired.next(restore_previous)
    alarms_quiet = Choice("AlarmsQuiet")
    alarms_quiet.add_choice(ChoiceRule.BooleanEquals("$.bake.firing", True), alarm_fired)
    alarms_quiet.default_choice(has_old_alarms)
    summarise = Pass("AnyAlarmFiring", parameters={"firing.$": "States.ArrayContains($.bake.states, 'ALARM')"}, result_path="$.bake")
    summarise.next(alarms_quiet)
    # The state filter narrows the answer; the states are checked again because not every
    # implementation applies StateValue together with AlarmNames.
    check_alarms = SdkTask(
        "CheckAlarms",
        resource=sdk("cloudwatch", "describeAlarms"),
        parameters={"AlarmNames.$": "$.plan.alarm_names", "StateValue": "ALARM"},
        result_selector={"states.$": "$.MetricAlarms[*].StateValue"},
        result_path="$.bake",
    )
    _retry(check_alarms, CLOUDWATCH_TRANSIENT)
    _catch_to(check_alarms, restore_previous).next(summarise)
    # Quiet alarms prove nothing about an endpoint nobody called (missing data is "not breaching"): the
    # bake first needs SageMaker's own count of invocations of the new endpoint since the plan was made
    # (the smoke test's requests count). None is unknown, not good: roll back.
    no_traffic = _failure("BakeSawNoTraffic", "BakeSawNoTraffic",
                          cause="SageMaker reported no invocations of the new endpoint during the promotion: its health is unknown")
    no_traffic.next(restore_previous)
    saw_traffic = Choice("SawTraffic")
    saw_traffic.add_choice(ChoiceRule.NumericGreaterThan("$.traffic.datapoints", 0), check_alarms)
    saw_traffic.default_choice(no_traffic)
    count_traffic = Pass("CountTraffic", parameters={"datapoints.$": "States.ArrayLength($.traffic.datapoints)"}, result_path="$.traffic")
    count_traffic.next(saw_traffic)
    check_traffic = SdkTask(
        "CheckTraffic",
        resource=sdk("cloudwatch", "getMetricStatistics"),
        parameters={"Namespace": "AWS/SageMaker", "MetricName": "Invocations",
                    "Dimensions": [{"Name": "EndpointName", "Value.$": "$.plan.endpoint_name"}, {"Name": "VariantName", "Value": "AllTraffic"}],
                    "StartTime.$": "$.plan.planned_at", "EndTime.$": "$$.State.EnteredTime", "Period": 60, "Statistics": ["Sum"]},
        result_selector={"datapoints.$": "$.Datapoints"},
        result_path="$.traffic",
    )
    _retry(check_traffic, CLOUDWATCH_TRANSIENT)
    _catch_to(check_traffic, restore_previous).next(count_traffic)
    bake = Wait("Bake", seconds_path="$.plan.bake_seconds")
    bake.next(check_traffic)

    put_alarm = SdkTask(
        "PutAlarm",
        resource=sdk("cloudwatch", "putMetricAlarm"),
        parameters={key + ".$": f"$.{key}" for key in (
            "AlarmName", "AlarmDescription", "Metrics", "EvaluationPeriods", "Threshold", "ComparisonOperator", "TreatMissingData", "AlarmActions")},
        result_path=None,
    )
    _retry(put_alarm, CLOUDWATCH_TRANSIENT)
    put_alarms = Map("PutAlarms", items_path="$.plan.alarms", max_concurrency=2, iterator=put_alarm, result_path=None)
    _catch_to(put_alarms, restore_previous).next(bake)

    switch = SdkTask(
        "SwitchTraffic",
        resource=optimised("dynamodb:putItem"),
        parameters={"TableName.$": "$.plan.pointer_table", "Item.$": "$.plan.new_pointer",
                    "ConditionExpression": ("attribute_not_exists(model_id) OR revision = :seen OR revision = :next"
                                            " OR (attribute_not_exists(revision) AND endpoint_name = :seen_endpoint)"),
                    "ExpressionAttributeValues.$": "$.plan.switch_condition_values"},
        result_path=None,
    )
    _retry(switch, DYNAMODB_TRANSIENT)
    _catch_to(switch, restore_previous).next(put_alarms)

    smoke_failed = _failure("SmokeTestFailed", "SmokeTestFailed", cause_path="$.smoke.reason")
    smoke_failed.next(cleanup)
    smoke_passed = Choice("SmokeTestPassed")
    smoke_passed.add_choice(ChoiceRule.BooleanEquals("$.smoke.passed", True), switch)
    smoke_passed.default_choice(smoke_failed)
    smoke = SdkTask(
        "SmokeTest",
        resource=optimised("lambda:invoke"),
        parameters={
            "FunctionName": SMOKE_FUNCTION,
            "Payload": {
                "endpoint_name.$": "$.plan.endpoint_name",
                "model_id.$": "$.plan.model_id",
                "version.$": "$.plan.version",
                "smoke_test_uri.$": "$.plan.smoke_test_uri",
                "min_cosine.$": "$.plan.smoke_min_cosine",
                "compare_endpoint.$": "$.plan.compare_endpoint",
                "require_agreement.$": "$.plan.require_agreement",
                "min_agreement.$": "$.plan.min_agreement",
                "space.$": "$.plan.space",
            },
        },
        result_selector={"passed.$": "$.Payload.passed", "reason.$": "$.Payload.reason"},
        result_path="$.smoke",
    )
    _retry(smoke, LAMBDA_TRANSIENT, attempts=3)
    _catch_to(smoke, cleanup).next(smoke_passed)

    endpoint_failed = _failure("EndpointFailed", "EndpointFailed", cause="the new endpoint reached status Failed")
    endpoint_failed.next(cleanup)
    endpoint_timed_out = _failure("EndpointTimedOut", "EndpointTimedOut", cause="the new endpoint did not reach InService in time")
    endpoint_timed_out.next(cleanup)
    wait = Wait("WaitForEndpoint", seconds_path="$.plan.poll_seconds")
    count = Pass("CountPoll", parameters={"count.$": "States.MathAdd($.polls.count, 1)"}, result_path="$.polls")
    count.next(wait)
    ready = Choice("EndpointReady")
    ready.add_choice(ChoiceRule.StringEquals("$.endpoint.status", "InService"), smoke)
    ready.add_choice(ChoiceRule.StringEquals("$.endpoint.status", "Failed"), endpoint_failed)
    ready.add_choice(ChoiceRule.NumericGreaterThanEqualsPath("$.polls.count", "$.plan.max_polls"), endpoint_timed_out)
    ready.default_choice(count)
    describe = SdkTask("DescribeEndpoint", resource=sdk("sagemaker", "describeEndpoint"),
                       parameters={"EndpointName.$": "$.plan.endpoint_name"},
                       result_selector={"status.$": "$.EndpointStatus"}, result_path="$.endpoint")
    _retry(describe, SAGEMAKER_SDK_TRANSIENT, attempts=5, interval_s=5)
    _catch_to(describe, cleanup).next(ready)
    wait.next(describe)
    start_polls = Pass("StartPolling", result={"count": 0}, result_path="$.polls")
    start_polls.next(wait)

    create_endpoint = Task("CreateEndpoint", resource=optimised("sagemaker:createEndpoint"),
                           parameters={"EndpointName.$": "$.plan.endpoint_name", "EndpointConfigName.$": "$.plan.endpoint_config_name"},
                           result_path=None)
    _retry(create_endpoint, SAGEMAKER_OPTIMISED_TRANSIENT, interval_s=5)
    _catch_to(create_endpoint, cleanup).next(start_polls)
    create_config = Task(
        "CreateEndpointConfig",
        # EndpointConfigStep cannot express a serverless config: a plain Task with our own Parameters.
        resource=optimised("sagemaker:createEndpointConfig"),
        parameters={
            "EndpointConfigName.$": "$.plan.endpoint_config_name",
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName.$": "$.plan.model_name", "ServerlessConfig.$": "$.plan.serverless_config"}],
        },
        result_path=None,
    )
    _retry(create_config, SAGEMAKER_OPTIMISED_TRANSIENT, interval_s=5)
    _catch_to(create_config, cleanup).next(create_endpoint)
    create_model = Task(
        "CreateModel",
        resource=optimised("sagemaker:createModel"),
        parameters={
            "ModelName.$": "$.plan.model_name",
            "ExecutionRoleArn.$": "$.plan.role_arn",
            # The registered Environment carries the validated manifest digest the container checks at start.
            "PrimaryContainer": {"Image.$": "$.plan.image", "ModelDataUrl.$": "$.plan.model_data_url", "Environment.$": "$.plan.container_environment"},
        },
        result_path=None,
    )
    _retry(create_model, SAGEMAKER_OPTIMISED_TRANSIENT, interval_s=5)
    # Nothing of this execution exists yet (a concurrent duplicate fails here): notify, clean nothing.
    _catch_to(create_model, release_after_failure).next(create_config)

    skipped = Succeed("Skipped")
    notify_skipped = _publish("NotifySkipped", "clip-embedding-api promotion skipped", "{}: promotion of version {} skipped: {}",
                              "$.plan.model_id", "$.plan.version", "$.plan.reason")
    notify_skipped.next(skipped)
    already_handled = Succeed("AlreadyHandled", comment="a repeat of an event already handled (our own RecordLive emits one): nothing to say")
    is_promotion = Choice("IsPromotion")
    is_promotion.add_choice(ChoiceRule.StringEquals("$.plan.action", "promote"), create_model)
    is_promotion.add_choice(ChoiceRule.StringEquals("$.plan.action", "ignore"), already_handled)
    # Another promotion of the model holds its lock: wait, then plan again against what it left.
    wait_for_lock = Wait("WaitForLock", seconds_path="$.plan.wait_seconds")
    is_promotion.add_choice(ChoiceRule.StringEquals("$.plan.action", "wait"), wait_for_lock)
    is_promotion.default_choice(notify_skipped)

    plan_failed = Fail("PlanFailed", error="PlanFailed", cause="the promotion could not be planned; see the SNS notification")
    notify_plan_failure = _publish("NotifyPlanFailure", "clip-embedding-api promotion could not start", "promotion not started: {}: {}",
                                   "$.error.Error", "$.error.Cause")
    notify_plan_failure.next(plan_failed)
    plan = SdkTask(
        "Plan",
        resource=optimised("lambda:invoke"),
        # The execution's own input, whichever pass this is: WaitForLock loops back here.
        parameters={"FunctionName": PLAN_FUNCTION, "Payload": {"event.$": "$$.Execution.Input", "execution_id.$": "$$.Execution.Id",
                                                              "execution_start.$": "$$.Execution.StartTime"}},
        result_selector={"plan.$": "$.Payload"},
        result_path="$",
    )
    _retry(plan, LAMBDA_TRANSIENT, attempts=3)
    _catch_to(plan, notify_plan_failure).next(is_promotion)
    wait_for_lock.next(plan)

    graph = Graph(plan, comment="clip-embedding-api: promote an approved model package to a serverless endpoint, or roll back",
                  timeout_seconds=7200)
    return graph.to_dict()


def render_asl() -> str:
    return json.dumps(build_definition(), indent=2, sort_keys=True) + "\n"


def substitute(asl: str, substitutions: dict[str, str]) -> str:
    """Apply CloudFormation-style DefinitionSubstitutions (${Name})."""
    for name, value in substitutions.items():
        asl = asl.replace("${" + name + "}", value)
    return asl


if __name__ == "__main__":
    ASL_PATH.write_text(render_asl())
    print(f"wrote {ASL_PATH}")
