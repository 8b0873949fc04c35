"""The committed ASL: generated from the Python definition, valid for asl-validator and cfn-lint's schema."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from promotion.events import approval_event_pattern
from promotion import state_machine
from promotion.state_machine import render_asl
from promotion.workflow_asl import ASL_PATH, substitute

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


PHASE_OF = {name: phase.__name__ for phase in state_machine.PHASES for name in phase()}
ROLL_BACK_ENTRIES = {state_machine.ROLL_BACK, state_machine.CLEAN_UP, state_machine.GIVE_UP}


def _transitions(state: dict) -> list[str]:
    return ([state["Next"]] if "Next" in state else []) + [rule["Next"] for rule in state.get("Choices", [])] + \
        ([state["Default"]] if "Default" in state else []) + [catch["Next"] for catch in state.get("Catch", [])]


def test_the_phases_are_written_in_the_order_they_run():
    """A state leads only into its own phase, to the start of a later one, or into the roll back's entries."""
    order = [phase.__name__ for phase in state_machine.PHASES]
    assert order == ["plan", "create", "wait", "smoke", "switch", "bake", "finish", "roll_back"]
    starts = {phase.__name__: next(iter(phase())) for phase in state_machine.PHASES}
    definition = state_machine.build_definition()
    assert definition["StartAt"] == starts["plan"] and list(definition["States"]) == list(PHASE_OF)
    for name, state in definition["States"].items():
        for target in _transitions(state):
            here, there = order.index(PHASE_OF[name]), order.index(PHASE_OF[target])
            assert there >= here, f"{name} ({PHASE_OF[name]}) goes back to {target} ({PHASE_OF[target]})"
            if there > here:
                assert target == starts[PHASE_OF[target]] or target in ROLL_BACK_ENTRIES, f"{name} enters {PHASE_OF[target]} at {target}"


def _lookup(data: dict, path: str):
    for key in path.removeprefix("$.").split("."):
        data = data[key]
    return data


def _chosen(state: dict, data: dict) -> str:
    for rule in state["Choices"]:
        value = _lookup(data, rule["Variable"])
        if "StringEquals" in rule:
            hit = value == rule["StringEquals"]
        elif "BooleanEquals" in rule:
            hit = value is rule["BooleanEquals"]
        elif "NumericGreaterThan" in rule:
            hit = value > rule["NumericGreaterThan"]
        elif "NumericGreaterThanEqualsPath" in rule:
            hit = value >= _lookup(data, rule["NumericGreaterThanEqualsPath"])
        else:
            raise AssertionError(f"a rule this walk cannot read: {rule}")
        if hit:
            return rule["Next"]
    return state["Default"]


def _walk(fail_at: str | None = None, **overrides) -> list[str]:
    """The committed ASL's path for one outcome: Choices read `data`, Tasks succeed except `fail_at` (States.ALL)."""
    data = {"plan": {"action": "promote", "max_polls": 3, "has_old_alarms": True, "release_provisioned_concurrency": True},
            "polls": {"count": 0}, "endpoint": {"status": "InService"}, "smoke": {"passed": True},
            "traffic": {"datapoints": 2}, "bake": {"firing": False}}
    for path, value in overrides.items():
        section, key = path.split("__")
        data[section][key] = value
    asl = json.loads(ASL_PATH.read_text())
    states, name, visited = asl["States"], asl["StartAt"], []
    while name:
        assert len(visited) < 100, visited
        visited.append(name)
        state = states[name]
        if name == fail_at:
            name = next(catch["Next"] for catch in state["Catch"] if catch["ErrorEquals"] == ["States.ALL"])
        elif state["Type"] == "Choice":
            name = _chosen(state, data)
        else:
            name = state.get("Next")
    return visited


def _phases(visited: list[str]) -> list[str]:
    phases = [PHASE_OF[name] for name in visited]
    return [phase for i, phase in enumerate(phases) if i == 0 or phase != phases[i - 1]]


@pytest.mark.parametrize("outcome, phases, end", [
    ({}, ["plan", "create", "wait", "smoke", "switch", "bake", "finish"], "Promoted"),
    ({"bake__firing": True}, ["plan", "create", "wait", "smoke", "switch", "bake", "roll_back"], "PromotionFailed"),
    ({"fail_at": "SwitchTraffic"}, ["plan", "create", "wait", "smoke", "switch", "roll_back"], "PromotionFailed"),
    ({"smoke__passed": False}, ["plan", "create", "wait", "smoke", "roll_back"], "PromotionFailed"),
    ({"endpoint__status": "Creating", "polls__count": 3}, ["plan", "create", "wait", "roll_back"], "PromotionFailed"),
    ({"fail_at": "CreateModel"}, ["plan", "create", "roll_back"], "PromotionFailed"),
    ({"plan__action": "skip"}, ["plan"], "Skipped"),
])
def test_a_promotion_runs_through_the_phases_in_order(outcome, phases, end):
    visited = _walk(**outcome)
    assert _phases(visited) == phases and visited[-1] == end, visited
    assert ("RestorePrevious" in visited) == ("switch" in phases and end == "PromotionFailed")  # only a switch is restored
    assert ("DeleteNewEndpoint" in visited) == ("wait" in phases and end == "PromotionFailed")  # CreateModel failing leaves nothing


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
