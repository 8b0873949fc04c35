"""Where the model configs are: inside this package, or wherever CLIP_API_CONFIGS_DIR says.

`clip_core/configs` is the repository's `configs/` (a link in the source tree; wheels copy the files),
so an installed package finds its configs without a git checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIGS_DIR_ENV = "CLIP_API_CONFIGS_DIR"
PACKAGED_CONFIGS_DIR = Path(__file__).with_name("configs")
CONFIGS_DIR = Path(os.environ.get(CONFIGS_DIR_ENV, PACKAGED_CONFIGS_DIR))
MODEL_CONFIGS_DIR = CONFIGS_DIR / "models"
OPEN_CLIP_CONFIGS_DIR = CONFIGS_DIR / "open_clip"
# Source-tree tooling only (rendering templates, building the Lambda zip): never used to find configs.
REPO_ROOT = Path(__file__).resolve().parent.parent
