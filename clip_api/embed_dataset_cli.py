"""The `clip-api embed-dataset` subcommand (registered by clip_api/cli.py); imports its work lazily."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_embed_dataset(args: argparse.Namespace) -> int:
    from clip_api import bulk
    from clip_api.embed_dataset import EmbedDatasetError, describe_result, resolve_model, run_local

    session = None
    out = Path(args.out)
    try:
        if not args.artifact:
            session = _session(args)
        if args.backend == "batch-transform" or str(args.input).startswith("s3://"):
            from clip_api.batch_transform import run_batch_transform

            if args.artifact:
                raise EmbedDatasetError("Batch Transform runs a registered, approved package: drop --artifact, use --version")
            result = run_batch_transform(session, args.model_id, args.input, out, version=args.version, s3_prefix=args.s3_prefix,
                                         instance_type=args.instance_type, instances=args.instances, role_arn=args.role_arn,
                                         shard_records=args.shard_records, restart=args.restart, keep_parts=args.keep_parts,
                                         space=args.space)
        else:
            model = resolve_model(args.model_id, args.version, args.artifact, session, cache_dir=Path(str(out) + bulk.PARTS_SUFFIX),
                                  space=args.space)
            result = run_local(model, args.input, out, workers=args.workers, shard_bytes=args.shard_bytes, shard_records=args.shard_records,
                               progress=not args.no_progress, restart=args.restart, keep_parts=args.keep_parts,
                               server_urls=args.server_url or None)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the finished shards are kept in {out}{bulk.PARTS_SUFFIX}; run the same command again to resume", file=sys.stderr)
        return 130
    except (EmbedDatasetError, bulk.DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(describe_result(result), indent=2))
    return 0


def _session(args: argparse.Namespace):
    """The running local mode's control plane (--local-mode), or the AWS account of the environment's credentials."""
    if args.local_mode:
        from local_mode.up import control_plane_session

        return control_plane_session(Path(args.local_workdir))
    import boto3

    return boto3.Session()


def _cmd_bench_bulk(args: argparse.Namespace) -> int:
    from clip_api.bench_bulk import CostAssumptions, costs, default_artifact, render, run_bulk_bench, to_json

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    artifact = Path(args.artifact) if args.artifact else default_artifact(args.model, args.variant, Path(args.out_dir), log)
    width, _, height = args.image_size.partition("x")
    result = run_bulk_bench(artifact, args.model, images=args.images, texts=args.texts, image_size=(int(width), int(height)),
                            workers=tuple(int(w) for w in args.workers.split(",")), log=log)
    assumptions = CostAssumptions(args.instance_type, args.instance_price, args.instance_vcpus, args.serverless_memory_mb)
    cost = costs(result, assumptions)
    print(render(result, cost))
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(result, cost), indent=2))
    return 1 if result.mismatches else 0


def add_commands(commands) -> None:
    from clip_api.bulk import DEFAULT_SHARD_BYTES, DEFAULT_SHARD_RECORDS

    p = commands.add_parser(
        "embed-dataset",
        help="embed a dataset (folder of images, JSONL/CSV/Parquet manifest, S3 prefix) into Parquet with the approved model",
    )
    p.add_argument("model_id", help="a config under configs/models/, e.g. clip-vit-b-32")
    p.add_argument("input", help="a folder of images, a .jsonl/.csv/.parquet manifest (id + text or image), or an s3:// prefix or manifest")
    p.add_argument("--out", required=True, help="the output .parquet (resumable parts go to OUT.parts/)")
    p.add_argument("--version", default="live", help="'live' (the package that serves, from the serving pointer) or a package version number")
    p.add_argument("--artifact", help="a model.tar.gz to use instead of the registry (local runs only)")
    p.add_argument("--space", help="the embedding space (12 hex, as X-Clip-Space names it) the vectors must be in: refuses, before any work, "
                   "a package or artifact of another space (re-embedding a catalogue into a new space); the output records the space either way")
    p.add_argument("--local-mode", action="store_true", help="resolve the package in local mode's control plane (clip-api local up)")
    p.add_argument("--local-workdir", default=".local", help="local mode's workdir")
    p.add_argument("--workers", type=int, default=1, help="local inference servers (each gets cores // workers threads)")
    p.add_argument("--server-url", action="append", default=[], help="use a running inference server instead of starting one (repeatable)")
    p.add_argument("--shard-records", type=int, default=DEFAULT_SHARD_RECORDS, help="items per shard (one request / one S3 object)")
    p.add_argument("--shard-bytes", type=int, default=DEFAULT_SHARD_BYTES, help="bytes of records per shard")
    p.add_argument("--restart", action="store_true", help="discard the parts of an earlier run instead of resuming")
    p.add_argument("--keep-parts", action="store_true", help="keep OUT.parts/ after writing OUT")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--backend", choices=["local", "batch-transform"], default="local", help="default: local (batch-transform for s3:// inputs)")
    p.add_argument("--instance-type", default="ml.c5.2xlarge", help="batch-transform: instance type")
    p.add_argument("--instances", type=int, default=1, help="batch-transform: instance count")
    p.add_argument("--s3-prefix", help="batch-transform: where shards and .out files go (default: s3://$CLIP_API_BUCKET/batch/...)")
    p.add_argument("--role-arn", help="batch-transform: the transform role (default: the serving stack's TransformRoleArn output)")
    p.set_defaults(func=_cmd_embed_dataset)

    b = commands.add_parser("bench-bulk", help="items/s of embed-dataset's local bulk path vs single requests on this machine, and cost per million images")
    b.add_argument("--model", default="clip-vit-b-32")
    b.add_argument("--variant", default="int8", help="the package built at random init when --artifact is not given (default: int8, as served)")
    b.add_argument("--artifact", help="a packaged artifact directory or model.tar.gz to use instead")
    b.add_argument("--out-dir", default=".artifacts/bench", help="where the random-init package is built (reused)")
    b.add_argument("--images", type=int, default=256)
    b.add_argument("--image-size", default="512x384", help="WIDTHxHEIGHT of the generated JPEGs")
    b.add_argument("--texts", type=int, default=512)
    b.add_argument("--workers", default="1,2", help="bulk runs to measure, by --workers")
    b.add_argument("--instance-type", default="ml.m5.xlarge", help="Batch Transform instance type for the cost figure")
    b.add_argument("--instance-price", type=float, help="its $/hour (default: the list price in clip_api/bench_bulk.py)")
    b.add_argument("--instance-vcpus", type=int, help="its vCPUs (default: from clip_api/bench_bulk.py)")
    b.add_argument("--serverless-memory-mb", type=int, default=4096, help="the serverless endpoint's memory (the config's endpoint.memory_mb)")
    b.add_argument("--json", help="also write the figures as JSON here")
    b.set_defaults(func=_cmd_bench_bulk)
