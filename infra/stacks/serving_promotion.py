"""The serving stack's promotion workflow: the planner and smoke-test Lambdas, the Step Functions state machine
over the committed ASL, and the EventBridge rule that starts it on an approval in a model package group."""

from __future__ import annotations

import json

from clip_core.names import PLANNER_FUNCTION, POINTER_TABLE_ENV, PROJECT, SMOKE_TEST_FUNCTION, STATE_MACHINE
from infra.stacks.cfn import arn, encrypted_log_group, getatt, ref
from infra.stacks.iam import LOGS_STATEMENT, XRAY_STATEMENT, allow, deny_everywhere, pass_role, policy, role, when
from infra.stacks.serving_arns import artifact_objects_arn, clip_endpoints_arn, model_packages_arns, pointer_table_arn, use_the_key
from infra.stacks.serving_lambda import lambda_function
from promotion.events import approval_event_pattern
from promotion.plan import ADOPT_SPACE_KEY, SPACE_KEY
from promotion.workflow_asl import ASL_PATH

LOCK_ITEMS_ONLY = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["lock:*"]}}


def promotion_workflow(groups: list[str]) -> dict:
    """The resources, by logical id, that promote approved versions of the models' package groups `groups`."""
    planner_environment = {"MODEL_EXECUTION_ROLE_ARN": getatt("ModelExecutionRole", "Arn"), "TOPIC_ARN": ref("Topic"),
                           POINTER_TABLE_ENV: ref("ServingPointerTable"), "BAKE_SECONDS": ref("BakeSeconds"),
                           "POLL_SECONDS": ref("PollSeconds"), "POWERTOOLS_SERVICE_NAME": "clip-promotion-planner"}
    smoke_test_statements = [allow(["s3:GetObject"], artifact_objects_arn()), allow(["sagemaker:InvokeEndpoint"], clip_endpoints_arn()),
                             use_the_key(), LOGS_STATEMENT, XRAY_STATEMENT]
    start_promotion = allow(["states:StartExecution"], ref("PromotionStateMachine"))
    return {
        "PlannerRole": role("lambda.amazonaws.com", [policy("plan-promotions", _planner_statements(groups))],
                            "promotion planner: read the package and what is live"),
        "PlannerFunction": lambda_function(PLANNER_FUNCTION, f"{PROJECT}: plan a promotion", "clip_lambdas.promotion_planner.app.handler", "PlannerRole",
                                           planner_environment),
        "SmokeTestRole": role("lambda.amazonaws.com", [policy("smoke-test", smoke_test_statements)],
                              "promotion smoke test: invoke the new endpoint"),
        "SmokeTestFunction": lambda_function(SMOKE_TEST_FUNCTION, f"{PROJECT}: smoke-test a new endpoint", "clip_lambdas.smoke_test.app.handler",
                                             "SmokeTestRole", {"POWERTOOLS_SERVICE_NAME": "clip-smoke-test"}, timeout=120),
        "StateMachineLogs": encrypted_log_group(ref("KmsKeyArn")),
        "StateMachineRole": role("states.amazonaws.com", [policy("promote", _state_machine_statements(groups))], "promotion workflow"),
        "PromotionStateMachine": _state_machine(),
        "EventsRole": role("events.amazonaws.com", [policy("start-promotion", [start_promotion])], "EventBridge: start promotions"),
        "ApprovalRule": {
            "Type": "AWS::Events::Rule",
            "Properties": {"Description": "an approval in a clip model package group starts a promotion",
                           "EventPattern": approval_event_pattern(groups), "State": "ENABLED",
                           "Targets": [{"Id": "promotion", "Arn": ref("PromotionStateMachine"), "RoleArn": getatt("EventsRole", "Arn")}]},
        },
    }


def _planner_statements(groups: list[str]) -> list[dict]:
    return [
        allow(["sagemaker:DescribeModelPackage"], model_packages_arns(groups)),
        allow(["sagemaker:ListEndpoints"], "*", sid="ListEndpointsHasNoResourceLevelPermissions"),
        allow(["dynamodb:GetItem"], pointer_table_arn()),
        # The per-model promotion lock (promotion/lock.py): lock items only, never a serving pointer.
        when(allow(["dynamodb:PutItem", "dynamodb:DeleteItem"], pointer_table_arn()), LOCK_ITEMS_ONLY),
        # Whether a lock's owner (an execution of the promotion workflow) has ended without releasing it.
        # (the action's resource types are execution and express: ours is a standard workflow, both are named)
        allow(["states:DescribeExecution"], [arn("states", f"{kind}:{STATE_MACHINE}:*") for kind in ("execution", "express")]),
        use_the_key(), LOGS_STATEMENT, XRAY_STATEMENT,
    ]


def _state_machine_statements(groups: list[str]) -> list[dict]:
    models, endpoint_configs, endpoints = arn("sagemaker", "model/clip-*"), arn("sagemaker", "endpoint-config/clip-*"), clip_endpoints_arn()
    records_metadata = ["sagemaker:UpdateModelPackage"]
    return [
        allow(["lambda:InvokeFunction"], [getatt("PlannerFunction", "Arn"), getatt("SmokeTestFunction", "Arn")]),
        allow(["sagemaker:CreateModel", "sagemaker:DeleteModel"], models),
        allow(["sagemaker:CreateEndpointConfig", "sagemaker:DeleteEndpointConfig"], endpoint_configs),
        allow(["sagemaker:CreateEndpoint", "sagemaker:DescribeEndpoint", "sagemaker:DeleteEndpoint", "sagemaker:UpdateEndpoint"],
              endpoints),
        # CreateEndpoint is authorised against the endpoint config it deploys as well as the endpoint.
        allow(["sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint"], endpoint_configs),
        # The optimised createModel/createEndpointConfig/createEndpoint integrations call ListTags on what they create.
        allow(["sagemaker:AddTags", "sagemaker:ListTags"], [models, endpoint_configs, endpoints]),
        allow(records_metadata, model_packages_arns(groups)),
        # The workflow records outcomes (metadata, Rejected): approving is a person's act in the registry, never the workflow's.
        deny_everywhere("NeverApprove", records_metadata, {"StringEquals": {"sagemaker:ModelApprovalStatus": "Approved"}}),
        # ... nor records an embedding space or the decision to adopt one
        *(deny_everywhere(f"NeverWrite{sid}", records_metadata, {"Null": {f"sagemaker:CustomerMetadataProperties/{key}": "false"}})
          for sid, key in (("Space", SPACE_KEY), ("AdoptSpace", ADOPT_SPACE_KEY))),
        pass_role(getatt("ModelExecutionRole", "Arn"), "sagemaker.amazonaws.com"),
        allow(["dynamodb:PutItem"], pointer_table_arn()),
        when(allow(["dynamodb:DeleteItem"], pointer_table_arn()), LOCK_ITEMS_ONLY),  # releasing the promotion lock
        allow(["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms", "cloudwatch:DescribeAlarms"], arn("cloudwatch", "alarm:clip-*")),
        allow(["sns:Publish"], ref("Topic")),
        use_the_key(),
        allow(["cloudwatch:GetMetricStatistics"], "*", sid="MetricReadsHaveNoResourceLevelPermissions"),  # the bake's traffic check
        allow(["logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
               "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups"], "*",
              sid="LogDeliveryHasNoResourceLevelPermissions"),
        XRAY_STATEMENT,
        # Step Functions' X-Ray tracing reads the sampling rules as well as sending segments.
        allow(["xray:GetSamplingRules", "xray:GetSamplingTargets"], "*", sid="XRaySamplingHasNoResourceLevelPermissions"),
    ]


def _state_machine() -> dict:
    # Fn::Sub over the committed ASL (its ${...} placeholders are the only ${ in it): CloudFormation
    # and moto's stand-in both accept this form, unlike DefinitionSubstitutions.
    definition = json.dumps(json.loads(ASL_PATH.read_text()), separators=(",", ":"))
    substitutions = {"Partition": ref("AWS::Partition"), "PlanFunctionArn": getatt("PlannerFunction", "Arn"),
                     "SmokeTestFunctionArn": getatt("SmokeTestFunction", "Arn"), "TopicArn": ref("Topic")}
    return {
        "Type": "AWS::StepFunctions::StateMachine",
        "Properties": {
            "StateMachineName": STATE_MACHINE,
            "RoleArn": getatt("StateMachineRole", "Arn"),
            "DefinitionString": {"Fn::Sub": [definition, substitutions]},
            "LoggingConfiguration": {"Level": "ERROR", "IncludeExecutionData": False,
                                     "Destinations": [{"CloudWatchLogsLogGroup": {"LogGroupArn": getatt("StateMachineLogs", "Arn")}}]},
            "TracingConfiguration": {"Enabled": True},
        },
    }
