"""Acting on local_mode/recovery.py's decisions: at start-up, and when the control plane dies.

At start-up, before anything binds: refuse to run beside a live up-loop on the same workdir, and
stop the inference servers a killed one left behind (their pid files, checked against the process's
command line). Once the stacks are deployed: re-create the registry from the journal, artifacts
re-uploaded from the journal's copies after checking their sha256; the up-loop's normal approval
watch then promotes the approved versions again. While it runs: a control plane that stops
answering ends the up-loop with a message saying that `clip-api local up` recovers (restarting moto
in-process would repeat the whole start-up path with none of its checks; one recovery path, at
start-up, is the one that is tested).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

from local_mode.inference_servers import PID_FILE, served_model
from inference_code.manifest import sha256_file
from local_mode.journal import Journal
from local_mode.recovery import PENDING, control_plane_lost, orphaned_servers, recovery_report, restore_steps, running_elsewhere


def _alive(pid: int) -> bool:
    """A process that runs (a zombie has ended: it only waits for its parent to read its status)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _command_line(pid: int) -> str | None:
    if Path("/proc/self").exists():
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return None
    completed = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
    return completed.stdout.strip() or None


def refuse_if_running(workdir: Path) -> None:
    path = Path(workdir) / "state.json"
    state = json.loads(path.read_text()) if path.is_file() else None
    message = running_elsewhere(state, bool(state) and _alive(int(state.get("pid", 0))), os.getpid())
    if message:
        raise RuntimeError(message)


def stop_orphaned_servers(workdir: Path, log) -> list[int]:
    """Stop the inference servers a killed up-loop left running on this workdir."""
    pid_files = sorted((Path(workdir) / "endpoints").glob(f"*/{PID_FILE}"))
    records = []
    for path in pid_files:
        pid = int(path.read_text().strip() or 0)
        records.append((str(served_model(path.parent)), pid, _command_line(pid) if pid > 0 and _alive(pid) else None))
    orphans = orphaned_servers(records)
    for pid in orphans:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in orphans) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in orphans:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    for path in pid_files:
        path.unlink(missing_ok=True)
    if orphans:
        log(f"   stopped {len(orphans)} inference server(s) the previous up-loop left running (pids {', '.join(map(str, orphans))})")
    return orphans


def _upload(journal: Journal, s3, objects: list[dict]) -> None:
    from clip_core.s3_uri import split_s3_uri

    for item in objects:
        path = journal.object_path(item["sha256"])
        if not path.is_file() or sha256_file(path) != item["sha256"]:
            raise RuntimeError(f"the journal's copy of {item['uri']} ({path}) is missing or does not match its recorded sha256 {item['sha256']}")
        bucket, key = split_s3_uri(item["uri"])
        try:
            s3.head_bucket(Bucket=bucket)
        except s3.exceptions.ClientError:
            s3.create_bucket(Bucket=bucket)
        s3.upload_file(str(path), bucket, key)


def restore_registry(journal: Journal, sagemaker, s3, configs, log) -> set[str]:
    """Re-create each model's registered versions, with their approval status; return the model ids restored."""
    from local_mode.promotion import set_approval
    from pipeline.aws import ensure_model_package_group

    state = journal.state()
    restored: set[str] = set()
    for config in configs:
        group = config.registry.model_package_group
        steps = restore_steps(state, group)
        if not steps:
            continue
        ensure_model_package_group(sagemaker, config)
        for step in steps:
            if step.record is None:
                request = {"ModelPackageGroupName": group, "ModelPackageDescription": "registered but never journaled before local mode was killed"}
            else:
                _upload(journal, s3, step.record.objects)
                request = step.record.request
            arn = sagemaker.create_model_package(**request, ModelApprovalStatus=PENDING)["ModelPackageArn"]
            if not arn.endswith(f"/{step.version}"):
                raise RuntimeError(f"restoring {group} version {step.version} created {arn}: the registry was not empty")
            if step.status != PENDING:
                set_approval(sagemaker, arn, step.status, step.record.metadata if step.record else None)
        for line in recovery_report(state, group):
            log(f"   {line}")
        restored.add(config.model_id)
    return restored


def require_control_plane(url: str, timeout_s: float = 2.0) -> None:
    """Raise with what to do if the control plane no longer accepts connections."""
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=timeout_s).close()
    except OSError as error:
        raise RuntimeError(control_plane_lost(url, str(error))) from None
