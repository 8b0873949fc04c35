"""`clip-api local up`: build -> register -> approve -> promote -> serve, on one machine.

1. moto in server mode on loopback (Step Functions execution enabled) with the real bootstrap and
   serving stacks deployed into it (rendered for the selected models);
2. each model's SageMaker Pipeline definition run locally: package, validate, register as
   PendingManualApproval;
3. approval (--approve, or `clip-api local approve MODEL_ID VERSION` from another terminal): the
   loop below notices approvals in the registry, as the EventBridge rule would, and runs the
   promotion workflow with the approval event;
4. real local inference servers for the endpoints the control plane holds, reached by the unchanged
   Lambda code through AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME;
5. a local API Gateway serving the stable URLs with the real API handler.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from clip_core.model_config import ModelConfig, load_model_config
from clip_core.names import (BOOTSTRAP_STACK, BUCKET_ENV, PLANNER_FUNCTION, SERVING_STACK, SMOKE_TEST_FUNCTION, STATE_MACHINE,
                             artifact_bucket_name, model_resource_name)
from model_build.weights_source import RANDOM_INIT

STATE_FILE = Path(".local/state.json")
# B/32 by default: exporting and quantising L/14 takes minutes on a laptop (add it with --models).
DEFAULT_MODELS = ("clip-vit-b-32",)
SLOW_BUILDS = {"clip-vit-l-14": "ViT-L/14: loading, exporting and quantising take several minutes on a laptop"}


@dataclass
class LocalSettings:
    models: tuple[str, ...] = DEFAULT_MODELS
    approve: bool = False
    random_weights: bool = False
    api_port: int = 8000
    moto_port: int = 5000
    workdir: Path = Path(".local")
    poll_seconds: int = 1
    bake_seconds: int = 2
    example_requests: bool = True
    exit_when_ready: bool = False
    verbose: bool = False  # library warnings and INFO logs, the API Lambda's log and metrics on stdout (local_mode/output.py)


@dataclass
class LocalStatus:
    api_url: str = ""
    control_plane_url: str = ""
    promotions: list = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)


def choose_models(settings: LocalSettings, log) -> tuple[list[ModelConfig], str]:
    """Pretrained where the weights can be had; otherwise say so and run the tiny model (or random init)."""
    from model_build.weights import pretrained_available

    configs = [load_model_config(m) for m in settings.models]
    if settings.random_weights:
        log("  weights: random init (--random-weights): embeddings are meaningless, for trying the system only")
        return configs, RANDOM_INIT
    if all(c.demo_only for c in configs):
        return configs, RANDOM_INIT
    missing = [(c, why) for c in configs if not c.demo_only for ok, why in [pretrained_available(c)] if not ok]
    if not missing:
        return configs, "pretrained"
    reasons = "; ".join(f"pretrained weights for {config.model_id} cannot be had here: {why}" for config, why in missing)
    log(f"  ! {reasons}: serving the tiny demo model instead (64-d, random weights; --random-weights for the full-size architectures at random init)")
    return [load_model_config("clip-tiny")], RANDOM_INIT


def fetch_weights(configs: list[ModelConfig], log) -> None:
    """Download the pinned weights files now, with a progress bar, before the pipeline's Package step reads them from the cache."""
    from inference_code.manifest import sha256_file
    from model_build.weights import fetch_pinned_file, pinned_file_path

    for config in configs:
        pin = config.open_clip.weights_file
        if pin is None:
            continue
        path = pinned_file_path(pin)
        if path.is_file() and sha256_file(path) == pin.sha256:
            log(f"   {config.model_id}: {path} (cached, sha256 verified)")
            continue
        log(f"   {config.model_id}: downloading {pin.url} into {path.parent} (resumable: run again after an interruption)")
        started = time.monotonic()
        fetch_pinned_file(pin, progress=True, log=lambda line: log("   " + line))
        log(f"   {config.model_id}: sha256 {pin.sha256} verified ({time.monotonic() - started:.0f} s)")


def write_state(path: Path, data: dict) -> None:
    """Its readers (other commands, the tests polling it) never see half a file."""
    from local_mode.journal import write_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(data, indent=2).encode())


@dataclass
class LocalMode:
    """What local mode's stages start and hand on to the next (each stage is a function below, called in order by `run_local`)."""

    settings: LocalSettings
    status: LocalStatus
    workdir: Path
    log: Callable[[str], None]
    control_plane: object = None
    router: object = None
    session: object = None  # a boto3 session on the control plane (the SageMaker runtime: the router)
    servers: object = None
    gateway: object = None
    promoter: object = None
    journal: object = None
    configs: list = field(default_factory=list)
    weights: str = ""
    bucket: str = ""
    state_machine_arn: str = ""
    recovered: set = field(default_factory=set)  # models whose versions the journal restored (not built again)
    handled: set = field(default_factory=set)  # package ARNs whose approval has been acted on

    @property
    def lambda_log(self) -> Path | None:
        return None if self.settings.verbose else self.workdir / "api-lambda.log"


def run_local(settings: LocalSettings, status: LocalStatus | None = None, stop: threading.Event | None = None, log=print) -> LocalStatus:
    from local_mode import restore
    from local_mode.output import configure

    stop = stop or threading.Event()
    configure(settings.verbose)
    mode = LocalMode(settings, status or LocalStatus(), Path(settings.workdir).resolve(), log)
    restore.refuse_if_running(mode.workdir)
    restore.stop_orphaned_servers(mode.workdir, log)
    try:
        start_control_plane(mode)
        mode.configs, mode.weights = choose_models(settings, log)
        deploy_stacks(mode)
        restore_from_journal(mode)
        build_models(mode)
        start_api(mode)
        serve_until_stopped(mode, stop)
    finally:
        shut_down(mode)
    return mode.status


def start_control_plane(mode: LocalMode) -> None:
    """1. moto on loopback, the SageMaker runtime's router, and the session every later stage acts through."""
    from local_mode.control_plane import ControlPlane
    from local_mode.inference_servers import InferenceServers
    from local_mode.runtime_router import RuntimeRouter, SageMakerMetrics

    mode.log("1. control plane: moto on loopback, Step Functions execution enabled")
    mode.control_plane = ControlPlane(mode.settings.moto_port).start()
    mode.router = RuntimeRouter().start()
    mode.session = mode.control_plane.session({"sagemaker-runtime": mode.router.url})
    mode.router.metrics = SageMakerMetrics(mode.session.client("cloudwatch"))
    mode.servers = InferenceServers(mode.session.client("s3"), mode.workdir, mode.log)


def deploy_stacks(mode: LocalMode) -> None:
    """The bootstrap and serving stacks, through `clip-api deploy`'s planner and executor; then the promotion state machine
    in moto's executing Step Functions engine."""
    from infra.deploy import deploy, stack_outputs

    settings = mode.settings
    # No vendored dependencies: moto's Lambda runs no code (local mode runs the handlers in-process); no SageMaker Pipelines
    # to upsert: local mode runs their definitions itself; the demo models served too.
    deploy(mode.session, (), vendor_dependencies=False, configs=mode.configs, include_demo=True,
           serving_parameters={"PollSeconds": settings.poll_seconds, "BakeSeconds": settings.bake_seconds},
           log=(lambda line: mode.log("   " + line)) if settings.verbose else (lambda _line: None))
    cloudformation = mode.session.client("cloudformation")
    mode.bucket = stack_outputs(cloudformation, BOOTSTRAP_STACK)["ArtifactBucketName"]
    mode.state_machine_arn = register_state_machine(mode.session, SERVING_STACK, stack_outputs(cloudformation, SERVING_STACK)["TopicArn"])
    mode.log(f"   stacks deployed into the control plane at {mode.control_plane.url} (API Lambdas, promotion state machine, SNS topic)")


def restore_from_journal(mode: LocalMode) -> None:
    """The registry a killed up-loop held, re-created from the workdir's journal (local_mode/restore.py)."""
    from local_mode import restore
    from local_mode.journal import journal_for

    mode.journal = journal_for(mode.workdir)
    if mode.journal.exists():
        mode.recovered = restore.restore_registry(mode.journal, mode.session.client("sagemaker"), mode.session.client("s3"), mode.configs, mode.log)


def local_pipeline_settings(bucket: str):
    """The pipeline's settings in local mode: the control plane's region and bucket over this environment's CLIP_API_* settings."""
    from local_mode.control_plane import REGION
    from pipeline.settings import PipelineSettings

    return PipelineSettings.from_env({**os.environ, "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, BUCKET_ENV: bucket})


def build_models(mode: LocalMode) -> None:
    """2. each model's SageMaker Pipeline definition, run here: a registered version (approved at once with --approve)."""
    if mode.weights == "pretrained":
        mode.log("   weights: the files the model configs pin, verified by sha256")
        fetch_weights(mode.configs, mode.log)
    mode.log(f"2. building {', '.join(c.model_id for c in mode.configs)} with the SageMaker Pipeline definition, locally (weights: {mode.weights})")
    pipeline_settings = local_pipeline_settings(mode.bucket)
    for config in mode.configs:
        if config.model_id in mode.recovered:
            mode.log(f"   {config.model_id}: restored from the journal, not built again (clip-api local build {config.model_id}: a new version)")
            continue
        build_model(mode, config, pipeline_settings)


def build_model(mode: LocalMode, config: ModelConfig, pipeline_settings) -> None:
    from local_mode.journal import sync_registry
    from local_mode.promotion import set_approval
    from pipeline.aws import run_pipeline_locally

    if config.model_id in SLOW_BUILDS:
        mode.log(f"   {SLOW_BUILDS[config.model_id]}")
    started = time.monotonic()
    result = run_pipeline_locally(config, pipeline_settings, mode.workdir / "pipeline-runs", {"WeightsSource": mode.weights},
                                  log=lambda line: mode.log("  " + line), session=mode.session)
    if result.status != "Succeeded":
        raise RuntimeError(f"the {config.model_id} pipeline failed: {result.failure_reason}")
    mode.log(f"   registered {result.model_package_arn} (PendingManualApproval) after {time.monotonic() - started:.0f} s")
    mode.log(f"   {golden_case(mode.workdir / 'pipeline-runs' / result.execution_id)}")
    if mode.settings.approve:
        set_approval(mode.session.client("sagemaker"), result.model_package_arn, "Approved")
        mode.log("   approved (--approve)")
    sync_registry(mode.journal, mode.session.client("sagemaker"), mode.session.client("s3"), [config.registry.model_package_group], "--approve")


def lambda_runtime_environment(mode: LocalMode) -> dict[str, str]:
    """What the Lambda runtime gives the in-process handlers beside their functions' variables: the control plane's and the
    router's endpoints, credentials, and Powertools without X-Ray, without CloudWatch metrics and at WARNING."""
    from local_mode.control_plane import REGION

    return {"AWS_ENDPOINT_URL": mode.control_plane.url, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": mode.router.url, "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
            "POWERTOOLS_TRACE_DISABLED": "1", "POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING"}


def start_api(mode: LocalMode) -> None:
    """The local API Gateway in front of the real API handler, the promoter, and the state file other commands read."""
    from local_mode.api_gateway import LocalApiGateway
    from local_mode.promotion import LocalPromoter

    mode.gateway = LocalApiGateway(mode.configs, mode.session.client("lambda"), model_resource_name("{model_id}"), port=mode.settings.api_port,
                                   lambda_log=mode.lambda_log, runtime_environment=lambda_runtime_environment(mode)).start()
    mode.status.api_url, mode.status.control_plane_url = mode.gateway.url, mode.control_plane.url
    mode.promoter = LocalPromoter(mode.session, mode.control_plane, mode.router, mode.servers, mode.state_machine_arn, mode.log)
    save_state(mode)


def save_state(mode: LocalMode) -> None:
    """The state file: where local mode runs (for `clip-api local approve|build|down`), what its promotions ended as, whether it is ready."""
    write_state(mode.workdir / "state.json", {
        "pid": os.getpid(), "control_plane": mode.control_plane.url, "api": mode.gateway.url, "models": [c.model_id for c in mode.configs],
        "promotions": [asdict(outcome) for outcome in mode.status.promotions], "ready": mode.status.ready.is_set()})


def serve_until_stopped(mode: LocalMode, stop: threading.Event) -> None:
    """3.-7. act on approvals as the EventBridge rule would; after the first promotion, say where it serves and send the examples."""
    mode.log("3. waiting for approvals (approve from another terminal: clip-api local approve MODEL_ID VERSION); Ctrl-C stops")
    while not stop.is_set():
        promote_new_approvals(mode)
        if mode.status.promotions and not mode.status.ready.is_set():
            announce_serving(mode)
            if mode.settings.example_requests:
                send_examples(mode.gateway.url, mode.configs[0], mode.log)
                zero_shot_example(mode.gateway.url, mode.configs[0], mode.weights, mode.log)
            mode.status.ready.set()
            save_state(mode)
            if mode.settings.exit_when_ready:
                stop.set()
        stop.wait(1.0)


def approved_packages(mode: LocalMode, config: ModelConfig) -> list[dict]:
    packages = mode.session.client("sagemaker").list_model_packages(ModelPackageGroupName=config.registry.model_package_group,
                                                                    ModelApprovalStatus="Approved")["ModelPackageSummaryList"]
    return sorted(packages, key=lambda p: p["ModelPackageVersion"])


def promote_new_approvals(mode: LocalMode) -> None:
    """4. the promotion workflow, once for each approval not acted on yet, in version order."""
    from local_mode import restore
    from local_mode.journal import sync_registry

    restore.require_control_plane(mode.control_plane.url)
    sagemaker, s3 = mode.session.client("sagemaker"), mode.session.client("s3")
    sync_registry(mode.journal, sagemaker, s3, [c.registry.model_package_group for c in mode.configs], "seen in the registry")
    for config in mode.configs:
        for package in approved_packages(mode, config):
            if package["ModelPackageArn"] not in mode.handled:
                mode.handled.add(package["ModelPackageArn"])
                promote(mode, config, package)


def promote(mode: LocalMode, config: ModelConfig, package: dict) -> None:
    from local_mode.journal import finish_promotion, record_promotion_started

    version, group = package["ModelPackageVersion"], config.registry.model_package_group
    mode.log(f"4. promoting {config.model_id} version {version}")
    record_promotion_started(mode.journal, group, version, package["ModelPackageArn"])
    outcome = mode.promoter.promote(package["ModelPackageArn"])
    finish_promotion(mode.journal, mode.session.client("sagemaker"), mode.session.client("dynamodb"), config.model_id, group, version, outcome)
    mode.status.promotions.append(outcome)
    save_state(mode)
    mode.log(f"   {outcome.status}: {outcome.reason}")


def announce_serving(mode: LocalMode) -> None:
    """5. the stable URLs, and where the API Lambda's log goes."""
    url, configs = mode.gateway.url, mode.configs
    mode.log("5. serving (local API Gateway -> real API Lambda handler -> local inference servers):")
    for config in configs:
        mode.log(f"   {url}/{config.route}")
    mode.log(f"   {url}/v1/embeddings")
    if mode.lambda_log:
        mode.log(f"   the API Lambda's log and EMF metrics (CloudWatch Logs in AWS): {mode.lambda_log}")
    mode.log(f"   try: curl -s -X POST {url}/{configs[0].route} -H 'Content-Type: application/json' -d '{{\"text\": \"a photo of a dog\"}}'")


def shut_down(mode: LocalMode) -> None:
    """Whatever the stages started, in reverse; the state file goes last."""
    mode.log("stopping: inference servers, API, control plane")
    if mode.gateway is not None:
        mode.gateway.stop()
    if mode.servers is not None:
        mode.servers.stop_all()
    if mode.router is not None:
        mode.router.stop()
    if mode.control_plane is not None:
        mode.control_plane.stop()
    (mode.workdir / "state.json").unlink(missing_ok=True)


def send_examples(api_url: str, config: ModelConfig, log) -> None:
    """The seed's request formats against the stable URL, as a consumer sends them."""
    import base64
    import urllib.error
    import urllib.request

    from model_validation.probes import photographs

    def post(payload: dict) -> tuple[int, bytes]:
        request = urllib.request.Request(f"{api_url}/{config.route}", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except OSError as error:  # no answer (an inference server killed under it): an example, no reason to stop serving
            return 0, json.dumps(str(error)).encode()

    photo = photographs()[0] if photographs() else None
    examples = [("text", {"text": "a photo of a dog"}), ("texts", {"texts": ["a dog", "a cat"]}), ("empty text", {"text": ""})]
    if photo:
        examples.insert(1, (f"image ({photo.name})", {"image": base64.b64encode(photo.data).decode()}))
    log("6. example requests to the stable URL:")
    for label, payload in examples:
        status, body = post(payload)
        answer = json.loads(body)
        if status == 200 and answer and isinstance(answer[0], list):
            summary = f"{len(answer)} embeddings of {len(answer[0])} floats"
        elif status == 200:
            summary = f"{len(answer)} floats, norm {sum(v * v for v in answer) ** 0.5:.6f}"
        else:
            summary = json.dumps(answer)
        log(f"   {label}: {status} {summary}")


def golden_case(run_dir: Path) -> str:
    """Which golden references the validation gate applied, from the run's evaluation.json."""
    for report in sorted(Path(run_dir).glob("Validate/**/evaluation.json")):
        data = json.loads(report.read_text())
        return f"golden references: {data.get('golden', {}).get('note') or data['verdict'].get('golden', 'none')}"
    return "golden references: see the Validate step's evaluation.json"


def _post_json(url: str, payload: dict):
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def zero_shot_example(api_url: str, config: ModelConfig, weights: str, log) -> list[tuple[str, list[tuple[str, float]]]]:
    """Score two images a person can judge (a rendered word, a bundled photo) against a few labels, through the stable URL."""
    import base64
    import io

    import numpy as np

    from model_validation.probes import ZERO_SHOT_PROMPT, photographs, render_word

    buffer = io.BytesIO()
    render_word("guitar").save(buffer, "PNG")
    cases = [("an image of the rendered word \"guitar\"", buffer.getvalue(),
              [ZERO_SHOT_PROMPT.format(word) for word in ("guitar", "pizza", "boat", "clock", "bird")])]
    cat = next((photo for photo in photographs() if photo.name == "photo-chelsea.png"), None)
    if cat is not None:
        cases.append(("scikit-image's photo chelsea.png", cat.data,
                      ["a photo of a cat", "a photo of a dog", "a photo of a car", "a photo of a pizza", "a photo of the moon"]))
    note = "" if weights == "pretrained" else " (random weights: these scores mean nothing)"
    log(f"7. zero-shot example through {api_url}/{config.route}: softmax(100 x cosine) over the labels{note}")
    results = []
    for description, image, labels in cases:
        url = f"{api_url}/{config.route}"
        try:
            image_vector = np.asarray(_post_json(url, {"image": base64.b64encode(image).decode()}))
            label_vectors = np.asarray(_post_json(url, {"texts": labels}))
        except OSError as error:  # urllib's errors: an example that failed is no reason to stop serving
            log(f"   {description}: the request failed ({error}); local mode keeps serving")
            continue
        logits = 100 * label_vectors @ image_vector
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        ranked = sorted(zip(labels, probabilities.tolist()), key=lambda item: -item[1])
        results.append((description, ranked))
        log(f"   {description}: " + ", ".join(f"{label!r} {100 * p:.1f}%" for label, p in ranked[:3]))
    return results


def register_state_machine(session, stack_name: str, topic_arn: str) -> str:
    """Give moto's executing Step Functions engine the stack's state machine.

    moto keeps state machines created by its CloudFormation in its non-executing Step Functions
    backend when execution is enabled, so the same committed ASL is registered here with the same
    substitutions and the stack's own role.
    """
    from promotion.workflow_asl import ASL_PATH, substitute

    lambda_client = session.client("lambda")
    # CloudFormation names the role <stack>-StateMachineRole-<suffix> (moto's DescribeStackResource
    # fails on stacks holding resources it skipped, such as alarms).
    role_arn = next(r["Arn"] for r in session.client("iam").list_roles()["Roles"] if r["RoleName"].startswith(f"{stack_name}-StateMachineRole"))
    definition = substitute(ASL_PATH.read_text(), {
        "Partition": "aws",
        "PlanFunctionArn": lambda_client.get_function(FunctionName=PLANNER_FUNCTION)["Configuration"]["FunctionArn"],
        "SmokeTestFunctionArn": lambda_client.get_function(FunctionName=SMOKE_TEST_FUNCTION)["Configuration"]["FunctionArn"],
        "TopicArn": topic_arn,
    })
    return session.client("stepfunctions").create_state_machine(name=STATE_MACHINE, definition=definition, roleArn=role_arn)["stateMachineArn"]


def _read_state(workdir: Path) -> dict:
    path = Path(workdir) / "state.json"
    if not path.is_file():
        raise SystemExit("local mode is not running (no .local/state.json): start it with `clip-api local up`")
    return json.loads(path.read_text())


def control_plane_session(workdir: Path = Path(".local")):
    """A boto3 session on the running local mode's control plane (its state file names where)."""
    from local_mode.control_plane import ControlPlaneSession

    return ControlPlaneSession(_read_state(workdir)["control_plane"])


def approve(model_id: str, version: int, workdir: Path = Path(".local"), adopt_space: bool = False) -> str:
    """Approve a version, as a person does in the Model Registry. `adopt_space` also records the
    decision to move the stable URL to the version's embedding space (issue 17): the package's
    `adopt_space` metadata, set to its own `space`, in the same call as the approval."""
    from local_mode.journal import journal_for, record_status
    from local_mode.promotion import set_approval
    from promotion.plan import ADOPT_SPACE_KEY, SPACE_KEY

    sagemaker = control_plane_session(workdir).client("sagemaker")
    group = load_model_config(model_id).registry.model_package_group
    for package in sagemaker.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]:
        if package["ModelPackageVersion"] == version:
            arn = package["ModelPackageArn"]
            recorded = None
            if adopt_space:
                space = sagemaker.describe_model_package(ModelPackageName=arn).get("CustomerMetadataProperties", {}).get(SPACE_KEY)
                if not space:
                    raise SystemExit(f"{model_id} version {version} records no embedding space: there is nothing to adopt")
                recorded = {ADOPT_SPACE_KEY: space}
            set_approval(sagemaker, arn, "Approved", recorded)
            record_status(journal_for(workdir), sagemaker, arn, "clip-api local approve")
            return arn
    raise SystemExit(f"{model_id} has no version {version} in the local registry")


def build(model_id: str, parameters: dict, workdir: Path = Path(".local")):
    """Run the model's pipeline again against the running local mode: a new registered version."""
    from local_mode.control_plane import ACCOUNT, REGION
    from pipeline.aws import run_pipeline_locally

    session = control_plane_session(workdir)
    config = load_model_config(model_id)
    if config.demo_only:
        parameters = {"WeightsSource": RANDOM_INIT, **parameters}  # demo models have no released weights
    pipeline_settings = local_pipeline_settings(os.environ.get(BUCKET_ENV) or artifact_bucket_name(ACCOUNT, REGION))
    result = run_pipeline_locally(config, pipeline_settings, Path(workdir) / "pipeline-runs", parameters,
                                  log=lambda line: print(line, file=sys.stderr), session=session)
    if result.model_package_arn:
        from local_mode.journal import journal_for, record_package

        record_package(journal_for(workdir), session.client("sagemaker"), session.client("s3"), result.model_package_arn, "clip-api local build")
    return result


def down(workdir: Path = Path(".local")) -> str:
    path = Path(workdir) / "state.json"
    if not path.is_file():
        return "nothing to stop"
    state = json.loads(path.read_text())
    try:
        os.kill(state["pid"], signal.SIGINT)
        message = f"asked local mode (pid {state['pid']}) to stop"
    except ProcessLookupError:
        message = "local mode was not running; removed its stale state"
    path.unlink(missing_ok=True)
    return message


def main_up(settings: LocalSettings) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        run_local(settings, stop=stop, log=lambda line: print(line, flush=True))
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
