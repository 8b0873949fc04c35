"""A package is promoted only if it names its image by digest: a tag can be moved to another image after validation."""

from __future__ import annotations

import dataclasses

import pytest

from promotion.plan import plan_promotion
from tests.promotion.test_plan import NOW, SETTINGS, live, package

REPOSITORY = "111122223333.dkr.ecr.us-east-1.amazonaws.com/clip-embedding-api-serve"


@pytest.mark.parametrize("image", [f"{REPOSITORY}:abc1234", f"{REPOSITORY}:latest", f"{REPOSITORY}@sha256:abc", f"{REPOSITORY}", ""])
def test_a_package_whose_image_is_a_tag_is_refused(b32_config, image):
    plan = plan_promotion(b32_config, dataclasses.replace(package(), image=image), live(), SETTINGS, NOW)
    assert plan.action == "skip" and "by tag, not by digest" in plan.reason


def test_a_package_pinned_by_digest_is_promoted_with_that_digest(b32_config):
    pinned = f"{REPOSITORY}@sha256:" + "0f" * 32
    plan = plan_promotion(b32_config, dataclasses.replace(package(), image=pinned), live(), SETTINGS, NOW)
    assert plan.action == "promote" and plan.details["image"] == pinned


def test_only_local_mode_turns_the_check_off():
    """Deployed, the planner's environment never sets REQUIRE_IMAGE_DIGEST: the check is on."""
    from clip_core.names import PLANNER_FUNCTION
    from infra.stacks import templates
    from clip_lambdas.promotion_planner.app import settings_from_env

    env = {"MODEL_EXECUTION_ROLE_ARN": "arn:aws:iam::1:role/r", "TOPIC_ARN": "arn:aws:sns:us-east-1:1:t", "SERVING_POINTER_TABLE": "t"}
    from clip_core.names import POINTER_TABLE_ENV as TABLE_ENV

    env[TABLE_ENV] = "t"
    assert settings_from_env(env).require_image_digest is True
    assert settings_from_env({**env, "REQUIRE_IMAGE_DIGEST": "false"}).require_image_digest is False
    serving = templates()["serving.yaml"]["Resources"]
    planner = next(r for r in serving.values() if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("FunctionName") == PLANNER_FUNCTION)
    assert "REQUIRE_IMAGE_DIGEST" not in planner["Properties"]["Environment"]["Variables"]
