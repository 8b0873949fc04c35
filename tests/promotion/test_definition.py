"""The committed ASL: generated from the Python definition, valid for asl-validator and cfn-lint's schema."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from promotion.events import approval_event_pattern
from promotion.state_machine import ASL_PATH, render_asl, substitute

# asl-validator 4.0.0 and every transitive dependency, pinned with their integrity hashes: `npm ci` installs exactly the lock.
ASL_VALIDATOR_DIR = Path(__file__).with_name("asl_validator")


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
    assert switch["Parameters"]["ConditionExpression"] == (
        "attribute_not_exists(model_id) OR revision = :seen OR revision = :next OR (attribute_not_exists(revision) AND endpoint_name = :seen_endpoint)")
    assert states["RestorePrevious"]["Parameters"]["ConditionExpression"] == "revision = :ours OR revision = :restored"
    assert all(s.get("Resource", "").startswith("arn:${Partition}:states:::") for s in _tasks(asl))
    assert "ResultSelector" in states["DescribeEndpoint"]  # no raw timestamps in the execution state
    for name, state in states.items():
        if state["Type"] == "Task" and name not in ("RetireEndpoint", "RetireEndpointConfig", "RetireModel", "PutAlarm"):
            assert state.get("Catch") or name.startswith("Notify"), f"{name} has no failure path"


@pytest.fixture(scope="module")
def asl_validator(tmp_path_factory) -> Path:
    """The locked asl-validator, installed with `npm ci` (fails rather than resolve anything afresh)."""
    if shutil.which("npx") is None or shutil.which("npm") is None:
        pytest.skip("needs Node.js (npm, npx) for the asl-validator npm package")
    directory = tmp_path_factory.mktemp("asl-validator")
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(ASL_VALIDATOR_DIR / name, directory / name)
    result = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=directory, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return directory / "node_modules" / ".bin" / "asl-validator"


def test_asl_validator_accepts_it(tmp_path, asl_validator):
    """As deployed: the template's Fn::Sub fills the partition of the Task resource ARNs."""
    deployed = tmp_path / "promotion.asl.json"
    deployed.write_text(substitute(ASL_PATH.read_text(), {"Partition": "aws"}))
    result = subprocess.run([str(asl_validator), "--json-path", str(deployed)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_asl_validator_is_installed_from_a_committed_lock():
    """Every package npm installs is pinned to a version and an integrity hash (no range resolved at test time)."""
    manifest = json.loads((ASL_VALIDATOR_DIR / "package.json").read_text())
    assert manifest["dependencies"] == {"asl-validator": "4.0.0"}
    packages = json.loads((ASL_VALIDATOR_DIR / "package-lock.json").read_text())["packages"]
    installed = {path: entry for path, entry in packages.items() if path.startswith("node_modules/")}
    assert installed["node_modules/asl-validator"]["version"] == "4.0.0"
    assert [path for path, entry in installed.items() if not (entry.get("version") and entry.get("integrity", "").startswith("sha512-"))] == []


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
