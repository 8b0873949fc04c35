"""`clip-api`: one command line for building, validating, serving and deploying CLIP embeddings.

Subcommands import what they need when they run, so `clip-api serve` never loads torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _cmd_serve(args: argparse.Namespace) -> int:
    from inference_code.artifact import open_artifact
    from inference_code.server import serve

    serve(open_artifact(args.artifact), host=args.host, port=args.port)
    return 0


def _parse_parameters(pairs: list[str]) -> dict[str, str]:
    parameters = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--param takes Name=Value, got {pair!r}")
        parameters[name] = value
    return parameters


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from clip_core.model_config import load_model_config
    from pipeline.settings import PipelineSettings

    config = load_model_config(args.model_id) if args.model_id else None
    if config is None and args.action != "changed":
        raise SystemExit(f"clip-api pipeline {args.action} needs a MODEL_ID")
    settings = PipelineSettings.from_env()
    if args.action in ("upsert", "start") and "CLIP_API_PIPELINE_ROLE_ARN" not in os.environ:
        import boto3

        from infra.deploy import pipeline_settings_from_stacks

        settings = pipeline_settings_from_stacks(boto3.Session())  # the deployed stacks' outputs: role ARNs are never guessed
    if args.action == "definition":
        from pipeline.definition import pipeline_definition

        print(json.dumps(pipeline_definition(config, settings), indent=2))
        return 0
    if args.action == "upsert":
        from pipeline.aws import upsert_pipeline

        print(upsert_pipeline(config, settings))
        return 0
    if args.action == "start":
        from pipeline.aws import start_pipeline

        print(start_pipeline(config, settings, _parse_parameters(args.param)))
        return 0
    if args.action == "changed":
        import subprocess

        from clip_core.model_config import load_all_model_configs
        from pipeline.changes import changed_models

        model_ids = [c.model_id for c in load_all_model_configs() if not c.demo_only]
        if not args.base:  # nothing deployed yet: every model is new
            print("\n".join(sorted(model_ids)))
            return 0
        diff = subprocess.run(["git", "diff", "--name-only", args.base, "HEAD"], capture_output=True, text=True)
        if diff.returncode != 0:  # the base is not in this history (a rewritten branch): rebuild everything rather than miss a change
            print(f"cannot compare with {args.base}: starting every model's pipeline", file=sys.stderr)
            print("\n".join(sorted(model_ids)))
            return 0
        print("\n".join(changed_models(diff.stdout.split(), model_ids)))
        return 0
    from pipeline.aws import run_pipeline_locally

    print(f"running the {config.model_id} pipeline definition locally in {args.workdir}")
    result = run_pipeline_locally(config, settings, Path(args.workdir), _parse_parameters(args.param))
    print(json.dumps({"status": result.status, "model_package_arn": result.model_package_arn,
                      "failure_reason": result.failure_reason, "steps": [vars(s) for s in result.steps]}, indent=2))
    return 0 if result.status == "Succeeded" else 1


def _cmd_openapi(args: argparse.Namespace) -> int:
    from clip_core.paths import REPO_ROOT
    from clip_lambdas.api.app import openapi_spec

    text = json.dumps(openapi_spec(), indent=2, sort_keys=True) + "\n"
    if args.write:
        (REPO_ROOT / "lambda" / "clip_lambdas" / "api" / "openapi.json").write_text(text)
    else:
        print(text, end="")
    return 0


def _cmd_infra(args: argparse.Namespace) -> int:
    from infra.stacks import write_all

    for path in write_all():
        print(f"wrote {path}")
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    import boto3

    from clip_core.model_config import load_all_model_configs
    from infra.deploy import deploy

    from infra.deploy import last_deployed_commit, record_deployed_commit

    session = boto3.Session()
    if args.action == "last-commit":
        print(last_deployed_commit(session))
        return 0
    if args.action == "record-commit":
        if not args.commit:
            raise SystemExit("clip-api deploy record-commit needs a COMMIT")
        record_deployed_commit(session, args.commit)
        return 0
    models = tuple(c.model_id for c in load_all_model_configs() if not c.demo_only)
    deploy(session, models, dry_run=args.dry_run, notification_email=args.email)
    return 0


def _local_mode(verbose: bool = False):
    """local_mode.up, with the output configured first: the libraries warn and log as they are imported."""
    from local_mode.output import configure

    configure(verbose)
    from local_mode import up

    return up


def _cmd_local_up(args: argparse.Namespace) -> int:
    up = _local_mode(args.verbose)
    models = tuple(args.models.split(",")) if args.models else up.DEFAULT_MODELS
    settings = up.LocalSettings(models=models, approve=args.approve, random_weights=args.random_weights, api_port=args.port,
                                moto_port=args.moto_port, workdir=Path(args.workdir), exit_when_ready=args.exit_when_ready,
                                verbose=args.verbose)
    return up.main_up(settings)


def _cmd_local_approve(args: argparse.Namespace) -> int:
    up = _local_mode()
    print(f"approved {up.approve(args.model_id, args.version, Path(args.workdir), adopt_space=args.adopt_space)}")
    return 0


def _cmd_local_build(args: argparse.Namespace) -> int:
    up = _local_mode(args.verbose)
    result = up.build(args.model_id, _parse_parameters(args.param), Path(args.workdir))
    print(json.dumps({"status": result.status, "model_package_arn": result.model_package_arn,
                      "failure_reason": result.failure_reason}, indent=2))
    return 0 if result.status == "Succeeded" else 1


def _cmd_local_down(args: argparse.Namespace) -> int:
    print(_local_mode().down(Path(args.workdir)))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from model_benchmark.benchmark import render_table, run_benchmark, save_results

    results = run_benchmark(
        args.models.split(","), args.variants.split(","), Path(args.out_dir), requests=args.requests, port=args.port
    )
    print(render_table(results))
    if args.json:
        save_results(results, Path(args.json))
    return 0


def _cmd_loadtest(args: argparse.Namespace) -> int:
    from clip_api.loadtest import LoadSettings, LoadTestError, local_mode_processes, parse_mix, render, run_loadtest

    try:
        width, _, height = args.image_size.partition("x")
        settings = LoadSettings(url=args.url, clients=args.clients, duration_s=args.duration, mix=parse_mix(args.mix), hostile=args.hostile,
                                server_pids=tuple(args.server_pid), timeout_s=args.timeout, max_requests=args.max_requests,
                                image_size=(int(width), int(height)), retry_wait_max_s=args.retry_wait_max, seed=args.seed)
        limits = None
        if args.model:
            from clip_core.model_config import load_model_config

            limits = load_model_config(args.model).serving.limits
        local = {} if args.server_pid else local_mode_processes(args.url, Path(args.local_workdir))
        report = run_loadtest(settings, limits, processes=(lambda: local_mode_processes(args.url, Path(args.local_workdir))) if local else None)
    except (LoadTestError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


def build_parser() -> argparse.ArgumentParser:
    from model_build.cli import add_commands as add_build_commands
    from model_validation.cli import add_commands as add_validation_commands

    parser = argparse.ArgumentParser(prog="clip-api", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve an artifact on the SageMaker container contract (/ping, /invocations)")
    serve.add_argument("artifact", help="model.tar.gz or its extracted directory")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(func=_cmd_serve)

    add_build_commands(commands)
    add_validation_commands(commands)

    pipeline = commands.add_parser("pipeline", help="the model's SageMaker Pipeline: definition, upsert, start, run-local")
    pipeline.add_argument("action", choices=["definition", "upsert", "start", "run-local", "changed"])
    pipeline.add_argument("model_id", nargs="?", help="a config under configs/models/ (not for 'changed')")
    pipeline.add_argument("--base", default="HEAD~1", help="changed: the revision to compare HEAD with")
    pipeline.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                          help="pipeline parameter (WeightsSource, Variant, ProcessingInstanceType, GitCommit)")
    pipeline.add_argument("--workdir", default=".local/pipeline-runs", help="run-local: where processing jobs run")
    pipeline.set_defaults(func=_cmd_pipeline)

    openapi = commands.add_parser("openapi", help="print (or --write) the public API's OpenAPI spec")
    openapi.add_argument("--write", action="store_true", help="write lambda/clip_lambdas/api/openapi.json")
    openapi.set_defaults(func=_cmd_openapi)

    infra = commands.add_parser("infra", help="render the CloudFormation templates under infra/ from the model configs")
    infra.add_argument("action", choices=["render"])
    infra.set_defaults(func=_cmd_infra)

    deploy = commands.add_parser("deploy", help="stand the system up in the AWS account of your credentials (idempotent)")
    deploy.add_argument("action", nargs="?", default="apply", choices=["apply", "last-commit", "record-commit"],
                        help="apply (default): deploy; last-commit: print the last commit whose deploy finished; record-commit COMMIT: record it")
    deploy.add_argument("commit", nargs="?", help="record-commit: the commit")
    deploy.add_argument("--dry-run", action="store_true", help="print what would be done and stop")
    deploy.add_argument("--email", default=None, help="e-mail subscribed to promotion notifications (omitted: keep the current one)")
    deploy.set_defaults(func=_cmd_deploy)

    local = commands.add_parser("local", help="the whole loop on this machine: up, approve, build, down",
                                description="The whole loop on this machine, no AWS account: `clip-api local VERB --help` for each verb.")
    verbs = local.add_subparsers(dest="action", required=True, metavar="VERB")

    def verb(name: str, summary: str) -> argparse.ArgumentParser:
        return verbs.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")

    workdir_help = "local mode's working directory (its state.json, pipeline runs, logs)"
    verbose_help = "also print the libraries' warnings and INFO logs (sagemaker, moto)"

    local_up = verb("up", "start local mode: control plane, build, promotion, stable URLs (Ctrl-C stops)")
    local_up.add_argument("--models", help="comma-separated model ids (default: clip-vit-b-32; add clip-vit-l-14 for L/14, "
                          "minutes more to build; the tiny model where weights cannot be had)")
    local_up.add_argument("--approve", action="store_true", help="approve each registered version at once")
    local_up.add_argument("--random-weights", action="store_true", help="full-size architectures at random init (demo only)")
    local_up.add_argument("--port", type=int, default=8000, help="port of the local API")
    local_up.add_argument("--moto-port", type=int, default=5000, help="port of the local AWS control plane")
    local_up.add_argument("--exit-when-ready", action="store_true", help="stop after the first promotion and the example requests")
    local_up.add_argument("--workdir", default=".local", help=workdir_help)
    local_up.add_argument("-v", "--verbose", action="store_true",
                          help=verbose_help + "; the API Lambda's log and EMF metrics on stdout instead of WORKDIR/api-lambda.log")
    local_up.set_defaults(func=_cmd_local_up)

    local_approve = verb("approve", "approve a registered version in the running local mode (as a person does in the registry)")
    local_approve.add_argument("model_id", help="the model, e.g. clip-tiny")
    local_approve.add_argument("version", type=int, help="the model package version")
    local_approve.add_argument("--adopt-space", action="store_true",
                               help="also move the stable URL to this version's embedding space (consumers must re-embed)")
    local_approve.add_argument("--workdir", default=".local", help=workdir_help)
    local_approve.set_defaults(func=_cmd_local_approve)

    local_build = verb("build", "run a model's pipeline against the running local mode: a new registered version")
    local_build.add_argument("model_id", help="the model, e.g. clip-tiny")
    local_build.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                             help="pipeline parameter (e.g. Variant=int8, RandomInitSeed=1)")
    local_build.add_argument("--workdir", default=".local", help=workdir_help)
    local_build.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    local_build.set_defaults(func=_cmd_local_build)

    local_down = verb("down", "stop a running local mode")
    local_down.add_argument("--workdir", default=".local", help=workdir_help)
    local_down.set_defaults(func=_cmd_local_down)

    bench = commands.add_parser("bench", help="benchmark baseline vs fp32 vs int8 through /invocations (prints a table)")
    bench.add_argument("--models", default="clip-vit-b-32,clip-vit-l-14")
    bench.add_argument("--variants", default="baseline,fp32,int8")
    bench.add_argument("--requests", type=int, default=20, help="requests per latency measurement")
    bench.add_argument("--out-dir", default=".artifacts/bench", help="where benchmark artifacts are packaged (reused)")
    bench.add_argument("--port", type=int, default=18080)
    bench.add_argument("--json", help="also write the figures as JSON here")
    bench.set_defaults(func=_cmd_bench)

    loadtest = commands.add_parser("loadtest", help="concurrent text/image clients against a local URL: statuses, latency, RSS")
    loadtest.add_argument("url", help="a loopback URL: http://127.0.0.1:8000/<route> (local mode) or http://127.0.0.1:8080/invocations")
    loadtest.add_argument("--clients", type=int, default=8, help="concurrent clients (at most 256)")
    loadtest.add_argument("--duration", type=float, default=10.0, help="seconds of sending (at most 600)")
    loadtest.add_argument("--mix", default="text=0.5,image=0.5", help="weights of request kinds")
    loadtest.add_argument("--hostile", action="store_true", help="add one client sending the most work the limits admit")
    loadtest.add_argument("--model", help="a model config whose limits size the hostile requests (default: the default limits)")
    loadtest.add_argument("--server-pid", type=int, action="append", default=[], help="a server process whose RSS to report "
                          "(default: local mode's processes when URL is its API gateway)")
    loadtest.add_argument("--local-workdir", default=".local", help="local mode's workdir (its state.json names its processes)")
    loadtest.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    loadtest.add_argument("--max-requests", type=int, help="stop after this many requests")
    loadtest.add_argument("--image-size", default="1024x768", help="WIDTHxHEIGHT of the generated JPEGs")
    loadtest.add_argument("--retry-wait-max", type=float, default=1.0, help="a client told Retry-After waits at most this long (0: not at all)")
    loadtest.add_argument("--seed", type=int, default=0)
    loadtest.add_argument("--json", help="also write the report as JSON here")
    loadtest.set_defaults(func=_cmd_loadtest)

    from clip_api.embed_dataset_cli import add_commands as add_embed_dataset

    add_embed_dataset(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
