"""Opening a serving artifact: a directory as SageMaker extracts it, or the model.tar.gz itself.

A .tar.gz is extracted to a `clip-artifact-*` temporary directory that never outlives its use:
`extracted_artifact` removes it when its block exits; `open_artifact` (used by `clip-api serve`
and `clip-api validate`) removes it when the process exits. Both cover Ctrl-C and SIGTERM: uvicorn
re-raises the signal it caught after its graceful shutdown, and with the default SIGTERM action
the process would die without running any cleanup, so while an extraction exists SIGTERM raises
SystemExit instead (only where no other handler was installed). SIGKILL cannot be cleaned up
after.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from inference_code.manifest import MANIFEST_FILE

TEMP_PREFIX = "clip-artifact-"


def open_artifact(path: Path | str, extract_to: Path | str | None = None) -> Path:
    """Return a directory holding the artifact, extracting a .tar.gz (safely) if needed.

    Without `extract_to`, the caller owns the temporary directory: prefer `extracted_artifact`."""
    path = Path(path)
    if path.is_dir():
        if not (path / MANIFEST_FILE).is_file():
            raise FileNotFoundError(f"{path} holds no {MANIFEST_FILE}: not a serving artifact")
        return path
    if not path.is_file():
        raise FileNotFoundError(f"artifact {path} does not exist")
    target = Path(extract_to) if extract_to else _temporary_directory()
    try:
        with tarfile.open(path, "r:*") as archive:
            archive.extractall(target, filter="data")
        if not (target / MANIFEST_FILE).is_file():
            raise FileNotFoundError(f"{path} holds no {MANIFEST_FILE} at its root: not a serving artifact")
    except BaseException:
        if not extract_to:
            shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def _exit_on_sigterm(signum, _frame):
    raise SystemExit(128 + signum)


def _exit_cleanly_on_sigterm() -> object | None:
    """Make SIGTERM raise SystemExit (so finally blocks and atexit run); returns the previous
    handler, or None when it was left alone (not the main thread, or a handler already set)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return None
    return signal.signal(signal.SIGTERM, _exit_on_sigterm)


_process_extractions: list[Path] = []
_cleanup_registered = False


def _remove_process_extractions() -> None:
    while _process_extractions:
        shutil.rmtree(_process_extractions.pop(), ignore_errors=True)


def _temporary_directory() -> Path:
    """A temporary extraction that lives as long as the process."""
    global _cleanup_registered
    if not _cleanup_registered:
        _cleanup_registered = True
        atexit.register(_remove_process_extractions)
        _exit_cleanly_on_sigterm()
    target = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    _process_extractions.append(target)
    return target


@contextlib.contextmanager
def extracted_artifact(path: Path | str) -> Iterator[Path]:
    """The artifact's directory for the duration of the block; a temporary extraction is removed
    when the block exits, however it exits (exception, Ctrl-C, SIGTERM)."""
    path = Path(path)
    if path.is_dir():
        yield open_artifact(path)
        return
    previous = _exit_cleanly_on_sigterm()
    target = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    try:
        yield open_artifact(path, extract_to=target)
    finally:
        shutil.rmtree(target, ignore_errors=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
