"""Entry script of both Processing steps: `python3 processing_entry.py <clip-api arguments>`.

SageMaker copies this file to /opt/ml/processing/input/code/ inside the processing image, where
the clip-embedding-api package is installed; it hands over to the build verbs of the CLI people run
(`clip-api package|validate`), which live in model_build.
"""

import sys

from model_build.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
