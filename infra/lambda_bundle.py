"""The Lambda functions' code as one zip, built from what their handlers import.

Every function runs the same zip: each module of this repository that a handler module reaches through its
imports (followed transitively, function-level imports included), clip_core's package data (the model configs),
and the dependencies pip installs from lambda/requirements.lock. No file list is kept by hand: a module a handler
starts to import is in the next zip, and one nothing imports (inference_code/encoders.py, onnxruntime) never is.
The same code gives the same bytes, so the zip's S3 key names its content.
"""

from __future__ import annotations

import ast
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from clip_core.names import PROJECT
from clip_core.paths import PACKAGED_CONFIGS_DIR, REPO_ROOT

LAMBDA_ROOT = REPO_ROOT / "lambda"
LAMBDA_PACKAGE = "clip_lambdas"  # one subpackage per function; its handler is clip_lambdas.<function>.app.handler
SOURCE_ROOTS = (REPO_ROOT, LAMBDA_ROOT)  # where this repository's top-level packages live (lambda/ is a keyword, not a package)
# Every dependency pinned with its sha256 (bounds in lambda/requirements.txt): the same code gives the same zip.
LAMBDA_LOCK = LAMBDA_ROOT / "requirements.lock"
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def handler_modules(lambda_root: Path = LAMBDA_ROOT) -> list[str]:
    """The module of each function's handler: clip_lambdas.<function>.app, for every function subpackage."""
    return sorted(f"{LAMBDA_PACKAGE}.{app.parent.name}.app" for app in (lambda_root / LAMBDA_PACKAGE).glob("*/app.py"))


def module_file(module: str, roots: Sequence[Path] = SOURCE_ROOTS) -> tuple[Path, Path] | None:
    """(source root, file) of one of this repository's modules (a package is its __init__.py); None for any other."""
    parts = module.split(".")
    for root in roots:
        base = root.joinpath(*parts)
        for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
            if candidate.is_file():
                return root, candidate
    return None


def imported_names(source: str, module: str, is_package: bool) -> set[str]:
    """Every absolute module name an import statement of `source` may load, wherever the statement is (a function's
    body too). `from a import b` names both a and a.b: b may be a submodule; a name that is no module is dropped later."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def reached_files(modules: Iterable[str], roots: Sequence[Path] = SOURCE_ROOTS) -> dict[str, Path]:
    """Archive name -> file for the modules given and every module of this repository they import, with the
    packages that contain them (importing a.b.c runs a/__init__.py and a/b/__init__.py)."""
    files: dict[str, Path] = {}
    seen: set[str] = set()
    pending = list(modules)
    while pending:
        module = pending.pop()
        if module in seen or not module:
            continue
        seen.add(module)
        found = module_file(module, roots)
        if found is None:
            continue  # the standard library or a dependency
        root, path = found
        files[path.relative_to(root).as_posix()] = path
        parts = module.split(".")
        pending += [".".join(parts[:depth]) for depth in range(1, len(parts))]
        pending += imported_names(path.read_text(), module, path.name == "__init__.py")
    return files


CONFIG_PATTERNS = ("models/*.yaml", "models/*.npz", "open_clip/*.json")  # clip_core's package data (pyproject.toml)


class BundleError(RuntimeError):
    """The zip would deploy functions that cannot start: refused before anything is uploaded."""


def bundle_files(lambda_root: Path = LAMBDA_ROOT, roots: Sequence[Path] = SOURCE_ROOTS,
                 configs_dir: Path = PACKAGED_CONFIGS_DIR) -> dict[str, Path]:
    """Archive name -> file: the code every handler reaches, and clip_core's package data. A source tree without the
    functions' code (an installed package) or without model configs (a checkout that kept clip_core/configs as a
    text file instead of a link) is refused: the API Lambda loads the configs when it starts."""
    handlers = handler_modules(lambda_root)
    if not handlers:
        raise BundleError(f"no Lambda handler under {lambda_root / LAMBDA_PACKAGE}: build the zip from a source checkout")
    files = reached_files(handlers, roots)
    missing = [module for module in handlers if module_file(module, roots) is None]
    configs = sorted({path for pattern in CONFIG_PATTERNS for path in configs_dir.glob(pattern) if path.is_file()})
    if missing or not any(path.suffix == ".yaml" for path in configs):
        raise BundleError(f"the Lambda zip would lack {missing or f'the model configs (none under {configs_dir})'}")
    files |= {f"clip_core/configs/{path.relative_to(configs_dir).as_posix()}": path for path in configs}
    return files


def build_lambda_zip(vendor_dependencies: bool = True) -> bytes:
    """One zip for every function: the code the handlers reach at the archive's root, configs, dependencies."""
    files = bundle_files()
    if vendor_dependencies:
        with tempfile.TemporaryDirectory() as target:
            subprocess.run(vendor_command(target), check=True)
            for path in Path(target).rglob("*"):
                relative = path.relative_to(target)
                # bin/: console scripts whose shebang names this machine's interpreter (and Lambda runs none)
                if path.is_file() and "__pycache__" not in path.parts and relative.parts[0] != "bin":
                    files[relative.as_posix()] = path
            return _zip(files)
    return _zip(files)


def _zip(files: dict[str, Path]) -> bytes:
    """The files in name order, with fixed dates and modes: the same files give the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name].read_bytes())
    return buffer.getvalue()


def vendor_command(target: str, lock: Path = LAMBDA_LOCK) -> list[str]:
    """pip installs exactly the lock, for Lambda's platform: every file checked against its hash, nothing resolved afresh."""
    return [sys.executable, "-m", "pip", "install", "--quiet", "--target", target, "--platform", "manylinux2014_x86_64",
            "--python-version", "3.12", "--only-binary=:all:", "--require-hashes", "--no-deps", "--no-compile", "-r", str(lock)]


def code_key_for(zip_bytes: bytes) -> str:
    return f"{PROJECT}/lambda/{hashlib.sha256(zip_bytes).hexdigest()[:16]}.zip"
