"""`clip-api deploy` (planner pure, executor under moto) and buildspec.yml's commands."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import boto3
import yaml

from clip_api.cli import build_parser
from infra.deploy import (
    BOOTSTRAP_STACK,
    SERVING_STACK,
    TEMPLATE_BODY_LIMIT,
    AccountState,
    DeployStack,
    MigratePointers,
    UploadLambdaCode,
    UploadTemplate,
    UpsertPipeline,
    deploy,
    manages_api_gateway_account,
    plan_deploy,
    stack_outputs,
    template_key,
)
from infra.stacks import render
from tests.infra.conftest import change_templates

REPO_ROOT = Path(__file__).parents[2]
RENDERED = {"bootstrap.yaml": "B", "serving.yaml": "S", "cicd.yaml": "C"}


def facts(stacks=None, objects=(), logging_role=""):
    return AccountState("111122223333", "eu-west-1", stacks or {}, frozenset(objects), ("clip-vit-b-32",), {}, logging_role)


def test_plan_from_an_empty_account():
    actions = plan_deploy(facts(), RENDERED, "code/abc.zip")
    assert [a.describe() for a in actions] == [
        f"create stack {BOOTSTRAP_STACK}",
        "upload Lambda code to s3://clip-embedding-api-111122223333-eu-west-1/code/abc.zip",
        f"upload template serving.yaml to s3://clip-embedding-api-111122223333-eu-west-1/{template_key('serving.yaml', 'S')}",
        f"create stack {SERVING_STACK}",
        "upsert SageMaker Pipeline for clip-vit-b-32",
    ]
    serving = actions[3]
    assert serving.template_url == f"https://clip-embedding-api-111122223333-eu-west-1.s3.eu-west-1.amazonaws.com/{template_key('serving.yaml', 'S')}"
    assert serving.template_key == template_key("serving.yaml", "S") and serving.kms_key_from_bootstrap
    assert "NotificationEmail" not in serving.parameters  # not given: an existing subscription is kept, never blanked
    assert "NotificationEmail" in serving.keep_previous
    assert actions[0].parameters == {"ManageApiGatewayAccount": "true"} and not actions[0].template_url  # the bootstrap goes inline


def test_plan_passes_further_serving_parameters():
    actions = plan_deploy(facts(), RENDERED, "code/abc.zip", serving_parameters={"PollSeconds": 1, "BakeSeconds": 2})
    serving = next(a for a in actions if isinstance(a, DeployStack) and a.stack == SERVING_STACK)
    assert serving.parameters == {"ArtifactBucket": "clip-embedding-api-111122223333-eu-west-1", "LambdaCodeKey": "code/abc.zip",
                                  "PollSeconds": 1, "BakeSeconds": 2}


def test_plan_when_everything_is_current_only_upserts_pipelines():
    actions = plan_deploy(facts({BOOTSTRAP_STACK: "B", SERVING_STACK: "S"}, {"code/abc.zip"}), RENDERED, "code/abc.zip")
    assert actions == [UpsertPipeline("clip-vit-b-32")]


def test_plan_updates_serving_when_code_changed():
    actions = plan_deploy(facts({BOOTSTRAP_STACK: "B", SERVING_STACK: "S"}, {"code/old.zip"}), RENDERED, "code/new.zip", notification_email="ops@example.com")
    assert [a.describe() for a in actions][:3] == ["upload Lambda code to s3://clip-embedding-api-111122223333-eu-west-1/code/new.zip",
                                                   f"upload template serving.yaml to s3://clip-embedding-api-111122223333-eu-west-1/{template_key('serving.yaml', 'S')}",
                                                   f"update stack {SERVING_STACK}"]
    assert actions[2].parameters["NotificationEmail"] == "ops@example.com"


def test_the_api_gateway_account_role_is_set_only_where_none_or_ours_is():
    # CloudFormation truncates generated role names to 64 characters: ours is known from the stack's output, never by its name
    ours = f"arn:aws:iam::111122223333:role/{BOOTSTRAP_STACK}-ApiGatewayCloudWatchRo-A81740AB72C1"
    assert manages_api_gateway_account(facts(logging_role=""))
    assert manages_api_gateway_account(AccountState("111122223333", "eu-west-1", {}, frozenset(), ("clip-vit-b-32",),
                                             {"ApiGatewayCloudWatchRoleArn": ours}, ours))
    assert not manages_api_gateway_account(facts(logging_role=ours))  # a role of that shape that the stack does not name
    assert not manages_api_gateway_account(facts(logging_role="arn:aws:iam::111122223333:role/someone-elses-apigw-logs"))
    plan = plan_deploy(facts(logging_role="arn:aws:iam::111122223333:role/someone-elses-apigw-logs"), RENDERED, "code/abc.zip")
    assert plan[0].parameters == {"ManageApiGatewayAccount": "false"}


class StackCalls:
    """The CreateStack/UpdateStack requests a deploy makes (what a real CloudFormation receives)."""

    def __init__(self, session):
        self.calls = []
        for name in ("CreateStack", "UpdateStack"):
            session.events.register(f"provide-client-params.cloudformation.{name}", self._record)

    def _record(self, params, **_):
        self.calls.append(dict(params))


def test_deploy_is_idempotent_under_moto(aws_env, moto_aws, capsys, tmp_path):
    session = boto3.Session(region_name="us-east-1")
    calls = StackCalls(session)
    dry = deploy(session, ("clip-tiny",), dry_run=True, vendor_dependencies=False, log=lambda _: None)
    assert [type(a) for a in dry][:4] == [DeployStack, UploadLambdaCode, UploadTemplate, DeployStack]
    assert not session.client("cloudformation").list_stacks()["StackSummaries"]  # dry run changed nothing
    first = deploy(session, ("clip-tiny",), vendor_dependencies=False, log=lambda _: None)
    assert [type(a) for a in first] == [DeployStack, UploadLambdaCode, UploadTemplate, DeployStack, UpsertPipeline]
    second = deploy(session, ("clip-tiny",), vendor_dependencies=False, log=lambda _: None)
    assert second == [UpsertPipeline("clip-tiny")]
    pipeline = session.client("sagemaker").describe_pipeline(PipelineName="clip-embedding-api-clip-tiny")
    serving_outputs = stack_outputs(session.client("cloudformation"), SERVING_STACK)
    assert pipeline["RoleArn"] == serving_outputs["PipelineRoleArn"]  # from the stack's output, not a guessed name

    bootstrap_call, serving_call = calls.calls
    assert "RoleARN" not in bootstrap_call  # the very first bootstrap is created by the administrator's own credentials
    deploy_role = stack_outputs(session.client("cloudformation"), BOOTSTRAP_STACK)["DeployRoleArn"]
    assert serving_call["RoleARN"] == deploy_role  # CloudFormation acts with its service role, not with the caller's
    assert "TemplateURL" in serving_call and "TemplateBody" not in serving_call


def test_a_changed_bootstrap_is_updated_with_the_deploy_role(aws_env, moto_aws, monkeypatch):
    session = boto3.Session(region_name="us-east-1")
    deploy(session, ("clip-tiny",), vendor_dependencies=False, log=lambda _: None)
    calls = StackCalls(session)
    change_templates(monkeypatch, "bootstrap.yaml")
    deploy(session, ("clip-tiny",), vendor_dependencies=False, log=lambda _: None)
    assert [c["StackName"] for c in calls.calls] == [BOOTSTRAP_STACK]
    assert calls.calls[0]["RoleARN"] == stack_outputs(session.client("cloudformation"), BOOTSTRAP_STACK)["DeployRoleArn"]


def ten_model_configs(tmp_path) -> list:
    from clip_core.model_config import load_all_model_configs, load_model_config

    tiny = (REPO_ROOT / "configs" / "models" / "clip-tiny.yaml").read_text()
    for index in range(10):
        model_id = f"clip-model-number-{index:02d}-with-a-long-name"
        (tmp_path / f"{model_id}.yaml").write_text(tiny.replace("model_id: clip-tiny", f"model_id: {model_id}")
                                                   .replace("route: tiny", f"route: m{index}").replace("demo_only: true", "demo_only: false")
                                                   .replace("model_package_group: clip-tiny", f"model_package_group: {model_id}"))
    configs = load_all_model_configs(tmp_path)
    assert len(configs) == 10 and load_model_config(configs[0].model_id, tmp_path)
    return configs


def test_ten_models_fit_every_limit_and_deploy_through_the_bucket(aws_env, moto_aws, tmp_path):
    from infra.stacks.serving import serving_template
    from promotion.plan import alarm_names, resource_name

    configs = ten_model_configs(tmp_path)
    body = render(serving_template(configs))
    assert TEMPLATE_BODY_LIMIT < len(body.encode()) < 1_000_000  # only TemplateURL can carry it
    for config in configs:
        name = resource_name(config.model_id, 99_999)
        assert len(name) <= 63  # SageMaker model, endpoint config and endpoint names
        assert all(len(alarm) <= 255 for alarm in alarm_names(config, name))
        assert len(f"clip-embedding-api-{config.model_id}") <= 64  # Lambda function names
    session = boto3.Session(region_name="us-east-1")
    calls = StackCalls(session)
    deploy(session, (), vendor_dependencies=False, log=lambda _: None, configs=configs)  # the stacks; pipelines are per model and tested above
    serving = next(c for c in calls.calls if c["StackName"] == SERVING_STACK)
    assert "TemplateURL" in serving
    functions = {f["FunctionName"] for f in session.client("lambda").list_functions()["Functions"]}
    assert {f"clip-embedding-api-{c.model_id}" for c in configs} <= functions


def test_a_stack_update_does_not_change_which_endpoint_serves(aws_env, moto_aws, tmp_path):
    """The pointer belongs to the promotion workflow: updating the stack (a new model, a new setting) leaves it alone."""
    from clip_core.model_config import load_model_config
    from clip_core.names import POINTER_TABLE
    from promotion.pointer import ServingPointer, read_pointer

    session = boto3.Session(region_name="us-east-1")
    tiny = load_model_config("clip-tiny")
    deploy(session, ("clip-tiny",), vendor_dependencies=False, log=lambda _: None, configs=[tiny.model_copy(update={"demo_only": False})])
    dynamodb = session.client("dynamodb")
    promoted = ServingPointer("clip-tiny", "clip-tiny-v3", 3, "arn:aws:sagemaker:us-east-1:123456789012:model-package/clip-tiny/3")
    dynamodb.put_item(TableName=POINTER_TABLE, Item=promoted.to_item())  # what SwitchTraffic writes
    configs = [tiny.model_copy(update={"demo_only": False}), *ten_model_configs(tmp_path)[:1]]
    actions = deploy(session, ("clip-tiny",), vendor_dependencies=False, log=lambda _: None, configs=configs, notification_email="ops@example.com")
    assert f"update stack {SERVING_STACK}" in [a.describe() for a in actions]
    assert read_pointer(dynamodb, POINTER_TABLE, "clip-tiny", consistent=True) == promoted
    env = session.client("lambda").get_function_configuration(FunctionName="clip-embedding-api-clip-tiny")["Environment"]["Variables"]
    assert not any("ENDPOINT" in key for key in env)  # nothing a stack owns names the serving endpoint


def lambda_zip_names() -> set[str]:
    import io
    import zipfile

    from infra.lambda_bundle import build_lambda_zip

    return set(zipfile.ZipFile(io.BytesIO(build_lambda_zip(vendor_dependencies=False))).namelist())


def test_lambda_zip_holds_the_handlers_and_configs():
    from infra.lambda_bundle import build_lambda_zip

    names = lambda_zip_names()
    for required in ("clip_lambdas/api/app.py", "clip_lambdas/promotion_planner/app.py", "clip_lambdas/smoke_test/app.py", "promotion/plan.py",
                     "clip_core/model_config.py", "inference_code/contract.py", "clip_core/configs/models/clip-vit-b-32.yaml", "clip_core/limits.py"):
        assert required in names
    assert "inference_code/encoders.py" not in names  # no onnxruntime code in the API Lambdas
    assert build_lambda_zip(vendor_dependencies=False) == build_lambda_zip(vendor_dependencies=False)  # reproducible key


def test_every_handler_the_serving_template_names_is_in_the_lambda_zip():
    handlers = re.findall(r"^\s+Handler: (\S+)$", (REPO_ROOT / "infra" / "serving.yaml").read_text(), flags=re.MULTILINE)
    modules = {handler.rsplit(".", 1)[0] for handler in handlers}
    assert modules == {"clip_lambdas.api.app", "clip_lambdas.promotion_planner.app", "clip_lambdas.smoke_test.app"}
    assert {module.replace(".", "/") + ".py" for module in modules} <= lambda_zip_names()


def test_the_lambda_zip_holds_what_handlers_import_and_nothing_else(tmp_path):
    """No list: a module a handler imports (at module level, in a function, relatively) is in the zip, with the packages
    around it; a module nothing imports is not."""
    from infra.lambda_bundle import handler_modules, reached_files

    sources = {
        "lambda/clip_lambdas/__init__.py": "",
        "lambda/clip_lambdas/fn/__init__.py": "",
        "lambda/clip_lambdas/fn/app.py": "import json\nfrom . import sibling\n\ndef handler(event, context):\n"
                                         "    from helpers.extra import value\n    return value\n",
        "lambda/clip_lambdas/fn/sibling.py": "import helpers.deep.leaf as leaf\n",
        "lambda/clip_lambdas/fn/unused.py": "",
        "helpers/__init__.py": "",
        "helpers/extra.py": "from .deep import leaf\nvalue = 1\n",
        "helpers/deep/__init__.py": "",
        "helpers/deep/leaf.py": "",
        "helpers/unlisted_and_unimported.py": "",
    }
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert handler_modules(tmp_path / "lambda") == ["clip_lambdas.fn.app"]
    reached = reached_files(handler_modules(tmp_path / "lambda"), roots=(tmp_path, tmp_path / "lambda"))
    assert set(reached) == {"clip_lambdas/__init__.py", "clip_lambdas/fn/__init__.py", "clip_lambdas/fn/app.py", "clip_lambdas/fn/sibling.py",
                            "helpers/__init__.py", "helpers/extra.py", "helpers/deep/__init__.py", "helpers/deep/leaf.py"}
    assert reached["helpers/extra.py"] == tmp_path / "helpers" / "extra.py"


def test_the_lambda_zip_code_imports_with_nothing_but_itself_and_the_dependencies(tmp_path):
    """Every handler module imports from the unpacked zip alone (the dependencies, vendored in a real zip, from this
    environment): none of this repository's modules may come from anywhere else."""
    import io
    import subprocess
    import sys
    import zipfile

    from infra.lambda_bundle import build_lambda_zip, handler_modules

    zipfile.ZipFile(io.BytesIO(build_lambda_zip(vendor_dependencies=False))).extractall(tmp_path)
    script = (
        "import importlib, sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]  # this checkout, installed with -e\n"
        f"for module in {handler_modules()!r}:\n"
        "    importlib.import_module(module)\n"
        f"print(sorted(m.__file__ for m in list(sys.modules.values()) if (getattr(m, '__file__', None) or '').startswith({str(REPO_ROOT)!r})\n"
        "             and '/.venv' not in m.__file__))\n"
    )
    env = {**os.environ, "POWERTOOLS_TRACE_DISABLED": "1", "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]", result.stdout


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
                assert words[0] in subcommands
                parser.parse_args([re.sub(r"\$\w+", "X", word) for word in words])  # exits (fails the test) on an unknown verb or option
        for path in re.findall(r"-f (\S+Dockerfile)", command):
            assert (REPO_ROOT / path).is_file(), path


def test_buildspec_changes_the_account_only_after_everything_before_succeeded():
    spec = yaml.safe_load((REPO_ROOT / "buildspec.yml").read_text())
    assert "post_build" not in spec["phases"]  # post_build runs even when the build failed
    build = "\n".join(spec["phases"]["build"]["commands"])
    assert build.index("clip-api deploy\n") < build.index("pipeline changed") < build.index("deploy record-commit")
    assert "HEAD~1" not in build and '--base "$DEPLOYED_BASE"' in build  # every commit since the last finished deploy
    assert "deploy last-commit" in build
    assert "--email" not in build  # an e-mail subscription made by a person is never blanked by CI


def test_upgrading_a_deployment_from_before_the_pointer_table_keeps_what_serves(aws_env, moto_aws, monkeypatch):
    """Its functions' environments named the serving endpoints; the stack update clears them, so the deploy carries them over first."""
    import infra.deploy as deploy_module
    from clip_core.model_config import load_model_config
    from clip_core.names import POINTER_TABLE
    from promotion.pointer import ServingPointer, read_pointer

    session = boto3.Session(region_name="us-east-1")
    tiny = load_model_config("clip-tiny").model_copy(update={"demo_only": False})
    deploy(session, ("clip-tiny",), vendor_dependencies=False, log=lambda _: None, configs=[tiny])
    lambda_client = session.client("lambda")
    function = "clip-embedding-api-clip-tiny"
    variables = lambda_client.get_function_configuration(FunctionName=function)["Environment"]["Variables"]
    legacy = {"SAGEMAKER_ENDPOINT_NAME": "clip-tiny-v7", "MODEL_PACKAGE_VERSION": "7",
              "MODEL_PACKAGE_ARN": "arn:aws:sagemaker:us-east-1:123456789012:model-package/clip-tiny/7"}
    lambda_client.update_function_configuration(FunctionName=function, Environment={"Variables": {**variables, **legacy}})
    change_templates(monkeypatch, "serving.yaml", mark=" (upgraded)")
    actions = deploy(session, ("clip-tiny",), vendor_dependencies=False, log=lambda _: None, configs=[tiny])
    migration = next(a for a in actions if isinstance(a, MigratePointers))
    dynamodb = session.client("dynamodb")
    assert read_pointer(dynamodb, POINTER_TABLE, "clip-tiny", consistent=True) == ServingPointer("clip-tiny", "clip-tiny-v7", 7, legacy["MODEL_PACKAGE_ARN"])
    # a pointer the workflow wrote since is never overwritten by what an environment still says
    promoted = ServingPointer("clip-tiny", "clip-tiny-v8", 8, "arn:aws:sagemaker:us-east-1:123456789012:model-package/clip-tiny/8")
    dynamodb.put_item(TableName=POINTER_TABLE, Item=promoted.to_item())
    deploy_module.execute([MigratePointers(POINTER_TABLE, migration.pointers)], session, b"", {}, log=lambda _: None)
    assert read_pointer(dynamodb, POINTER_TABLE, "clip-tiny", consistent=True) == promoted



def test_cloudformation_gets_the_template_version_this_run_uploaded(aws_env, moto_aws, monkeypatch):
    from clip_core.names import artifact_bucket_name

    session = boto3.Session(region_name="us-east-1")
    deploy(session, ("clip-tiny",), vendor_dependencies=False, log=lambda _: None)
    # The bootstrap's bucket is versioned in AWS; moto's CloudFormation leaves versioning off.
    session.client("s3").put_bucket_versioning(Bucket=artifact_bucket_name("123456789012", "us-east-1"), VersioningConfiguration={"Status": "Enabled"})
    calls = StackCalls(session)
    change_templates(monkeypatch, "serving.yaml")
    deploy(session, ("clip-tiny",), vendor_dependencies=False, log=lambda _: None)
    url = calls.calls[-1]["TemplateURL"]
    key, version = url.split(".amazonaws.com/", 1)[1].split("?versionId=")
    stored = session.client("s3").get_object(Bucket=artifact_bucket_name("123456789012", "us-east-1"), Key=key, VersionId=version)["Body"].read().decode()
    assert "(changed)" in stored  # pinned: a later write to the key cannot change what CloudFormation runs
