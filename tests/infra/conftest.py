"""Shared fixtures of the infrastructure checks: the rendered templates and the IAM evaluator over them."""

from __future__ import annotations

import pytest

from infra.iam_policy import Deployment
from infra.stacks import templates


@pytest.fixture(scope="module")
def rendered() -> dict:
    return templates()


@pytest.fixture(scope="module")
def deployment(rendered) -> Deployment:
    return Deployment(rendered)


def change_templates(monkeypatch, *names: str, mark: str = " (changed)") -> None:
    """Make clip-api deploy render changed templates (a push that changes these stacks)."""
    import infra.deploy as deploy_module

    original = deploy_module.templates

    def changed(configs=None):
        rendered = original(configs)
        for name in names:
            rendered[name]["Description"] += mark
        return rendered

    monkeypatch.setattr(deploy_module, "templates", changed)
