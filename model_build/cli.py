"""The build verb of `clip-api` (package), here beside the code it runs so that the pipeline's Package step
calls it without the CLI package (pipeline/processing_entry.py). It imports torch only when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_package(args: argparse.Namespace) -> int:
    from clip_core.model_config import load_model_config
    from model_build.package import describe, package_model
    from model_build.weights import WeightsUnavailableError
    from model_build.weights_source import WeightsSource

    config = load_model_config(args.model_id)
    try:
        result = package_model(
            config,
            Path(args.out),
            WeightsSource.parse(args.weights),
            variant=args.variant,
            seed=args.seed,
            architecture=args.architecture,
        )
    except WeightsUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = describe(result)
    if args.tarball_only:
        import shutil

        shutil.rmtree(result.directory)
    print(json.dumps(summary, indent=2))
    return 0


def add_commands(commands) -> None:
    """Add the build verb to an argparse subparsers object (clip-api's, or the processing entry's)."""
    package = commands.add_parser("package", help="build a serving artifact (model.tar.gz) for a model config")
    package.add_argument("model_id", help="a config under configs/models/, e.g. clip-vit-b-32")
    package.add_argument("--out", required=True, help="output directory")
    package.add_argument(
        "--weights",
        default="pretrained",
        help="pretrained (the config's open_clip tag), random-init (seeded, demo only; also: random), or a checkpoint PATH / s3:// URI",
    )
    package.add_argument("--seed", type=int, default=0, help="seed for --weights random-init")
    package.add_argument("--variant", choices=["fp32", "int8"], help="default: the config's serving variant")
    package.add_argument("--architecture", help="override the open_clip architecture (experiments only)")
    package.add_argument("--tarball-only", action="store_true", help="keep only model.tar.gz and manifest.json in --out")
    package.set_defaults(func=_cmd_package)
