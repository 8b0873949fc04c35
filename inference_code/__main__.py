"""Container entrypoint: `python -m inference_code serve [--model-dir DIR] [--port N]`.

SageMaker starts bring-your-own containers as `docker run IMAGE serve` with the model
extracted under /opt/ml/model and expects the server on port 8080.
"""

from __future__ import annotations

import argparse
import os

from inference_code.artifact import extracted_artifact
from inference_code.server import DEFAULT_MODEL_DIR, serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m inference_code")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="serve an artifact on the SageMaker container contract")
    serve_cmd.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", DEFAULT_MODEL_DIR))
    serve_cmd.add_argument("--host", default="0.0.0.0")
    serve_cmd.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080")))
    args = parser.parse_args(argv)
    with extracted_artifact(args.model_dir) as model_dir:
        serve(model_dir, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
