"""Entry script of both Processing steps: `python3 processing_entry.py <clip-api arguments>`.

SageMaker copies this file to /opt/ml/processing/input/code/ inside the processing image, where
the clip-embedding-api package is installed; it only hands over to the same CLI people run.
"""

import sys

from clip_api.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
