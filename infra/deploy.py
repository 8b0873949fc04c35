"""`clip-api deploy`: stand the system up in an account, idempotently.

Decide, then act (as Chalice splits its deploy planner from its executor): `plan_deploy` looks at
what exists and returns the actions, a pure function of those facts; `execute` performs them.
`--dry-run` prints the plan and stops.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from botocore.exceptions import ClientError

from clip_core.names import BOOTSTRAP_STACK, BUCKET_ENV, POINTER_TABLE, PROJECT, SERVING_STACK, artifact_bucket_name, model_resource_name
from infra.lambda_bundle import build_lambda_zip, code_key_for
from infra.stacks import render, templates
from infra.stacks.serving import serving_template


TEMPLATE_BODY_LIMIT = 51_200  # CloudFormation's inline TemplateBody limit; TemplateURL allows 1 MB
DEPLOYED_COMMIT_KEY = f"{PROJECT}/deploy/last-deployed-commit"
SERVING_KEEP_PREVIOUS = ("NotificationEmail", "CorsAllowOrigin", "ApiRateLimit", "ApiBurstLimit", "ApiDailyQuota", "BakeSeconds", "PollSeconds")


@dataclass(frozen=True)
class AccountState:
    account: str
    region: str
    stacks: dict  # stack name -> current template body (None if absent)
    objects: frozenset  # artifact bucket keys that exist
    models: tuple[str, ...]
    bootstrap_outputs: dict = field(default_factory=dict)  # output key -> value, when the bootstrap stack exists
    api_gateway_logging_role: str = ""  # the account's API Gateway CloudWatch role ("" when none is set)
    legacy_pointers: tuple = ()  # ServingPointers found in API functions' environments (before the pointer table existed)


@dataclass(frozen=True)
class DeployStack:
    """Create or update a stack: its template inline (`template_url` empty) or from S3, where it was uploaded this run."""

    stack: str
    template: str  # the rendered template's name
    exists: bool
    parameters: dict
    template_url: str = ""
    template_key: str = ""  # the S3 key behind template_url, whose uploaded version the stack call pins
    kms_key_from_bootstrap: bool = False  # KmsKeyArn: the bootstrap stack's output, read when the action runs
    keep_previous: tuple[str, ...] = ()  # parameters an update keeps at the stack's current value unless set here

    def describe(self) -> str:
        return f"{'update' if self.exists else 'create'} stack {self.stack}"


@dataclass(frozen=True)
class UploadLambdaCode:
    bucket: str
    key: str

    def describe(self) -> str:
        return f"upload Lambda code to s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class UploadTemplate:
    bucket: str
    key: str
    template: str

    def describe(self) -> str:
        return f"upload template {self.template} to s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class MigratePointers:
    table: str
    pointers: tuple  # ServingPointers

    def describe(self) -> str:
        return f"carry what serves into {self.table}: " + ", ".join(f"{p.model_id} -> {p.endpoint_name}" for p in self.pointers)


@dataclass(frozen=True)
class UpsertPipeline:
    model_id: str

    def describe(self) -> str:
        return f"upsert SageMaker Pipeline for {self.model_id}"


DeployAction = DeployStack | UploadLambdaCode | UploadTemplate | MigratePointers | UpsertPipeline


def template_key(name: str, body: str) -> str:
    return f"{PROJECT}/templates/{Path(name).stem}-{hashlib.sha256(body.encode()).hexdigest()[:16]}.yaml"


def manages_api_gateway_account(facts: AccountState) -> bool:
    """Set API Gateway's account-level CloudWatch role only where none is set, or where it is ours
    already: never overwrite a role somebody else's APIs log through."""
    current = facts.api_gateway_logging_role
    return not current or current == facts.bootstrap_outputs.get("ApiGatewayCloudWatchRoleArn")


def plan_deploy(facts: AccountState, rendered: dict[str, str], code_key: str, notification_email: str | None = None,
                serving_parameters: dict | None = None) -> list[DeployAction]:
    """The stack calls that bring the account to `rendered`. Every stack call after the bootstrap's
    first creation passes the bootstrap's DeployRole (resolved at execution from its outputs).
    `serving_parameters`: further serving-stack parameters (local mode's short poll and bake)."""
    bucket = artifact_bucket_name(facts.account, facts.region)
    actions: list[DeployAction] = []
    if facts.stacks.get(BOOTSTRAP_STACK) != rendered["bootstrap.yaml"]:
        # The bootstrap creates the bucket, so its template goes inline (it stays far under the limit).
        actions.append(DeployStack(BOOTSTRAP_STACK, "bootstrap.yaml", BOOTSTRAP_STACK in facts.stacks,
                                   {"ManageApiGatewayAccount": "true" if manages_api_gateway_account(facts) else "false"}))
    if code_key not in facts.objects:
        actions.append(UploadLambdaCode(bucket, code_key))
    if facts.stacks.get(SERVING_STACK) != rendered["serving.yaml"] or code_key not in facts.objects:
        key = template_key("serving.yaml", rendered["serving.yaml"])
        actions.append(UploadTemplate(bucket, key, "serving.yaml"))
        parameters = {"ArtifactBucket": bucket, "LambdaCodeKey": code_key, **(serving_parameters or {})}
        if notification_email is not None:  # absent: an existing subscription is kept (UsePreviousValue)
            parameters["NotificationEmail"] = notification_email
        actions.append(DeployStack(SERVING_STACK, "serving.yaml", SERVING_STACK in facts.stacks, parameters,
                                   template_url=f"https://{bucket}.s3.{facts.region}.amazonaws.com/{key}", template_key=key,
                                   kms_key_from_bootstrap=True, keep_previous=SERVING_KEEP_PREVIOUS))
    if facts.legacy_pointers:
        # A deployment from before the pointer table: what its functions' environments named keeps serving
        # (written only where the table has no pointer yet), although the stack update clears those variables.
        actions.append(MigratePointers(POINTER_TABLE, tuple(facts.legacy_pointers)))
    actions += [UpsertPipeline(model_id) for model_id in facts.models]
    return actions


def stack_outputs(cloudformation, name: str) -> dict:
    try:
        stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    except ClientError:
        return {}
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def gather_facts(session, models: tuple[str, ...], code_key: str) -> AccountState:
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
        s3.head_object(Bucket=artifact_bucket_name(account, session.region_name), Key=code_key)
        objects.add(code_key)
    except ClientError:
        pass
    logging_role = session.client("apigateway").get_account().get("cloudwatchRoleArn", "")
    legacy = legacy_pointers(session.client("lambda"), models) if SERVING_STACK in stacks else ()
    return AccountState(account, session.region_name, stacks, frozenset(objects), models, stack_outputs(cloudformation, BOOTSTRAP_STACK), logging_role, legacy)


LEGACY_ENDPOINT_ENV, LEGACY_PACKAGE_ENV, LEGACY_VERSION_ENV = "SAGEMAKER_ENDPOINT_NAME", "MODEL_PACKAGE_ARN", "MODEL_PACKAGE_VERSION"


def legacy_pointers(lambda_client, models: tuple[str, ...]) -> tuple:
    """What each model's API function served by its environment, in deployments from before the pointer table."""
    from promotion.pointer import ServingPointer

    found = []
    for model_id in models:
        try:
            variables = lambda_client.get_function_configuration(FunctionName=model_resource_name(model_id)).get("Environment", {}).get("Variables", {})
        except ClientError:
            continue
        if variables.get(LEGACY_ENDPOINT_ENV):
            version = variables.get(LEGACY_VERSION_ENV, "0")
            found.append(ServingPointer(model_id, variables[LEGACY_ENDPOINT_ENV], int(version) if version.isdigit() else 0,
                                        variables.get(LEGACY_PACKAGE_ENV, "")))
    return tuple(found)


def pipeline_settings_from_stacks(session, env: dict | None = None):
    """The pipeline's account settings from the deployed stacks' outputs (role ARNs are generated names: never guessed)."""
    from pipeline.settings import PipelineSettings

    cloudformation = session.client("cloudformation")
    bootstrap, serving = stack_outputs(cloudformation, BOOTSTRAP_STACK), stack_outputs(cloudformation, SERVING_STACK)
    if "PipelineRoleArn" not in serving:
        raise RuntimeError(f"stack {SERVING_STACK} has no PipelineRoleArn output: run `clip-api deploy` first")
    account = session.client("sts").get_caller_identity()["Account"]
    return PipelineSettings.from_env({**(os.environ if env is None else env), "CLIP_API_ACCOUNT_ID": account, "CLIP_API_REGION": session.region_name,
                                      BUCKET_ENV: bootstrap["ArtifactBucketName"], "CLIP_API_PIPELINE_ROLE_ARN": serving["PipelineRoleArn"]})


@dataclass
class _Execution:
    """What the actions of one `execute` share."""

    session: object
    zip_bytes: bytes
    rendered: dict
    template_versions: dict = field(default_factory=dict)  # key -> the version this run uploaded
    pipeline_settings: object = None


def _upload_lambda_code(action: UploadLambdaCode, run: _Execution) -> None:
    run.session.client("s3").put_object(Bucket=action.bucket, Key=action.key, Body=run.zip_bytes)


def _upload_template(action: UploadTemplate, run: _Execution) -> None:
    put = run.session.client("s3").put_object(Bucket=action.bucket, Key=action.key, Body=run.rendered[action.template].encode())
    if put.get("VersionId"):
        run.template_versions[action.key] = put["VersionId"]


def _deploy_stack_action(action: DeployStack, run: _Execution) -> None:
    cloudformation = run.session.client("cloudformation")
    bootstrap = stack_outputs(cloudformation, BOOTSTRAP_STACK)
    parameters = dict(action.parameters)
    if action.kms_key_from_bootstrap:
        parameters["KmsKeyArn"] = bootstrap["KmsKeyArn"]
    request = {"StackName": action.stack, "Capabilities": ["CAPABILITY_IAM"],
               "Parameters": [{"ParameterKey": k, "ParameterValue": str(v)} for k, v in parameters.items()]}
    if action.exists:
        # The stack's current values, as read now (none is NoEcho), for what the caller did not set; a parameter
        # the stack does not have yet takes its template default.
        current = {p["ParameterKey"]: p.get("ParameterValue", "")
                   for p in cloudformation.describe_stacks(StackName=action.stack)["Stacks"][0].get("Parameters", [])}
        request["Parameters"] += [{"ParameterKey": k, "ParameterValue": current[k]} for k in action.keep_previous
                                  if k not in parameters and k in current]
    if action.template_url:
        # Pinned to the version uploaded moments ago: a later write to the key cannot change what CloudFormation runs.
        version = run.template_versions.get(action.template_key)
        request["TemplateURL"] = action.template_url + (f"?versionId={version}" if version else "")
    else:
        request["TemplateBody"] = run.rendered[action.template]
    if "DeployRoleArn" in bootstrap:  # absent only while the bootstrap itself is first created (by an administrator)
        request["RoleARN"] = bootstrap["DeployRoleArn"]
    _deploy_stack(cloudformation, request, action.exists)


def _migrate_pointers(action: MigratePointers, run: _Execution) -> None:
    dynamodb = run.session.client("dynamodb")
    for pointer in action.pointers:
        try:
            dynamodb.put_item(TableName=action.table, Item=pointer.to_item(), ConditionExpression="attribute_not_exists(model_id)")
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise


def _upsert_pipeline(action: UpsertPipeline, run: _Execution) -> None:
    from clip_core.model_config import load_model_config
    from pipeline.aws import upsert_pipeline

    run.pipeline_settings = run.pipeline_settings or pipeline_settings_from_stacks(run.session)
    upsert_pipeline(load_model_config(action.model_id), run.pipeline_settings)


_PERFORM = {UploadLambdaCode: _upload_lambda_code, UploadTemplate: _upload_template, DeployStack: _deploy_stack_action,
            MigratePointers: _migrate_pointers, UpsertPipeline: _upsert_pipeline}


def execute(actions: list[DeployAction], session, zip_bytes: bytes, rendered: dict[str, str], log=print) -> None:
    run = _Execution(session, zip_bytes, rendered)
    for action in actions:
        log(f"- {action.describe()}")
        _PERFORM[type(action)](action, run)


def _deploy_stack(cloudformation, request: dict, exists: bool) -> None:
    try:
        if exists:
            cloudformation.update_stack(**request)
            cloudformation.get_waiter("stack_update_complete").wait(StackName=request["StackName"])
        else:
            cloudformation.create_stack(**request)
            cloudformation.get_waiter("stack_create_complete").wait(StackName=request["StackName"])
    except ClientError as error:
        if "No updates are to be performed" not in str(error):
            raise


def render_templates(configs=None, include_demo: bool = False) -> dict[str, str]:
    """The templates a deploy brings the account to; `include_demo`: the serving stack serves demo-only models too (local mode)."""
    from clip_core.model_config import load_all_model_configs

    configs = load_all_model_configs() if configs is None else configs
    # Demo-only models alone would leave the deployed serving stack nothing to serve: with include_demo it is rendered for them.
    rendered = {name: render(template) for name, template in templates(None if include_demo else configs).items()}
    if include_demo:
        rendered["serving.yaml"] = render(serving_template(configs, include_demo=True))
    return rendered


def deploy(session, models: tuple[str, ...], dry_run: bool = False, notification_email: str | None = None, vendor_dependencies: bool = True,
           log=print, configs=None, include_demo: bool = False, serving_parameters: dict | None = None) -> list[DeployAction]:
    """Plan against the account `session` reaches, then execute (unless `dry_run`). `models`: whose SageMaker Pipelines to upsert
    (local mode: none, it runs them itself); `configs`: the models the serving stack serves (default: every config)."""
    rendered = render_templates(configs, include_demo)
    if len(rendered["bootstrap.yaml"].encode()) > TEMPLATE_BODY_LIMIT:
        raise RuntimeError(f"bootstrap.yaml is over CloudFormation's {TEMPLATE_BODY_LIMIT}-byte inline limit")
    zip_bytes = build_lambda_zip(vendor_dependencies)
    code_key = code_key_for(zip_bytes)
    actions = plan_deploy(gather_facts(session, models, code_key), rendered, code_key, notification_email, serving_parameters)
    log(f"plan for account {session.client('sts').get_caller_identity()['Account']} in {session.region_name}:")
    for action in actions:
        log(f"  {action.describe()}")
    if not dry_run:
        execute(actions, session, zip_bytes, rendered, log)
    return actions


def last_deployed_commit(session) -> str:
    """The commit whose deploy (stacks and pipeline starts) last finished, "" before the first."""
    account = session.client("sts").get_caller_identity()["Account"]
    try:
        body = session.client("s3").get_object(Bucket=artifact_bucket_name(account, session.region_name), Key=DEPLOYED_COMMIT_KEY)["Body"].read()
    except ClientError:
        return ""
    return body.decode().strip()


def record_deployed_commit(session, commit: str) -> None:
    account = session.client("sts").get_caller_identity()["Account"]
    session.client("s3").put_object(Bucket=artifact_bucket_name(account, session.region_name), Key=DEPLOYED_COMMIT_KEY, Body=commit.encode())
