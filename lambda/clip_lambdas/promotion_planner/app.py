"""Promotion planner Lambda: read what is live, decide with promotion.plan, return the plan.

Input: the EventBridge "SageMaker Model Package State Change" event. The package promoted is
exactly the one the event names, never "the latest approved" found by listing.
Environment: MODEL_EXECUTION_ROLE_ARN, TOPIC_ARN, SERVING_POINTER_TABLE, POLL_SECONDS, MAX_POLLS,
BAKE_SECONDS, SMOKE_MIN_COSINE.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser import BaseModel, event_parser
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from clip_core.model_config import ModelConfig, load_all_model_configs
from clip_core.names import POINTER_TABLE_ENV, REQUIRE_IMAGE_DIGEST_ENV, endpoint_prefixes, is_model_endpoint
from promotion import lock
from promotion.plan import ADOPT_SPACE_KEY, SPACE_KEY, LiveState, PackageInfo, Plan, Settings, plan_promotion
from promotion.pointer import read_pointer

logger = Logger(service="clip-promotion-planner")


class PackageStateChange(BaseModel):
    ModelPackageArn: str
    ModelPackageGroupName: str
    ModelApprovalStatus: str


class ApprovalEvent(EventBridgeModel):
    detail: PackageStateChange


class PlanRequest(BaseModel):
    """What the workflow's Plan task sends: the approval event and which execution asks (the lock's owner)."""

    event: ApprovalEvent
    execution_id: str
    execution_start: datetime


def settings_from_env(env=os.environ) -> Settings:
    return Settings(
        role_arn=env["MODEL_EXECUTION_ROLE_ARN"],
        topic_arn=env["TOPIC_ARN"],
        pointer_table=env[POINTER_TABLE_ENV],
        poll_seconds=int(env.get("POLL_SECONDS", "30")),
        max_polls=int(env.get("MAX_POLLS", "40")),
        bake_seconds=int(env.get("BAKE_SECONDS", "300")),
        smoke_min_cosine=float(env.get("SMOKE_MIN_COSINE", "0.999")),
        require_image_digest=env.get(REQUIRE_IMAGE_DIGEST_ENV, "true") != "false",  # set only by local mode
    )


def config_for_group(group: str) -> ModelConfig:
    for config in load_all_model_configs():
        if config.registry.model_package_group == group:
            return config
    raise LookupError(f"no model config registers into model package group {group}")


def principal_of(identity_arn: str) -> str:
    """The role behind an assumed-role session ARN (a new session name is the same principal), else the ARN."""
    if ":assumed-role/" in identity_arn:
        prefix, rest = identity_arn.split(":assumed-role/", 1)
        return f"{prefix}:assumed-role/{rest.split('/', 1)[0]}"
    return identity_arn


def read_package(sagemaker, arn: str) -> PackageInfo:
    package = sagemaker.describe_model_package(ModelPackageName=arn)
    container = package["InferenceSpecification"]["Containers"][0]
    quality = package.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {}).get("S3Uri")
    metadata = package.get("CustomerMetadataProperties", {})
    return PackageInfo(
        arn=package["ModelPackageArn"],
        group=package["ModelPackageGroupName"],
        version=int(package["ModelPackageVersion"]),
        approval_status=package.get("ModelApprovalStatus", "Unknown"),
        image=container["Image"],
        model_data_url=container["ModelDataUrl"],
        model_quality_uri=quality,
        # an approval is a modification after registration: LastModifiedTime later than CreationTime
        modified_after_registration=bool(package.get("LastModifiedTime")) and package["LastModifiedTime"] > package["CreationTime"],
        container_environment=container.get("Environment", {}),
        registered_by=principal_of(package.get("CreatedBy", {}).get("IamIdentity", {}).get("Arn", "")),
        approved_by=(principal_of(package.get("LastModifiedBy", {}).get("IamIdentity", {}).get("Arn", ""))
                     or package.get("LastModifiedBy", {}).get("UserProfileName", "")),
        space=metadata.get(SPACE_KEY, ""),
        adopt_space=metadata.get(ADOPT_SPACE_KEY, ""),
    )


def read_live_state(dynamodb, sagemaker, config: ModelConfig, table: str) -> LiveState:
    pointer = read_pointer(dynamodb, table, config.model_id, consistent=True)
    prefixes = endpoint_prefixes(config.model_id)
    endpoints = {}
    for prefix in prefixes:
        for page in sagemaker.get_paginator("list_endpoints").paginate(NameContains=prefix):
            endpoints |= {e["EndpointName"]: e for e in page["Endpoints"] if is_model_endpoint(e["EndpointName"], prefixes)}
    names = tuple(name for name, e in sorted(endpoints.items(), key=lambda item: item[1]["CreationTime"]))
    return LiveState(pointer=pointer, endpoints=names)


def plan_for_event(event: ApprovalEvent, sagemaker, dynamodb, settings: Settings, execution_id: str, started_at: float | None = None,
                   now=time.time, stepfunctions=None) -> dict:
    """Take the model's promotion lock, then read and decide: a plan never races another promotion."""
    package = read_package(sagemaker, event.detail.ModelPackageArn)
    config = config_for_group(package.group)
    clock = now()
    deadline = (started_at if started_at is not None else clock) + lock.EXECUTION_LIMIT_S
    holder = lock.read_holder(dynamodb, settings.pointer_table, config.model_id)
    ended = (holder is not None and holder.owner != execution_id and holder.expires_at > clock and stepfunctions is not None
             and lock.execution_ended(stepfunctions, holder.owner))
    if ended:
        logger.info("taking over the promotion lock of an execution that has ended", extra={"previous_owner": holder.owner})
    decision = lock.decide(holder, execution_id, clock, deadline, holder_ended=ended)
    if decision == "acquire" and not lock.try_acquire(dynamodb, settings.pointer_table, config.model_id, execution_id, clock, deadline,
                                                      ended_owner=holder.owner if ended else None):
        decision = "wait"  # another promotion took it between the read and the write
    if decision != "acquire":
        owner = holder.owner if holder else "another promotion"
        action, reason = (("wait", f"another promotion of {config.model_id} ({owner}) is running: waiting for it to end")
                          if decision == "wait" else
                          ("skip", f"another promotion of {config.model_id} ({owner}) held the lock too long for this one to finish: approve again"))
        plan = Plan(action, reason, config.model_id, package.arn, package.version, {"wait_seconds": settings.poll_seconds}).to_dict()
    else:
        try:
            live = read_live_state(dynamodb, sagemaker, config, settings.pointer_table)
            plan = plan_promotion(config, package, live, settings, clock).to_dict()
        except Exception:
            lock.release(dynamodb, settings.pointer_table, config.model_id, execution_id)  # the workflow's failure path has no lock to release
            raise
        if plan["action"] != "promote":
            lock.release(dynamodb, settings.pointer_table, config.model_id, execution_id)
        # The bake counts the new endpoint's invocations from here: before the smoke test, wherever it runs.
        planned_at = datetime.fromtimestamp(int(clock), tz=timezone.utc).isoformat()
        plan.update(lock_key=lock.lock_key(config.model_id), lock_owner_values={":me": {"S": execution_id}}, planned_at=planned_at)
    logger.info("promotion planned", extra={"action": plan["action"], "reason": plan["reason"], "package_arn": package.arn})
    return plan


@logger.inject_lambda_context
@event_parser(model=PlanRequest)
def handler(request: PlanRequest, context: LambdaContext) -> dict:
    return plan_for_event(request.event, boto3.client("sagemaker"), boto3.client("dynamodb"), settings_from_env(),
                          request.execution_id, request.execution_start.timestamp(), stepfunctions=boto3.client("stepfunctions"))
