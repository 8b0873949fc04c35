"""`clip-api deploy` (planner pure, executor under moto) and buildspec.yml's commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import boto3
import yaml

from clip_api.cli import build_parser
from infra.deploy import BOOTSTRAP_STACK, SERVING_STACK, Facts, deploy, plan_deploy

REPO_ROOT = Path(__file__).parents[2]
RENDERED = {"bootstrap.yaml": "B", "serving.yaml": "S", "cicd.yaml": "C"}


def facts(stacks=None, objects=()):
    return Facts("111122223333", "eu-west-1", stacks or {}, frozenset(objects), ("clip-vit-b-32",))


def test_plan_from_an_empty_account():
    actions = plan_deploy(facts(), RENDERED, "code/abc.zip")
    assert [a.describe() for a in actions] == [
        f"create stack {BOOTSTRAP_STACK}",
        "upload Lambda code to s3://clip-embedding-api-111122223333-eu-west-1/code/abc.zip",
        f"create stack {SERVING_STACK}",
        "upsert SageMaker Pipeline for clip-vit-b-32",
    ]


def test_plan_when_everything_is_current_only_upserts_pipelines():
    actions = plan_deploy(facts({BOOTSTRAP_STACK: "B", SERVING_STACK: "S"}, {"code/abc.zip"}), RENDERED, "code/abc.zip")
    assert [a.kind for a in actions] == ["upsert-pipeline"]


def test_plan_updates_serving_when_code_changed():
    actions = plan_deploy(facts({BOOTSTRAP_STACK: "B", SERVING_STACK: "S"}, {"code/old.zip"}), RENDERED, "code/new.zip")
    assert [a.describe() for a in actions][:2] == ["upload Lambda code to s3://clip-embedding-api-111122223333-eu-west-1/code/new.zip",
                                                   f"update stack {SERVING_STACK}"]


def test_deploy_is_idempotent_under_moto(aws_env, moto_aws, capsys, tmp_path):
    session = boto3.Session(region_name="us-east-1")
    dry = deploy(session, ("clip-tiny",), dry_run=True, vendor_dependencies=False, log=lambda _: None)
    assert [a.kind for a in dry][:3] == ["deploy-stack", "upload-lambda-code", "deploy-stack"]
    assert not session.client("cloudformation").list_stacks()["StackSummaries"]  # dry run changed nothing
    first = deploy(session, ("clip-tiny",), vendor_dependencies=False, log=lambda _: None)
    assert [a.kind for a in first] == ["deploy-stack", "upload-lambda-code", "deploy-stack", "upsert-pipeline"]
    second = deploy(session, ("clip-tiny",), vendor_dependencies=False, log=lambda _: None)
    assert [a.kind for a in second] == ["upsert-pipeline"]
    assert session.client("sagemaker").describe_pipeline(PipelineName="clip-embedding-api-clip-tiny")["PipelineArn"]


def test_lambda_zip_holds_the_handlers_and_configs():
    import io
    import zipfile

    from infra.deploy import build_lambda_zip

    names = set(zipfile.ZipFile(io.BytesIO(build_lambda_zip(vendor_dependencies=False))).namelist())
    for required in ("embedding_api/app.py", "promotion_planner/app.py", "smoke_test/app.py", "promotion/plan.py", "clip_api/model_config.py",
                     "inference_code/contract.py", "configs/models/clip-vit-b-32.yaml"):
        assert required in names
    assert "inference_code/encoders.py" not in names  # no onnxruntime code in the API Lambdas
    assert build_lambda_zip(vendor_dependencies=False) == build_lambda_zip(vendor_dependencies=False)  # reproducible key


def buildspec_commands() -> list[str]:
    spec = yaml.safe_load((REPO_ROOT / "buildspec.yml").read_text())
    assert spec["version"] == 0.2
    return [command for phase in spec["phases"].values() for command in phase.get("commands", [])]


def test_buildspec_parses_and_its_repo_commands_exist():
    makefile = (REPO_ROOT / "Makefile").read_text()
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    commands = buildspec_commands()
    assert any("make test" in c for c in commands) and any("clip-api deploy" in c for c in commands)
    for command in commands:
        for target in re.findall(r"\bmake ([a-z-]+)", command):
            assert re.search(rf"^{target}:", makefile, re.M), f"buildspec runs `make {target}`, which the Makefile lacks"
        for line in command.splitlines():
            if ".venv/bin/clip-api" in line:
                words = shlex.split(line.strip().split(".venv/bin/clip-api", 1)[1].split(")")[0].split(";")[0])
                sub = subcommands[words[0]]
                choices = next((a.choices for a in sub._actions if a.dest == "action"), None)
                if choices:
                    assert words[1] in choices
        for path in re.findall(r"-f (\S+Dockerfile)", command):
            assert (REPO_ROOT / path).is_file(), path
