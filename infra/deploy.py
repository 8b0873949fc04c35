"""`clip-api deploy`: stand the system up in an account, idempotently.

Decide, then act (as Chalice splits its deploy planner from its executor): `plan_deploy` looks at
what exists and returns the actions, a pure function of those facts; `execute` performs them.
`--dry-run` prints the plan and stops.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from botocore.exceptions import ClientError

from clip_api.paths import REPO_ROOT
from infra.templates import PREFIX, render, templates

BOOTSTRAP_STACK = f"{PREFIX}-bootstrap"
SERVING_STACK = f"{PREFIX}-serving"
LAMBDA_PACKAGES = ("clip_api", "promotion", "lambda/embedding_api", "lambda/promotion_planner", "lambda/smoke_test")
LAMBDA_MODULES = ("inference_code/__init__.py", "inference_code/contract.py", "inference_code/errors.py")
LAMBDA_DEPENDENCIES = ("aws-lambda-powertools[tracer]>=3.0", "pydantic>=2.6", "pyyaml>=6.0")


@dataclass(frozen=True)
class Facts:
    account: str
    region: str
    stacks: dict  # stack name -> current template body (None if absent)
    objects: frozenset  # artifact bucket keys that exist
    models: tuple[str, ...]


@dataclass(frozen=True)
class Action:
    kind: str  # deploy-stack | upload-lambda-code | upsert-pipeline
    target: str
    detail: dict = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind == "deploy-stack":
            verb = "update" if self.detail.get("exists") else "create"
            return f"{verb} stack {self.target}"
        if self.kind == "upload-lambda-code":
            return f"upload Lambda code to s3://{self.detail['bucket']}/{self.target}"
        return f"upsert SageMaker Pipeline for {self.target}"


def bucket_name(account: str, region: str) -> str:
    return f"{PREFIX}-{account}-{region}"


def plan_deploy(facts: Facts, rendered: dict[str, str], code_key: str, notification_email: str = "") -> list[Action]:
    bucket = bucket_name(facts.account, facts.region)
    actions = []
    if facts.stacks.get(BOOTSTRAP_STACK) != rendered["bootstrap.yaml"]:
        actions.append(Action("deploy-stack", BOOTSTRAP_STACK, {"template": "bootstrap.yaml", "exists": BOOTSTRAP_STACK in facts.stacks, "parameters": {}}))
    if code_key not in facts.objects:
        actions.append(Action("upload-lambda-code", code_key, {"bucket": bucket}))
    parameters = {"ArtifactBucket": bucket, "LambdaCodeKey": code_key, "NotificationEmail": notification_email}
    if facts.stacks.get(SERVING_STACK) != rendered["serving.yaml"] or code_key not in facts.objects:
        actions.append(Action("deploy-stack", SERVING_STACK, {"template": "serving.yaml", "exists": SERVING_STACK in facts.stacks,
                                                              "parameters": parameters, "needs_kms_from": BOOTSTRAP_STACK}))
    actions += [Action("upsert-pipeline", model_id) for model_id in facts.models]
    return actions


def build_lambda_zip(vendor_dependencies: bool = True) -> bytes:
    """One zip for every function: our packages flattened to the root (lambda/<pkg> -> <pkg>), configs, dependencies."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        def add(path: Path, arcname: str) -> None:
            info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))  # reproducible: same code, same key
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())

        for package in LAMBDA_PACKAGES:
            root = REPO_ROOT / package
            for path in sorted(root.rglob("*.py")) + sorted(root.rglob("*.json")):
                if "__pycache__" not in path.parts:
                    add(path, (Path(Path(package).name) / path.relative_to(root)).as_posix())
        for module in LAMBDA_MODULES:
            add(REPO_ROOT / module, module)
        for path in sorted((REPO_ROOT / "configs").rglob("*")):
            if path.is_file():
                add(path, path.relative_to(REPO_ROOT).as_posix())
        if vendor_dependencies:
            with tempfile.TemporaryDirectory() as target:
                subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", target, "--platform", "manylinux2014_x86_64",
                                "--python-version", "3.12", "--only-binary=:all:", *LAMBDA_DEPENDENCIES], check=True)
                for path in sorted(Path(target).rglob("*")):
                    if path.is_file() and "__pycache__" not in path.parts:
                        add(path, path.relative_to(target).as_posix())
    return buffer.getvalue()


def code_key_for(zip_bytes: bytes) -> str:
    return f"{PREFIX}/lambda/{hashlib.sha256(zip_bytes).hexdigest()[:16]}.zip"


def gather_facts(session, models: tuple[str, ...], code_key: str) -> Facts:
    account = session.client("sts").get_caller_identity()["Account"]
    cloudformation, s3 = session.client("cloudformation"), session.client("s3")
    stacks = {}
    for name in (BOOTSTRAP_STACK, SERVING_STACK):
        try:
            cloudformation.describe_stacks(StackName=name)
            stacks[name] = cloudformation.get_template(StackName=name)["TemplateBody"]
        except ClientError:
            continue
    objects = set()
    try:
        s3.head_object(Bucket=bucket_name(account, session.region_name), Key=code_key)
        objects.add(code_key)
    except ClientError:
        pass
    return Facts(account, session.region_name, stacks, frozenset(objects), models)


def execute(actions: list[Action], session, zip_bytes: bytes, rendered: dict[str, str], log=print) -> None:
    cloudformation = session.client("cloudformation")
    for action in actions:
        log(f"- {action.describe()}")
        if action.kind == "upload-lambda-code":
            session.client("s3").put_object(Bucket=action.detail["bucket"], Key=action.target, Body=zip_bytes)
        elif action.kind == "deploy-stack":
            parameters = dict(action.detail["parameters"])
            if action.detail.get("needs_kms_from"):
                outputs = cloudformation.describe_stacks(StackName=action.detail["needs_kms_from"])["Stacks"][0].get("Outputs", [])
                parameters["KmsKeyArn"] = next(o["OutputValue"] for o in outputs if o["OutputKey"] == "KmsKeyArn")
            _deploy_stack(cloudformation, action.target, rendered[action.detail["template"]], parameters, action.detail["exists"])
        elif action.kind == "upsert-pipeline":
            from clip_api.model_config import load_model_config
            from pipeline.aws import upsert_pipeline
            from pipeline.settings import PipelineSettings

            upsert_pipeline(load_model_config(action.target), PipelineSettings.from_env())


def _deploy_stack(cloudformation, name: str, body: str, parameters: dict, exists: bool) -> None:
    request = {"StackName": name, "TemplateBody": body, "Capabilities": ["CAPABILITY_IAM"],
               "Parameters": [{"ParameterKey": k, "ParameterValue": str(v)} for k, v in parameters.items()]}
    try:
        if exists:
            cloudformation.update_stack(**request)
            cloudformation.get_waiter("stack_update_complete").wait(StackName=name)
        else:
            cloudformation.create_stack(**request)
            cloudformation.get_waiter("stack_create_complete").wait(StackName=name)
    except ClientError as error:
        if "No updates are to be performed" not in str(error):
            raise


def deploy(session, models: tuple[str, ...], dry_run: bool = False, notification_email: str = "", vendor_dependencies: bool = True, log=print) -> list[Action]:
    rendered = {name: render(template) for name, template in templates().items()}
    zip_bytes = build_lambda_zip(vendor_dependencies)
    code_key = code_key_for(zip_bytes)
    actions = plan_deploy(gather_facts(session, models, code_key), rendered, code_key, notification_email)
    log(f"plan for account {session.client('sts').get_caller_identity()['Account']} in {session.region_name}:")
    for action in actions:
        log(f"  {action.describe()}")
    if not dry_run:
        execute(actions, session, zip_bytes, rendered, log)
    return actions
