"""Shared fixtures of the infrastructure checks: the rendered templates and the IAM evaluator over them."""

from __future__ import annotations

import pytest

from infra.iam_policy import Deployment
from infra.templates import templates


@pytest.fixture(scope="module")
def rendered() -> dict:
    return templates()


@pytest.fixture(scope="module")
def deployment(rendered) -> Deployment:
    return Deployment(rendered)
