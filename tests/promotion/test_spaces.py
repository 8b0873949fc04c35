"""Embedding spaces in the promotion plan and the pointer's routing, as plain functions (issue 17)."""

from __future__ import annotations

import dataclasses

import pytest

from promotion.plan import LiveState, plan_promotion
from promotion.pointer import ServingPointer, SpaceRoute, route_space
from tests.promotion.test_plan import NOW, SETTINGS, package

A, B = "aaaaaaaaaaaa", "bbbbbbbbbbbb"
V = "clip-vit-b-32-v{}".format
DAY = 86400


def serving(version: int, space: str = A, spaces: dict | None = None, endpoints=None, revision: int = 3) -> LiveState:
    pointer = ServingPointer("clip-vit-b-32", V(version), version, f"arn/{version}", space,
                             spaces if spaces is not None else {space: SpaceRoute(V(version), version)}, revision)
    return LiveState(pointer, tuple(endpoints or [V(version)]))


def plan_for(version: int, space: str, live: LiveState, adopt: str = "", config=None) -> dict:
    pkg = dataclasses.replace(package(version), space=space, adopt_space=adopt)
    return plan_promotion(config, pkg, live, SETTINGS, NOW).to_dict()


def written(plan: dict) -> ServingPointer:
    return ServingPointer.from_item("clip-vit-b-32", plan["new_pointer"])


def test_a_version_of_the_serving_space_moves_the_stable_url_and_must_agree_with_the_one_it_replaces(b32_config):
    plan = plan_for(2, A, serving(1), config=b32_config)
    pointer = written(plan)
    assert (pointer.endpoint_name, pointer.space, pointer.spaces, pointer.revision) == (V(2), A, {A: SpaceRoute(V(2), 2)}, 4)
    assert (plan["space_mode"], plan["compare_endpoint"], plan["require_agreement"]) == ("stable", V(1), True)
    assert plan["min_agreement"] == pytest.approx(2 * 0.998**2 - 1)  # int8's parity threshold, twice the angle
    assert plan["switch_condition_values"][":seen"] == {"N": "3"} and plan["switch_condition_values"][":next"] == {"N": "4"}
    assert plan["restore_condition_values"] == {":ours": {"N": "4"}, ":restored": {"N": "5"}}


def test_a_version_of_another_space_leaves_the_stable_url_and_gets_its_own(b32_config):
    plan = plan_for(2, B, serving(1), config=b32_config)
    pointer = written(plan)
    assert (pointer.endpoint_name, pointer.version, pointer.space) == (V(1), 1, A)  # the stable URL does not move
    assert pointer.spaces == {A: SpaceRoute(V(1), 1), B: SpaceRoute(V(2), 2)}
    assert (plan["space_mode"], plan["compare_endpoint"], plan["require_agreement"]) == ("own", V(1), False)
    assert "re-embed" in plan["reason"] and f"X-Clip-Space: {B}" in plan["reason"] and f"adopt_space={B}" in plan["reason"]
    # the stable endpoint keeps its alarms and its provisioned concurrency, and is never retired
    assert plan["old_alarm_names"] == [] and plan["has_old_alarms"] is False
    assert plan["release_provisioned_concurrency"] is False and plan["retire_endpoints"] == []


def test_adopting_another_space_moves_the_stable_url_and_serves_the_old_space_for_the_grace_period(b32_config):
    b32_config = b32_config.model_copy(update={"endpoint": b32_config.endpoint.model_copy(update={"keep_previous_endpoints": 0})})
    plan = plan_for(2, B, serving(1), adopt=B, config=b32_config)
    pointer = written(plan)
    assert (pointer.endpoint_name, pointer.space) == (V(2), B)
    assert pointer.spaces == {A: SpaceRoute(V(1), 1, NOW + 30 * DAY), B: SpaceRoute(V(2), 2)}
    assert plan["space_mode"] == "adopt" and "re-embed" in plan["reason"] and "until" in plan["reason"]
    # kept although keep_previous_endpoints is 0: pinned clients are served by it; and it keeps its alarms
    assert plan["retire_endpoints"] == [] and plan["old_alarm_names"] == []
    assert plan["release_provisioned_concurrency"] is True  # serves pinned clients only: no provisioned concurrency


def test_after_the_grace_period_the_old_space_is_dropped_retired_and_its_alarms_deleted(b32_config):
    b32_config = b32_config.model_copy(update={"endpoint": b32_config.endpoint.model_copy(update={"keep_previous_endpoints": 0})})
    spaces = {A: SpaceRoute(V(1), 1, NOW - 1), B: SpaceRoute(V(2), 2)}
    plan = plan_for(3, B, serving(2, B, spaces, endpoints=[V(1), V(2)]), config=b32_config)
    assert written(plan).spaces == {B: SpaceRoute(V(3), 3)}
    assert {entry["name"] for entry in plan["retire_endpoints"]} == {V(1), V(2)}
    assert {name.rsplit("-", 1)[0] for name in plan["old_alarm_names"]} >= {V(1), V(2)}


def test_a_second_version_of_a_pinned_space_replaces_it_there_and_must_agree_with_it(b32_config):
    spaces = {A: SpaceRoute(V(1), 1), B: SpaceRoute(V(2), 2)}
    plan = plan_for(3, B, serving(1, A, spaces, endpoints=[V(1), V(2)]), config=b32_config)
    assert written(plan).endpoint_name == V(1) and written(plan).spaces[B] == SpaceRoute(V(3), 3)
    assert (plan["compare_endpoint"], plan["require_agreement"]) == (V(2), True)
    assert V(1) not in {entry["name"] for entry in plan["retire_endpoints"]}


@pytest.mark.parametrize("space, adopt, why", [
    ("", "", "records no embedding space"),
    ("not-a-space!", "", "records no embedding space"),
    (B, A, "adopt_space must name the package's own space"),
])
def test_packages_without_a_space_or_adopting_another_are_skipped(b32_config, space, adopt, why):
    plan = plan_for(2, space, serving(1), adopt=adopt, config=b32_config)
    assert plan["action"] == "skip" and why in plan["reason"]


def test_an_older_version_of_a_pinned_space_is_superseded(b32_config):
    spaces = {A: SpaceRoute(V(3), 3), B: SpaceRoute(V(5), 5)}
    plan = plan_for(4, B, serving(3, A, spaces, endpoints=[V(3), V(5)]), config=b32_config)
    assert plan["action"] == "skip" and "superseded" in plan["reason"]


def test_requests_route_to_the_space_they_pin():
    pointer = ServingPointer("m", V(2), 2, "arn", B, {A: SpaceRoute(V(1), 1, NOW + DAY), B: SpaceRoute(V(2), 2), "cccccccccccc": SpaceRoute(V(0), 0, NOW - 1)})
    assert route_space(pointer, None, NOW).endpoint_name == V(2)
    assert route_space(pointer, B, NOW).endpoint_name == V(2)
    assert route_space(pointer, A, NOW).endpoint_name == V(1)
    assert route_space(pointer, A, NOW + DAY).problem == "retired"
    assert route_space(pointer, "cccccccccccc", NOW).problem == "retired"
    unknown = route_space(pointer, "dddddddddddd", NOW)
    assert unknown.problem == "unavailable" and unknown.available == (A, B)


def test_a_pointer_from_before_spaces_can_adopt_one_with_the_flag(b32_config):
    legacy = LiveState(ServingPointer("clip-vit-b-32", V(1), 1, "arn/1"), (V(1),))  # no space, no revision recorded
    assert plan_for(2, B, legacy, config=b32_config)["space_mode"] == "stable"  # without the flag: agreement decides
    plan = plan_for(2, B, legacy, adopt=B, config=b32_config)
    assert plan["space_mode"] == "adopt" and plan["require_agreement"] is False and written(plan).endpoint_name == V(2)
    assert written(plan).spaces == {B: SpaceRoute(V(2), 2)}  # no route for an unrecorded space: nobody can pin it


def test_adopt_space_recorded_after_a_version_got_its_own_space_is_said_not_ignored(b32_config):
    spaces = {A: SpaceRoute(V(1), 1), B: SpaceRoute(V(2), 2)}
    plan = plan_for(2, B, serving(1, A, spaces, endpoints=[V(1), V(2)]), adopt=B, config=b32_config)
    assert plan["action"] == "skip" and "register the artifact again" in plan["reason"]
    assert plan_for(2, B, serving(1, A, spaces, endpoints=[V(1), V(2)]), config=b32_config)["action"] == "ignore"  # a plain repeat stays quiet
