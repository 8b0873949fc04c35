"""The committed ASL: generated from the Python definition, valid for asl-validator and cfn-lint's schema."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from promotion.events import approval_event_pattern
from promotion.state_machine import ASL_PATH, render_asl, substitute

ASL_VALIDATOR = "asl-validator@4.0.0"


def _tasks(asl: dict) -> list[dict]:
    found = []
    for state in asl["States"].values():
        if state["Type"] == "Task":
            found.append(state)
        for nested in (state.get("Iterator"), state.get("ItemProcessor")):
            if nested:
                found += _tasks(nested)
    return found


def test_committed_asl_matches_the_python_definition():
    assert ASL_PATH.read_text() == render_asl(), "promotion.asl.json drifted: run `python -m promotion.state_machine`"


def test_asl_shape():
    asl = json.loads(ASL_PATH.read_text())
    states = asl["States"]
    assert asl["StartAt"] == "Plan" and asl["TimeoutSeconds"] == 7200
    assert states["CreateEndpointConfig"]["Parameters"]["ProductionVariants"][0]["ServerlessConfig.$"] == "$.plan.serverless_config"
    assert states["EndpointReady"]["Choices"][-1]["NumericGreaterThanEqualsPath"] == "$.plan.max_polls"  # bounded loop
    switch = states["SwitchTraffic"]
    assert switch["Resource"] == "arn:${Partition}:states:::dynamodb:putItem"  # the serving pointer, never a function's environment
    assert switch["Parameters"]["ConditionExpression"] == "attribute_not_exists(model_id) OR endpoint_name = :seen"
    assert all(s.get("Resource", "").startswith("arn:${Partition}:states:::") for s in _tasks(asl))
    assert "ResultSelector" in states["DescribeEndpoint"]  # no raw timestamps in the execution state
    for name, state in states.items():
        if state["Type"] == "Task" and name not in ("RetireEndpoint", "RetireEndpointConfig", "RetireModel", "PutAlarm"):
            assert state.get("Catch") or name.startswith("Notify"), f"{name} has no failure path"


@pytest.mark.skipif(shutil.which("npx") is None, reason="needs Node.js (npx) for the asl-validator npm package")
def test_asl_validator_accepts_it(tmp_path):
    """As deployed: the template's Fn::Sub fills the partition of the Task resource ARNs."""
    deployed = tmp_path / "promotion.asl.json"
    deployed.write_text(substitute(ASL_PATH.read_text(), {"Partition": "aws"}))
    result = subprocess.run(["npx", "--yes", ASL_VALIDATOR, "--json-path", str(deployed)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_accepts_it_inside_a_state_machine_resource(tmp_path):
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {"Plan": {"Type": "String"}, "Smoke": {"Type": "String"}, "Topic": {"Type": "String"}, "Role": {"Type": "String"}},
        "Resources": {
            "Promotion": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "RoleArn": {"Ref": "Role"},
                    # cfn-lint's schema only knows Task resources of the standard partition
                    "Definition": json.loads(substitute(ASL_PATH.read_text(), {"Partition": "aws"})),
                    "DefinitionSubstitutions": {"PlanFunctionArn": {"Ref": "Plan"}, "SmokeTestFunctionArn": {"Ref": "Smoke"}, "TopicArn": {"Ref": "Topic"}},
                },
            }
        },
    }
    path = tmp_path / "state-machine.yaml"
    path.write_text(yaml.safe_dump(template))
    result = subprocess.run(["cfn-lint", str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_eventbridge_pattern_matches_only_our_approvals():
    """moto 5.2.5's TestEventPattern API answers nothing, so this uses the matcher its event bus routes with."""
    from moto.events.models import EventPattern

    pattern = EventPattern.load(json.dumps(approval_event_pattern(["clip-vit-b-32", "clip-vit-l-14"])))
    base = json.loads((ASL_PATH.parent.parent / "tests" / "events" / "model_package_approved.json").read_text())

    def matches(**detail) -> bool:
        return pattern.matches_event({**base, "detail": {**base["detail"], **detail}})

    assert matches(ModelPackageGroupName="clip-vit-b-32")
    assert not matches(ModelPackageGroupName="clip-vit-b-32", ModelApprovalStatus="Rejected")
    assert not matches(ModelPackageGroupName="clip-vit-b-32", ModelApprovalStatus="PendingManualApproval")
    assert not matches(ModelPackageGroupName="somebody-elses-models")
