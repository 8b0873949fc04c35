"""The serving stack (infra/stacks/serving*.py): a function and a route per model, what a model config may ask
of its function, and API deployments that follow the routes."""

from __future__ import annotations

import yaml

from clip_core.model_config import load_all_model_configs
from infra.stacks import INFRA_DIR
from infra.stacks.cfn import model_logical_id
from infra.stacks.serving import serving_template


def committed_resources() -> dict:
    return yaml.safe_load((INFRA_DIR / "serving.yaml").read_text())["Resources"]


def test_serving_template_has_a_function_and_a_route_per_model():
    resources = committed_resources()
    served = [c for c in load_all_model_configs() if not c.demo_only]
    functions = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Function"]
    assert {f["Properties"].get("FunctionName") for f in functions} >= {f"clip-embedding-api-{c.model_id}" for c in served}
    assert all(f["Properties"]["Runtime"] == "python3.12" for f in functions)
    paths = {r["Properties"]["PathPart"] for r in resources.values() if r["Type"] == "AWS::ApiGateway::Resource"}
    assert paths == {c.route for c in served} | {"v1", "embeddings"}
    posts = [r for r in resources.values() if r["Type"] == "AWS::ApiGateway::Method" and r["Properties"]["HttpMethod"] == "POST"]
    assert posts and all(m["Properties"]["ApiKeyRequired"] for m in posts)
    rule = next(r for r in resources.values() if r["Type"] == "AWS::Events::Rule")
    assert rule["Properties"]["EventPattern"]["detail"]["ModelApprovalStatus"] == ["Approved"]


def test_no_lambda_reserves_concurrency_unless_its_config_asks(b32_config):
    functions = [r for r in committed_resources().values() if r["Type"] == "AWS::Lambda::Function"]
    assert functions and all("ReservedConcurrentExecutions" not in f["Properties"] for f in functions)
    asking = b32_config.model_copy(update={"api": b32_config.api.model_copy(update={"reserved_concurrency": 40})})
    resources = serving_template([asking])["Resources"]
    assert resources[f"{model_logical_id(asking)}ApiFunction"]["Properties"]["ReservedConcurrentExecutions"] == 40


def test_a_new_route_reaches_the_stage_through_a_new_deployment(b32_config):
    """CloudFormation makes a new API Deployment only for a new logical id: it must change with the routes."""

    def deployments(configs) -> dict:
        resources = serving_template(configs)["Resources"]
        return {name: r for name, r in resources.items() if r["Type"] == "AWS::ApiGateway::Deployment"}

    before = deployments([b32_config])
    assert set(deployments([b32_config])) == set(before)  # the same routes: the same deployment, no churn
    other = b32_config.model_copy(update={"model_id": "clip-other", "route": "other"})
    after = deployments([b32_config, other])
    assert not set(after) & set(before)
    stage = serving_template([b32_config, other])["Resources"]["ApiStage"]["Properties"]["DeploymentId"]
    assert {ref["Ref"] for ref in stage["Fn::If"][1:]} == set(after)
