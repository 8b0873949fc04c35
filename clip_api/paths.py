"""Where the repository's data lives, wherever the package is installed from."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = Path(os.environ.get("CLIP_API_CONFIGS_DIR", REPO_ROOT / "configs"))
MODEL_CONFIGS_DIR = CONFIGS_DIR / "models"
OPEN_CLIP_CONFIGS_DIR = CONFIGS_DIR / "open_clip"
