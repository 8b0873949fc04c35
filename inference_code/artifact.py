"""Opening a serving artifact: a directory as SageMaker extracts it, or the model.tar.gz itself."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

from inference_code.manifest import MANIFEST_FILE


def open_artifact(path: Path | str, extract_to: Path | str | None = None) -> Path:
    """Return a directory holding the artifact, extracting a .tar.gz (safely) if needed."""
    path = Path(path)
    if path.is_dir():
        if not (path / MANIFEST_FILE).is_file():
            raise FileNotFoundError(f"{path} holds no {MANIFEST_FILE}: not a serving artifact")
        return path
    if not path.is_file():
        raise FileNotFoundError(f"artifact {path} does not exist")
    target = Path(extract_to) if extract_to else Path(tempfile.mkdtemp(prefix="clip-artifact-"))
    with tarfile.open(path, "r:*") as archive:
        archive.extractall(target, filter="data")
    if not (target / MANIFEST_FILE).is_file():
        raise FileNotFoundError(f"{path} holds no {MANIFEST_FILE} at its root: not a serving artifact")
    return target
