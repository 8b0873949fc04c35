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
    if args.local_mode:
        from clip_api.paths import REPO_ROOT

        sys.path.insert(0, str(REPO_ROOT / "lambda"))
        from local_mode import up

        up._use_control_plane(up._read_state(Path(args.local_workdir)))
    out = Path(args.out)
    try:
        if not args.artifact:
            import boto3

            session = boto3.Session()
        if args.backend == "batch-transform" or str(args.input).startswith("s3://"):
            from clip_api.batch_transform import run_batch_transform

            if args.artifact:
                raise EmbedDatasetError("Batch Transform runs a registered, approved package: drop --artifact, use --version")
            result = run_batch_transform(session, args.model_id, args.input, out, version=args.version, s3_prefix=args.s3_prefix,
                                         instance_type=args.instance_type, instances=args.instances, role_arn=args.role_arn,
                                         shard_records=args.shard_records, restart=args.restart, keep_parts=args.keep_parts)
        else:
            model = resolve_model(args.model_id, args.version, args.artifact, session, cache_dir=Path(str(out) + bulk.PARTS_SUFFIX))
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
