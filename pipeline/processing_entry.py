"""Entry script of both Processing steps: `python3 processing_entry.py <clip-api arguments>`.

SageMaker copies this file to /opt/ml/processing/input/code/ inside the processing image, where
the clip-embedding-api package is installed; it hands over to the verbs of the CLI people run
(`clip-api package|validate|references`), which live beside the code they run: model_build's package,
model_validation's validate and references.
"""

import argparse
import sys

from model_build.cli import add_commands as add_build_commands
from model_validation.cli import add_commands as add_validation_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clip-api", description="build, validate and reference CLIP serving artifacts")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_build_commands(commands)
    add_validation_commands(commands)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
