"""Promotion decisions as plain functions: names, configs, alarms, what to retire, what to roll back to.

Nothing here calls AWS: the planner Lambda reads the current state, calls `plan_promotion`, and the
state machine executes the plan it returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from clip_core.model_config import ModelConfig
from clip_core.names import METRICS_NAMESPACE, METRICS_SERVICE, POINTER_TABLE, endpoint_stem
from inference_code.manifest import VALIDATED_MANIFEST_ENV
from promotion.pointer import SPACE_PATTERN, ServingPointer, SpaceRoute

# Model package metadata (CustomerMetadataProperties): the space the gate recorded at registration, and the
# approver's decision to move the stable URL to it. Only the pipeline writes the first, only a person the second.
SPACE_KEY, ADOPT_SPACE_KEY = "space", "adopt_space"
_NAME_LIMIT = 63


@dataclass(frozen=True)
class PackageInfo:
    arn: str
    group: str
    version: int
    approval_status: str
    image: str
    model_data_url: str
    model_quality_uri: str | None = None
    modified_after_registration: bool = True  # LastModifiedTime present: something changed it after CreateModelPackage
    registered_by: str = ""  # CreatedBy's IAM identity, where the registry records one
    approved_by: str = ""  # LastModifiedBy's IAM identity (or user profile): who made the approval
    container_environment: dict = field(default_factory=dict)  # the registered container's Environment
    space: str = ""  # the embedding space the gate recorded (CustomerMetadataProperties "space")
    adopt_space: str = ""  # set at approval to the package's own space: move the stable URL to it (issue 17)


@dataclass(frozen=True)
class LiveState:
    """What serves the model now (its serving pointer) and the model's endpoints."""

    pointer: ServingPointer
    endpoints: tuple[str, ...] = ()  # names of this model's existing endpoints, oldest first

    @property
    def endpoint(self) -> str | None:
        return self.pointer.endpoint_name or None

    @property
    def version(self) -> int | None:
        return self.pointer.version if self.pointer.endpoint_name else None


@dataclass(frozen=True)
class Settings:
    role_arn: str
    topic_arn: str
    pointer_table: str = POINTER_TABLE
    poll_seconds: int = 30
    max_polls: int = 40  # 20 minutes: serverless endpoints can take over 10 minutes
    bake_seconds: int = 300
    smoke_min_cosine: float = 0.999
    require_image_digest: bool = True  # off only in local mode, whose "image" is the repository's code run in-process


# `registry/repository@sha256:<64 hex>`: a digest names one image for ever; a tag can be moved to another.
IMAGE_DIGEST_PATTERN = re.compile(r"[^@\s]+@sha256:[0-9a-f]{64}")


def image_digest_problem(package: PackageInfo) -> str | None:
    """Why the package's container image is not pinned by digest, if it is not."""
    if IMAGE_DIGEST_PATTERN.fullmatch(package.image or ""):
        return None
    return (f"package {package.arn} names its image {package.image!r} by tag, not by digest (repository@sha256:...): "
            "what the gate validated could be replaced under the tag; register it through the pipeline, which CodeBuild gives the pushed digest")


STANDBY_SUFFIX = "-sb"


def resource_name(model_id: str, version: int) -> str:
    """Endpoint, endpoint config and model share one name per version: <endpoint stem>-v<version>, e.g. clip-vit-b-32-v3
    (short enough for its standby config, <name>-sb, to fit SageMaker's limit too)."""
    name = re.sub(r"[^a-zA-Z0-9-]", "-", f"{endpoint_stem(model_id)}-v{version}")
    if len(name) + len(STANDBY_SUFFIX) > _NAME_LIMIT:
        raise ValueError(f"{name}{STANDBY_SUFFIX} is longer than SageMaker's {_NAME_LIMIT} characters")
    return name


def standby_config(config: ModelConfig) -> dict | None:
    """The serverless config a replaced endpoint is kept on for rollback: the same, without provisioned
    concurrency (it costs by the hour and serves nobody). None when there is nothing to release."""
    serving = serverless_config(config)
    if "ProvisionedConcurrency" not in serving:
        return None
    return {key: value for key, value in serving.items() if key != "ProvisionedConcurrency"}


def serverless_config(config: ModelConfig) -> dict:
    spec = config.endpoint
    result = {"MemorySizeInMB": spec.memory_mb, "MaxConcurrency": spec.max_concurrency}
    if spec.provisioned_concurrency:
        result["ProvisionedConcurrency"] = spec.provisioned_concurrency
    return result


def alarm_specs(config: ModelConfig, endpoint: str, topic_arn: str) -> list[dict]:
    """PutMetricAlarm requests for one endpoint, all in the Metrics form so one workflow step puts any of them.

    SageMaker reports latencies in microseconds.
    """
    dimensions = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": "AllTraffic"}]
    alarms = config.alarms

    def alarm(suffix, metric, threshold, stat, namespace="AWS/SageMaker", dims=dimensions):
        return {
            "AlarmName": f"{endpoint}-{suffix}",
            "AlarmDescription": f"clip-embedding-api {config.model_id}: {suffix} on {endpoint}",
            "Metrics": [
                {
                    "Id": "m1",
                    "MetricStat": {"Metric": {"Namespace": namespace, "MetricName": metric, "Dimensions": dims}, "Period": 60, "Stat": stat},
                    "ReturnData": True,
                }
            ],
            "EvaluationPeriods": 1,
            "Threshold": float(threshold),
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [topic_arn] if topic_arn else [],
        }

    return [
        alarm("invocation-5xx", "Invocation5XXErrors", alarms.invocation_5xx_errors, "Sum"),
        alarm("invocation-4xx", "Invocation4XXErrors", alarms.invocation_4xx_errors, "Sum"),
        alarm("model-latency-p90", "ModelLatency", alarms.model_latency_p90_ms * 1000, "p90"),
        alarm("model-setup-time", "ModelSetupTime", alarms.model_setup_time_ms * 1000, "Maximum"),
        # Serverless endpoints publish no throttle metric of their own: the API Lambda counts them, with
        # exactly these dimensions (Powertools adds `service`; an alarm on `model` alone would see no data).
        alarm("throttles", "Throttles", alarms.throttles, "Sum", namespace=METRICS_NAMESPACE,
              dims=[{"Name": "model", "Value": config.model_id}, {"Name": "service", "Value": METRICS_SERVICE}]),
    ]


def alarm_names(config: ModelConfig, endpoint: str) -> list[str]:
    return [spec["AlarmName"] for spec in alarm_specs(config, endpoint, topic_arn="")]


def approval_problem(package: PackageInfo) -> str | None:
    """Why this Approved package's approval did not come from an approval in the registry, if it did not.

    The pipeline registers PendingManualApproval (and its role is denied anything else); a package
    that is Approved and was never modified after registration was created Approved, by someone
    who skipped the registry. One approved by the identity that registered it approved itself."""
    if not package.modified_after_registration:
        return f"package {package.arn} was registered as Approved: an approval must be made in the Model Registry after registration"
    if package.registered_by and package.approved_by == package.registered_by:
        return f"package {package.arn} was approved by the identity that registered it ({package.registered_by})"
    return None


def endpoints_to_retire(existing: tuple[str, ...], new_endpoint: str, previous_endpoint: str | None, keep_previous: int) -> list[str]:
    """After a successful switch: keep the new endpoint and the `keep_previous` most recent others."""
    others = [name for name in existing if name != new_endpoint]
    if previous_endpoint and previous_endpoint in others:
        others.remove(previous_endpoint)
        others.append(previous_endpoint)  # the one just replaced is the most recent rollback target
    kept = others[len(others) - keep_previous :] if keep_previous else []
    return [name for name in others if name not in kept]


@dataclass(frozen=True)
class SpaceDecision:
    """What a promotion does to the model's embedding spaces (issue 17).

    mode: "stable" (first deployment, or the serving space: the stable URL moves, and the new
    endpoint must agree with the one it replaces), "adopt" (another space, adopted by the flag
    recorded at approval: the stable URL moves, the old space is served to clients that pin it for
    the grace period), "own" (another space, no flag: the stable URL stays; clients that pin the new
    space get it)."""

    mode: str
    pointer: ServingPointer  # what SwitchTraffic writes
    compare_endpoint: str  # the endpoint whose embeddings the smoke test compares the new one's with
    require_agreement: bool  # same declared space: disagreement fails the promotion
    note: str


def decide_space(config: ModelConfig, package: PackageInfo, live: LiveState, name: str, now: float) -> SpaceDecision:
    current = live.pointer
    kept = {space: route for space, route in current.spaces.items() if not route.retired(now)}
    spaces = {**kept, package.space: SpaceRoute(name, package.version)}
    revision = current.revision + 1

    def stable_url_moves(routes: dict[str, SpaceRoute]) -> ServingPointer:
        return ServingPointer(config.model_id, name, package.version, package.arn, package.space, routes, revision)

    if not live.endpoint:
        return SpaceDecision("stable", stable_url_moves(spaces), "", False, "")
    old = current.space
    # an item from before spaces records none: the measured agreement decides, unless another space is adopted
    if package.space == old or (not old and package.adopt_space != package.space):
        return SpaceDecision("stable", stable_url_moves(spaces), live.endpoint, True, "")
    if package.adopt_space == package.space:
        until = int(now + config.endpoint.space_grace_days * 86400)
        # the old space is served to clients that pin it; an item from before spaces names none to pin (and
        # DynamoDB refuses an empty map key)
        pointer = stable_url_moves({**spaces, old: SpaceRoute(live.endpoint, live.version or 0, until)} if old else spaces)
        when = datetime.fromtimestamp(until, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        note = (f"the stable URL moves from embedding space {old or 'unrecorded'} to {package.space} (adopt_space recorded at approval by "
                f"{package.approved_by or 'unknown'}): vectors stored from space {old} do not match new queries, re-embed them; "
                f"clients that send X-Clip-Space: {old} are served by {live.endpoint} until {when}")
        return SpaceDecision("adopt", pointer, live.endpoint, False, note)
    sibling = kept.get(package.space)
    pointer = replace(current, spaces=spaces, revision=revision)
    note = (f"version {package.version} embeds in space {package.space}, not the stable URL's {old}: the stable URL stays on "
            f"{live.endpoint}; clients that send X-Clip-Space: {package.space} get version {package.version}. Consumers must re-embed "
            f"stored vectors to adopt it; to move the stable URL, approve a version of that space with metadata adopt_space={package.space}")
    return SpaceDecision("own", pointer, sibling.endpoint_name if sibling else live.endpoint, sibling is not None, note)


@dataclass(frozen=True)
class Plan:
    action: str  # "promote" | "skip" (notified) | "ignore" (nothing to do and nothing to say: a repeat of an event already handled)
    reason: str
    model_id: str
    package_arn: str
    version: int
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"action": self.action, "reason": self.reason, "model_id": self.model_id, "package_arn": self.package_arn,
                "version": self.version, **self.details}


def plan_promotion(config: ModelConfig, package: PackageInfo, live: LiveState, settings: Settings, now: float) -> Plan:
    name = resource_name(config.model_id, package.version)

    def skip(reason: str, action: str = "skip") -> Plan:
        return Plan(action, reason, config.model_id, package.arn, package.version, {"topic_arn": settings.topic_arn})

    if package.group != config.registry.model_package_group:
        return skip(f"package group {package.group} is not {config.model_id}'s ({config.registry.model_package_group})")
    # The workflow's own RecordLive/RecordRejected writes emit state-change events too: those end quietly.
    if name in live.pointer.served_endpoints():
        if package.adopt_space and name != live.endpoint:
            # adopt_space recorded after the version was approved and promoted to its own space: a new approval
            # event, but a decision this workflow cannot act on (it promotes new endpoints). Say so.
            return skip(f"version {package.version} already serves clients that pin space {package.space}; adopt_space recorded after "
                        "its approval does not move the stable URL: register the artifact again and approve the new version with adopt_space")
        return skip(f"version {package.version} is already serving on {name}", action="ignore")
    if name in live.endpoints:
        # This execution holds the model's lock: an endpoint of this version that does not serve is a leftover
        # (a crashed promotion, or one still being deleted). Say so: a person may need to clean it up.
        return skip(f"{name} exists but does not serve (a leftover of an earlier promotion of version {package.version}, or still "
                    "being deleted): delete it, or wait, then approve again")
    if package.approval_status != "Approved":
        return skip(f"package {package.arn} is {package.approval_status}, not Approved")
    if problem := approval_problem(package):
        return skip(problem)
    if not re.fullmatch(r"[0-9a-f]{64}", package.container_environment.get(VALIDATED_MANIFEST_ENV, "")):
        return skip(f"package {package.arn} records no validated manifest digest ({VALIDATED_MANIFEST_ENV}): register it through the pipeline, "
                    "whose gate records what the container will be held to")
    if settings.require_image_digest and (problem := image_digest_problem(package)):
        return skip(problem)
    if not SPACE_PATTERN.fullmatch(package.space):
        return skip(f"package {package.arn} records no embedding space (metadata 'space'): register it through the pipeline, whose gate records it")
    if package.adopt_space and package.adopt_space != package.space:
        return skip(f"package {package.arn} asks to adopt space {package.adopt_space!r} but embeds in {package.space}: "
                    "adopt_space must name the package's own space")
    if live.version is not None and package.version < live.version:
        return skip(f"version {package.version} is superseded: version {live.version} is already serving")
    sibling = live.pointer.spaces.get(package.space)
    if sibling and sibling.endpoint_name and package.version < sibling.version and not sibling.retired(now):
        return skip(f"version {package.version} is superseded: version {sibling.version} already serves space {package.space}")

    spaces = decide_space(config, package, live, name, now)
    still_served = spaces.pointer.served_endpoints()
    previous = live.endpoint
    retired = [endpoint for endpoint in endpoints_to_retire(live.endpoints, name, previous, config.endpoint.keep_previous_endpoints)
               if endpoint not in still_served]  # never an endpoint the pointer will still send traffic to
    smoke_uri = package.model_quality_uri.rsplit("/", 1)[0] + "/smoke_test.json" if package.model_quality_uri else None
    if spaces.mode == "own":
        summary = f"promote version {package.version} to {name} for clients that pin space {package.space}: {spaces.note}"
    else:
        summary = f"promote version {package.version} to {name}" + (f", replacing {previous}" if previous else " (first deployment)")
        summary += f": {spaces.note}" if spaces.note else ""
    seen = live.pointer
    previous_item = replace(seen, revision=seen.revision + 2)  # a restore is a write too: a plan that saw `seen` fails after it
    # Every endpoint the pointer sends traffic to has alarms; those it stops sending traffic to lose them.
    no_longer_served = sorted(seen.served_endpoints() - still_served)
    return Plan(
        "promote",
        summary,
        config.model_id,
        package.arn,
        package.version,
        {
            "model_name": name,
            "endpoint_config_name": name,
            "endpoint_name": name,
            "image": package.image,
            "model_data_url": package.model_data_url,
            # Only what the container is meant to read: a registered Environment cannot smuggle other settings in.
            "container_environment": {VALIDATED_MANIFEST_ENV: package.container_environment[VALIDATED_MANIFEST_ENV]},
            "role_arn": settings.role_arn,
            "serverless_config": serverless_config(config),
            "pointer_table": settings.pointer_table,
            "new_pointer": spaces.pointer.to_item(),
            "previous_pointer": previous_item.to_item(),
            # Compare-and-set on the revision: switch only if the pointer is still what this plan saw (an item
            # from before revisions: if it still names the endpoint seen); restore only if it is still ours.
            # (`:next`, `:restored`: a retry of a write that did land succeeds again instead of failing)
            "switch_condition_values": {":seen": {"N": str(seen.revision)}, ":seen_endpoint": {"S": seen.endpoint_name},
                                        ":next": {"N": str(spaces.pointer.revision)}},
            "restore_condition_values": {":ours": {"N": str(spaces.pointer.revision)}, ":restored": {"N": str(previous_item.revision)}},
            "space": package.space,
            "space_mode": spaces.mode,
            "compare_endpoint": spaces.compare_endpoint,
            "require_agreement": spaces.require_agreement,
            "min_agreement": config.space_agreement_threshold(),
            "previous_endpoint": previous or "",
            "has_previous_endpoint": bool(previous),
            "alarms": alarm_specs(config, name, settings.topic_arn),
            "alarm_names": alarm_names(config, name),
            "old_alarm_names": [alarm for endpoint in no_longer_served for alarm in alarm_names(config, endpoint)],
            "has_old_alarms": bool(no_longer_served),
            # Each retired endpoint takes its config, its model and (if it was kept on standby) its standby config.
            "retire_endpoints": [{"name": endpoint, "standby_config_name": f"{endpoint}{STANDBY_SUFFIX}"} for endpoint in retired],
            # After a successful bake the replaced endpoint stays for rollback (unless retired), without provisioned concurrency.
            # (not while it still serves the stable URL: a new version of another space left it there)
            "release_provisioned_concurrency": (bool(previous) and previous not in retired and previous != spaces.pointer.endpoint_name
                                                and standby_config(config) is not None),
            "standby_config_name": f"{previous}{STANDBY_SUFFIX}" if previous else "",
            "standby_serverless_config": standby_config(config) or {},
            "smoke_test_uri": smoke_uri or "",
            "approved_by": package.approved_by or "unknown",
            "smoke_min_cosine": settings.smoke_min_cosine,
            "poll_seconds": settings.poll_seconds,
            "max_polls": settings.max_polls,
            "bake_seconds": settings.bake_seconds,
            "topic_arn": settings.topic_arn,
        },
    )
