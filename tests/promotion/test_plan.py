"""Promotion decisions as plain functions."""

from __future__ import annotations

import pytest

from promotion.plan import (
    LiveState,
    PackageInfo,
    Settings,
    alarm_specs,
    endpoints_to_retire,
    plan_promotion,
    resource_name,
    serverless_config,
)
from promotion.pointer import ServingPointer, SpaceRoute

NOW = 1_800_000_000  # 2027-01-15
SPACE = "0123456789ab"
SETTINGS = Settings(role_arn="arn:aws:iam::1:role/sm", topic_arn="arn:aws:sns:us-east-1:1:t", poll_seconds=30, max_polls=40, bake_seconds=300)


def package(version=2, status="Approved", group="clip-vit-b-32"):
    return PackageInfo(arn=f"arn:aws:sagemaker:us-east-1:1:model-package/{group}/{version}", group=group, version=version,
                       approval_status=status, image="1.dkr.ecr.us-east-1.amazonaws.com/clip-embedding-api-serve@sha256:" + "ab" * 32, model_data_url="s3://b/model.tar.gz",
                       model_quality_uri="s3://b/run/evaluation/model_quality.json", container_environment={"CLIP_API_MANIFEST_SHA256": "cd" * 32}, space=SPACE)


def live(endpoint="", version=None, endpoints=()):
    pointer = ServingPointer("clip-vit-b-32", endpoint, version or 0, f"arn:aws:sagemaker:us-east-1:1:model-package/clip-vit-b-32/{version}" if version else "")
    return LiveState(pointer, tuple(endpoints))


def test_names_are_per_version_and_within_sagemaker_limits():
    assert resource_name("clip-vit-b-32", 7) == "clip-vit-b-32-v7"
    with pytest.raises(ValueError):
        resource_name("x" * 70, 1)


def test_serverless_config_from_the_model_config(b32_config):
    assert serverless_config(b32_config) == {"MemorySizeInMB": 4096, "MaxConcurrency": 20, "ProvisionedConcurrency": 1}


def test_first_deployment_plan(b32_config):
    plan = plan_promotion(b32_config, package(1), live(), SETTINGS, NOW).to_dict()
    assert plan["action"] == "promote" and "first deployment" in plan["reason"]
    assert plan["endpoint_name"] == plan["model_name"] == plan["endpoint_config_name"] == "clip-vit-b-32-v1"
    assert ServingPointer.from_item("clip-vit-b-32", plan["new_pointer"]) == ServingPointer(
        "clip-vit-b-32", "clip-vit-b-32-v1", 1, "arn:aws:sagemaker:us-east-1:1:model-package/clip-vit-b-32/1", SPACE,
        {SPACE: SpaceRoute("clip-vit-b-32-v1", 1)}, revision=1)
    assert plan["previous_pointer"]["endpoint_name"] == {"S": ""}  # a rollback leaves nothing serving, as before
    assert plan["previous_pointer"]["revision"] == {"N": "2"}  # ... and is a write of its own: a plan that saw 0 or 1 fails after it
    assert plan["switch_condition_values"] == {":seen": {"N": "0"}, ":seen_endpoint": {"S": ""}, ":next": {"N": "1"}}
    assert plan["restore_condition_values"] == {":ours": {"N": "1"}, ":restored": {"N": "2"}}
    assert plan["compare_endpoint"] == "" and plan["space_mode"] == "stable"
    assert plan["old_alarm_names"] == [] and plan["has_previous_endpoint"] is False and plan["retire_endpoints"] == []
    assert plan["smoke_test_uri"] == "s3://b/run/evaluation/smoke_test.json"
    assert len(plan["alarms"]) == 5 and plan["alarm_names"] == [a["AlarmName"] for a in plan["alarms"]]


def test_replacement_plan_rolls_back_to_the_previous_endpoint(b32_config):
    current = "clip-vit-b-32-v1"
    plan = plan_promotion(b32_config, package(2), live(current, 1, [current]), SETTINGS, NOW).to_dict()
    assert plan["action"] == "promote" and plan["previous_endpoint"] == current
    assert ServingPointer.from_item("clip-vit-b-32", plan["previous_pointer"]).endpoint_name == current
    # compare-and-set against what the plan saw (an item from before revisions: its endpoint)
    assert plan["switch_condition_values"] == {":seen": {"N": "0"}, ":seen_endpoint": {"S": current}, ":next": {"N": "1"}}
    assert plan["old_alarm_names"][0].startswith(current) and plan["has_old_alarms"] is True
    # the pointer recorded no space: the new endpoint must agree with the one it replaces
    assert (plan["compare_endpoint"], plan["require_agreement"], plan["space_mode"]) == (current, True, "stable")


@pytest.mark.parametrize(
    "pkg, state, reason",
    [
        (package(1), live("clip-vit-b-32-v2", 2, ["clip-vit-b-32-v2"]), "superseded"),
        (package(3, status="Rejected"), live(), "not Approved"),
        (package(3, group="someone-else"), live(), "is not clip-vit-b-32's"),
        # under the model's lock, an endpoint of this version that does not serve is a leftover: said, not ignored
        (package(3), live("clip-vit-b-32-v2", 2, ["clip-vit-b-32-v2", "clip-vit-b-32-v3"]), "leftover"),
    ],
)
def test_skips(b32_config, pkg, state, reason):
    plan = plan_promotion(b32_config, pkg, state, SETTINGS, NOW)
    assert plan.action == "skip" and reason in plan.reason


@pytest.mark.parametrize(
    "pkg, state, reason",
    [
        (package(2), live("clip-vit-b-32-v2", 2, ["clip-vit-b-32-v2"]), "already serving"),
    ],
)
def test_repeats_of_handled_events_are_ignored_quietly(b32_config, pkg, state, reason):
    """RecordLive's own UpdateModelPackage emits another approval event: it must not mail anyone."""
    plan = plan_promotion(b32_config, pkg, state, SETTINGS, NOW)
    assert plan.action == "ignore" and reason in plan.reason


@pytest.mark.parametrize(
    "existing, new, previous, keep, retired",
    [
        ((), "v1", None, 1, []),
        (("v1",), "v2", "v1", 1, []),
        (("v1", "v2"), "v3", "v2", 1, ["v1"]),
        (("v1", "v2", "v3"), "v4", "v3", 2, ["v1"]),
        (("v1", "v2"), "v3", "v2", 0, ["v1", "v2"]),
        (("v2", "v1"), "v3", "v1", 1, ["v2"]),  # the endpoint being replaced is kept, whatever its age
    ],
)
def test_endpoints_to_retire(existing, new, previous, keep, retired):
    assert endpoints_to_retire(existing, new, previous, keep) == retired


def test_alarm_thresholds_come_from_config_in_cloudwatch_units(b32_config):
    specs = {a["AlarmName"].rsplit("-v1-", 1)[1]: a for a in alarm_specs(b32_config, "clip-vit-b-32-v1", "arn:topic")}
    latency = specs["model-latency-p90"]
    assert latency["Threshold"] == b32_config.alarms.model_latency_p90_ms * 1000  # microseconds
    assert latency["Metrics"][0]["MetricStat"]["Stat"] == "p90"
    assert specs["invocation-5xx"]["Metrics"][0]["MetricStat"]["Metric"]["MetricName"] == "Invocation5XXErrors"
    assert specs["throttles"]["Metrics"][0]["MetricStat"]["Metric"]["Namespace"] == "ClipEmbeddingApi"
    assert all(a["AlarmActions"] == ["arn:topic"] for a in specs.values())


def test_a_replaced_endpoint_gives_up_its_provisioned_concurrency(b32_config):
    current = "clip-vit-b-32-v1"
    first = plan_promotion(b32_config, package(1), live(), SETTINGS, NOW).to_dict()
    assert first["release_provisioned_concurrency"] is False  # nothing replaced
    plan = plan_promotion(b32_config, package(2), live(current, 1, [current]), SETTINGS, NOW).to_dict()
    assert plan["release_provisioned_concurrency"] is True and plan["standby_config_name"] == f"{current}-sb"
    assert plan["standby_serverless_config"] == {"MemorySizeInMB": 4096, "MaxConcurrency": 20}
    without = b32_config.model_copy(update={"endpoint": b32_config.endpoint.model_copy(update={"provisioned_concurrency": None})})
    assert plan_promotion(without, package(2), live(current, 1, [current]), SETTINGS, NOW).to_dict()["release_provisioned_concurrency"] is False


def test_names_leave_room_for_the_standby_suffix():
    assert len(resource_name("m" * 52, 1) + "-sb") == 63  # SageMaker's limit, exactly
    with pytest.raises(ValueError):
        resource_name("m" * 53, 1)


@pytest.mark.parametrize(
    "modified, registered_by, approved_by, refused",
    [
        (True, "", "", None),  # approved in the registry (moto records no identities)
        (True, "arn:aws:sts::1:assumed-role/pipeline/x", "arn:aws:sts::1:assumed-role/Admin/alice", None),
        (False, "", "", "registered as Approved"),  # created Approved: nobody approved it in the registry
        (True, "arn:aws:sts::1:assumed-role/pipeline/x", "arn:aws:sts::1:assumed-role/pipeline/x", "approved by the identity that registered it"),
    ],
)
def test_an_approval_must_come_from_the_registry(b32_config, modified, registered_by, approved_by, refused):
    from dataclasses import replace

    pkg = replace(package(2), modified_after_registration=modified, registered_by=registered_by, approved_by=approved_by)
    plan = plan_promotion(b32_config, pkg, live(), SETTINGS, NOW)
    if refused:
        assert plan.action == "skip" and refused in plan.reason
    else:
        assert plan.action == "promote" and plan.to_dict()["approved_by"] == (approved_by or "unknown")



def test_a_package_without_the_validated_manifest_digest_is_not_promoted(b32_config):
    """The container checks the artifact against the digest the gate recorded: without one, nothing ties what runs to what was validated."""
    from dataclasses import replace

    for environment in ({}, {"CLIP_API_MANIFEST_SHA256": "not-a-digest"}):
        plan = plan_promotion(b32_config, replace(package(2), container_environment=environment), live(), SETTINGS, NOW)
        assert plan.action == "skip" and "validated manifest digest" in plan.reason
    plan = plan_promotion(b32_config, package(2), live(), SETTINGS, NOW).to_dict()
    assert plan["container_environment"] == {"CLIP_API_MANIFEST_SHA256": "cd" * 32}  # CreateModel passes it on



def test_a_previous_endpoint_about_to_be_retired_keeps_its_configuration(b32_config):
    """With keep_previous_endpoints=0 the replaced endpoint is deleted in the same run: moving it to a standby config would race that."""
    current = "clip-vit-b-32-v1"
    keep_none = b32_config.model_copy(update={"endpoint": b32_config.endpoint.model_copy(update={"keep_previous_endpoints": 0})})
    plan = plan_promotion(keep_none, package(2), live(current, 1, [current]), SETTINGS, NOW).to_dict()
    assert [r["name"] for r in plan["retire_endpoints"]] == [current] and plan["release_provisioned_concurrency"] is False


def test_only_the_validated_digest_reaches_the_container(b32_config):
    from dataclasses import replace

    smuggled = {"CLIP_API_MANIFEST_SHA256": "cd" * 32, "LD_PRELOAD": "/tmp/x.so", "OMP_NUM_THREADS": "64"}
    plan = plan_promotion(b32_config, replace(package(2), container_environment=smuggled), live(), SETTINGS, NOW).to_dict()
    assert plan["container_environment"] == {"CLIP_API_MANIFEST_SHA256": "cd" * 32}


def test_endpoint_names_do_not_repeat_the_prefix_and_earlier_names_are_still_found():
    from clip_core.names import endpoint_prefixes, is_model_endpoint

    assert resource_name("clip-tiny", 1) == "clip-tiny-v1" and resource_name("tiny", 1) == "clip-tiny-v1"
    prefixes = endpoint_prefixes("clip-tiny")
    assert is_model_endpoint("clip-tiny-v2", prefixes) and is_model_endpoint("clip-clip-tiny-v1", prefixes)  # an earlier release's
    assert not is_model_endpoint("clip-tiny-v2-v1", prefixes) and not is_model_endpoint("clip-tiny-v", prefixes)  # model clip-tiny-v2's


def test_models_whose_endpoint_names_would_collide_are_refused(tmp_path):
    import shutil

    from clip_core.model_config import load_all_model_configs
    from clip_core.paths import MODEL_CONFIGS_DIR

    shutil.copy(MODEL_CONFIGS_DIR / "clip-tiny.yaml", tmp_path / "clip-tiny.yaml")
    assert [c.model_id for c in load_all_model_configs(tmp_path)] == ["clip-tiny"]
    (tmp_path / "tiny.yaml").write_text((tmp_path / "clip-tiny.yaml").read_text().replace("model_id: clip-tiny", "model_id: tiny"))
    with pytest.raises(ValueError, match="name their endpoints alike"):
        load_all_model_configs(tmp_path)
