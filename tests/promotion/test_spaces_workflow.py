"""Embedding spaces through the committed ASL in moto's Step Functions engine (issue 17).

A promotion never moves the stable URL to another embedding space unless the approval recorded
`adopt_space`; a version of another space is served to clients that pin it; an adopted space's
predecessor keeps serving pinned clients until its grace period ends."""

from __future__ import annotations

import time

from promotion.pointer import SpaceRoute, route_space
from tests.promotion.conftest import SPACE_A, SPACE_B
from tests.promotion.test_workflow_under_moto import alarm_set

V = "clip-tiny-v{}".format
GRACE_S = 30 * 86400  # configs/models/clip-tiny.yaml: the default space_grace_days


def test_an_int8_build_of_the_same_weights_switches_the_stable_url(world):
    assert world.promote(world.register_version(space=SPACE_A))["status"] == "SUCCEEDED"
    result = world.promote(world.register_version(space=SPACE_A))  # same space: fp32 -> int8 of one set of weights
    assert result["status"] == "SUCCEEDED"
    assert result["plan"]["space_mode"] == "stable" and result["plan"]["require_agreement"] is True
    pointer = world.pointer()
    assert (pointer.endpoint_name, pointer.space, pointer.spaces) == (V(2), SPACE_A, {SPACE_A: SpaceRoute(V(2), 2)})


def test_other_weights_do_not_move_the_stable_url_and_are_served_at_their_own_space(world):
    assert world.promote(world.register_version(space=SPACE_A))["status"] == "SUCCEEDED"
    world.notifications()
    other = world.register_version(space=SPACE_B)  # another seed: another space
    result = world.promote(other)
    assert result["status"] == "SUCCEEDED", result
    pointer = world.pointer()
    assert (pointer.endpoint_name, pointer.space) == (V(1), SPACE_A)  # the stable URL stays
    assert route_space(pointer, SPACE_B, time.time()).endpoint_name == V(2)  # clients pinning the new space get it
    assert world.endpoints() == {V(1), V(2)} and world.alarms() == alarm_set(V(1)) | alarm_set(V(2))
    notes = world.notifications()
    assert [n["subject"] for n in notes] == ["clip-embedding-api promotion succeeded"]
    assert "re-embed" in notes[0]["message"] and f"adopt_space={SPACE_B}" in notes[0]["message"]
    recorded = world.sagemaker.describe_model_package(ModelPackageName=other)["CustomerMetadataProperties"]
    assert recorded["serving"] == "own" and recorded["space"] == SPACE_B


def test_with_the_recorded_flag_the_stable_url_moves_and_pinned_clients_keep_the_old_space_until_the_grace_ends(world):
    assert world.promote(world.register_version(space=SPACE_A))["status"] == "SUCCEEDED"
    adopted = world.register_version(space=SPACE_B, adopt_space=SPACE_B)
    started = time.time()
    result = world.promote(adopted)
    assert result["status"] == "SUCCEEDED", result
    pointer = world.pointer()
    assert (pointer.endpoint_name, pointer.space) == (V(2), SPACE_B)
    old = pointer.spaces[SPACE_A]
    assert old.endpoint_name == V(1) and started + GRACE_S - 5 <= old.retire_after <= time.time() + GRACE_S
    assert route_space(pointer, SPACE_A, old.retire_after - 1).endpoint_name == V(1)
    assert route_space(pointer, SPACE_A, old.retire_after).problem == "retired"
    assert V(1) in world.endpoints() and alarm_set(V(1)) <= world.alarms()  # still serving pinned clients
    assert "re-embed" in world.notifications()[-1]["message"]


def test_a_failed_promotion_of_another_space_restores_the_pointer_and_leaves_the_stable_url_alone(world):
    assert world.promote(world.register_version(space=SPACE_A))["status"] == "SUCCEEDED"
    before = world.pointer()
    alarm = world.alarm_fires_after_the_switch(V(2))
    result = world.promote(world.register_version(space=SPACE_B), during=alarm)
    assert alarm.fired and result["status"] == "FAILED" and "RestorePrevious" in result["history"]
    after = world.pointer()
    assert (after.endpoint_name, after.space, after.spaces) == (before.endpoint_name, before.space, before.spaces)
    assert after.revision == before.revision + 2  # the switch, then the restore
    assert world.endpoints() == {V(1)} and world.alarms() == alarm_set(V(1))


def test_a_version_declaring_the_serving_space_that_embeds_differently_is_rolled_back(world):
    assert world.promote(world.register_version(space=SPACE_A))["status"] == "SUCCEEDED"
    disagreeing = {"passed": False, "reason": "declares the embedding space of clip-tiny-v1 but agrees with it only to min cosine 0.41", "min_cosine": 1.0}
    result = world.promote(world.register_version(space=SPACE_A), smoke=disagreeing)
    assert result["status"] == "FAILED" and "SwitchTraffic" not in result["history"]
    assert world.serving_endpoint() == V(1) and world.endpoints() == {V(1)}
