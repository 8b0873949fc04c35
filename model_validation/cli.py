"""The validation verbs of `clip-api` (validate, references), here beside the code they run so that the
pipeline's Validate step calls them without the CLI package (pipeline/processing_entry.py).

Each verb imports what it needs when it runs (torch only for references).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_validate(args: argparse.Namespace) -> int:
    from clip_core.model_config import load_model_config
    from inference_code.artifact import open_artifact
    from inference_code.manifest import ArtifactIntegrityError, load_manifest
    from model_validation.validate import validate_artifact

    artifact_dir = open_artifact(args.artifact)
    try:
        config = load_model_config(args.model_id or load_manifest(artifact_dir).model_id)
        result = validate_artifact(artifact_dir, config, golden_file=Path(args.golden) if args.golden else None)
    except ArtifactIntegrityError as exc:  # e.g. a recorded embedding space that its manifest's fields do not give
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result.write(Path(args.report))
    verdict = result.report["verdict"]
    print(json.dumps({"passed": verdict["passed"], "reasons": verdict["reasons"], "report": args.report}, indent=2))
    return 0 if verdict["passed"] or not args.fail_on_reject else 1


def _cmd_references(args: argparse.Namespace) -> int:
    from clip_core.model_config import load_model_config
    from model_build.reference import OpenClipReference
    from model_build.weights import WeightsUnavailableError, build_model
    from model_build.weights_source import WeightsSource
    from model_validation.golden import compute_golden, golden_path
    from model_validation.probes import probe_images, probe_texts

    config = load_model_config(args.model_id)
    try:
        built = build_model(config, WeightsSource.parse(args.weights), seed=args.seed)
    except WeightsUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    golden = compute_golden(OpenClipReference(built.model, built.architecture), built, config.model_id, probe_texts(), probe_images())
    out = Path(args.out) if args.out else golden_path(config.model_id)
    golden.save(out)
    print(json.dumps({"written": str(out), **golden.metadata}, indent=2))
    return 0


def add_commands(commands) -> None:
    """Add the validation verbs to an argparse subparsers object (clip-api's, or the processing entry's)."""
    validate = commands.add_parser("validate", help="measure an artifact as an endpoint serves it; write evaluation.json")
    validate.add_argument("artifact", help="model.tar.gz or its extracted directory")
    validate.add_argument("--report", required=True, help="where to write evaluation.json (model_quality.json goes beside it)")
    validate.add_argument("--model-id", help="the config to validate against (default: the manifest's model id)")
    validate.add_argument("--golden", help="golden references file (default: configs/models/<model_id>.golden.npz if present)")
    validate.add_argument("--fail-on-reject", action="store_true", help="exit 1 when the verdict fails")
    validate.set_defaults(func=_cmd_validate)

    references = commands.add_parser("references", help="compute golden reference embeddings of a model's weights")
    references.add_argument("model_id")
    references.add_argument("--weights", default="pretrained", help="pretrained (default), random-init (also: random), or a checkpoint")
    references.add_argument("--seed", type=int, default=0)
    references.add_argument("--out", help="default: configs/models/<model_id>.golden.npz")
    references.set_defaults(func=_cmd_references)
