"""The promotion workflow as deployed: the committed ASL, its placeholders, and how they are filled.

promotion/state_machine.py writes promotion.asl.json; the infra templates, local mode and the tests
read it from here without importing the builder.

The placeholders are filled by the template's Fn::Sub (DefinitionSubstitutions); tests and local mode
fill them the same way with `substitute()`.
"""

from __future__ import annotations

from pathlib import Path

ASL_PATH = Path(__file__).with_name("promotion.asl.json")
PARTITION = "${Partition}"
PLAN_FUNCTION = "${PlanFunctionArn}"
SMOKE_FUNCTION = "${SmokeTestFunctionArn}"
TOPIC = "${TopicArn}"


def substitute(asl: str, substitutions: dict[str, str]) -> str:
    """Apply CloudFormation-style DefinitionSubstitutions (${Name})."""
    for name, value in substitutions.items():
        asl = asl.replace("${" + name + "}", value)
    return asl
