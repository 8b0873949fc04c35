"""Chaos in local mode (issue 14, item 8): kill the pieces with SIGKILL during traffic and during a promotion.

One workdir for the module, the tiny model: the up-loop is started, its inference server killed under
traffic, the up-loop killed in the middle of a promotion and started again on the same workdir, then
killed while idle (its in-memory control plane with it) and started again. After each restart the loop
converges from the workdir's journal alone: nothing is edited by hand, and no approved version is lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clip_core.names import POINTER_TABLE
from local_mode.journal import journal_for
from local_mode.restore import require_control_plane
from promotion.pointer import read_pointer
from tests.conftest import REPO_ROOT
from tests.local_mode.test_local_loop import LocalMode, post

RECOVERY_BOUND_S = 60  # a killed server is restarted after 1 s and loads the tiny model in a few seconds


class Chaos:
    """The workdir outlives the up-loops started on it."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.mode = LocalMode(workdir)
        self.wait_until_serving()

    def wait_until_serving(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while not any("5. serving" in line for line in self.mode.lines):
            assert self.mode.process.poll() is None, "local mode exited:\n" + "\n".join(self.mode.lines[-40:])
            assert time.monotonic() < deadline, f"not serving within {timeout_s} s:\n" + "\n".join(self.mode.lines[-40:])
            time.sleep(0.2)

    def kill(self) -> None:
        self.mode.process.send_signal(signal.SIGKILL)
        self.mode.process.wait(timeout=30)

    def restart(self) -> LocalMode:
        self.mode = LocalMode(self.workdir)
        self.wait_until_serving()
        return self.mode

    def server_pids(self) -> dict[str, int]:
        return {path.parent.name: int(path.read_text()) for path in (self.workdir / "endpoints").glob("*/server.pid")}

    def registry(self) -> list[tuple[str, str]]:
        listed = self.mode.control_plane("sagemaker").list_model_packages(ModelPackageGroupName="clip-tiny")["ModelPackageSummaryList"]
        return [(p["ModelPackageArn"], p["ModelApprovalStatus"]) for p in listed]

    def pointer(self):
        return read_pointer(self.mode.control_plane("dynamodb"), POINTER_TABLE, "clip-tiny", consistent=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


@pytest.fixture(scope="module")
def chaos(tmp_path_factory):
    state = Chaos(tmp_path_factory.mktemp("chaos"))
    try:
        yield state
    finally:
        if state.mode.process.poll() is None:
            subprocess.run([sys.executable, "-m", "clip_api.cli", "local", "down", "--workdir", str(state.workdir)], cwd=REPO_ROOT, env=state.mode.env)
            try:
                state.mode.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                state.mode.process.kill()


def test_a_killed_inference_server_is_restarted_under_traffic_and_the_pointer_stays(chaos):
    pointer = chaos.pointer()
    victim = chaos.server_pids()[pointer.endpoint_name]
    results: list[tuple[float, int, dict]] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                status, headers, _ = post(f"{chaos.mode.api}/tiny", {"text": "a photo of a dog"}, timeout=30)
            except OSError:  # no HTTP answer at all (refused, reset): a failed request, counted as status 0
                status, headers = 0, {}
            results.append((time.monotonic(), status, headers))
            time.sleep(0.05)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        while len(results) < 5:
            time.sleep(0.05)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        while not any(at > killed_at and status == 200 for at, status, _ in results) and time.monotonic() < killed_at + RECOVERY_BOUND_S:
            time.sleep(0.1)
        time.sleep(1)  # a few more answers after the recovery
    finally:
        stop.set()
        thread.join(timeout=60)
    after = [(at - killed_at, status, headers) for at, status, headers in results if at > killed_at]
    assert chaos.mode.process.poll() is None, "the up-loop exited:\n" + "\n".join(chaos.mode.lines[-40:])
    recovered = next((at for at, status, _ in after if status == 200), None)
    assert recovered is not None and recovered < RECOVERY_BOUND_S, f"no 200 within {RECOVERY_BOUND_S} s of the kill: {[s for _, s, _ in after]}"
    assert all(status in (200, 503) for _, status, _ in after), [status for _, status, _ in after]
    assert all(headers.get("Retry-After") for _, status, headers in after if status == 503)
    assert after[-1][1] == 200
    restarted = chaos.server_pids()[pointer.endpoint_name]
    assert restarted != victim and alive(restarted)
    assert chaos.pointer() == pointer
    assert any("exited" in line and "restarted" in line for line in chaos.mode.lines)


def test_an_up_loop_killed_during_a_promotion_converges_when_started_again(chaos):
    mode = chaos.mode
    built = json.loads(mode.cli("build", "clip-tiny", "--param", "Variant=int8"))
    assert built["status"] == "Succeeded" and built["model_package_arn"].endswith("/2")
    approved = built["model_package_arn"]
    v2 = mode.control_plane("sagemaker").describe_model_package(ModelPackageName=approved)["CustomerMetadataProperties"]
    journal = journal_for(chaos.workdir)
    mode.cli("approve", "clip-tiny", "2")
    deadline = time.monotonic() + 120
    while not any(e["kind"] == "promotion_started" and e["arn"] == approved for e in journal.events()):
        assert time.monotonic() < deadline, "the up-loop never started promoting version 2:\n" + "\n".join(mode.lines[-20:])
        time.sleep(0.05)
    chaos.kill()  # after the approval, before the switch: the workflow has not even been started
    assert not any(e["kind"] == "promotion_finished" and e["arn"] == approved for e in journal.events())
    left_running = [pid for pid in chaos.server_pids().values() if alive(pid)]
    assert left_running, "the killed up-loop left no inference server behind: nothing to clean up was tested"

    mode = chaos.restart()
    output = "\n".join(mode.lines)
    assert "restored 2 registered version(s) from the journal" in output
    assert "v2 approved, its promotion was interrupted: promoting it again" in output
    assert "clip-tiny: restored from the journal, not built again" in output
    status, headers, vector = post(f"{mode.api}/tiny", {"text": "a photo of a dog"})
    assert status == 200 and len(vector) == 64
    assert (headers["X-Clip-Version"], headers["X-Clip-Space"]) == (v2["version"], v2["space"])
    assert chaos.registry() == [(approved.replace("/2", "/1"), "Approved"), (approved, "Approved")]
    pointer = chaos.pointer()
    assert (pointer.endpoint_name, pointer.version, pointer.package_arn) == ("clip-tiny-v2", 2, approved)
    assert {route.endpoint_name for route in pointer.spaces.values()} == {"clip-tiny-v2"}  # exactly one version serves
    endpoints = {e["EndpointName"] for e in mode.control_plane("sagemaker").list_endpoints()["Endpoints"] if e["EndpointStatus"] == "InService"}
    assert endpoints == {"clip-tiny-v1", "clip-tiny-v2"}  # v1 on standby for a rollback, as after an uninterrupted promotion
    assert {name for name, pid in chaos.server_pids().items() if alive(pid)} == endpoints  # one server each, none left over
    assert not any(alive(pid) for pid in left_running), "the servers of the killed up-loop are still running"


def test_no_approved_version_is_lost_when_the_control_plane_dies_with_the_up_loop(chaos):
    mode = chaos.mode
    registry, pointer = chaos.registry(), chaos.pointer()
    assert [status for _, status in registry].count("Approved") == 2
    status, headers, vector = post(f"{mode.api}/tiny", {"text": "a photo of a dog"})
    assert status == 200
    chaos.kill()  # idle: the control plane's in-memory state goes with it
    with pytest.raises(RuntimeError, match="clip-api local up"):
        require_control_plane(f"http://127.0.0.1:{mode.moto_port}")

    mode = chaos.restart()
    assert chaos.registry() == registry
    restored = chaos.pointer()
    assert (restored.endpoint_name, restored.version, restored.package_arn, restored.space) == (
        pointer.endpoint_name, pointer.version, pointer.package_arn, pointer.space)
    status, again, same = post(f"{mode.api}/tiny", {"text": "a photo of a dog"})
    assert status == 200 and same == vector
    assert (again["X-Clip-Version"], again["X-Clip-Space"]) == (headers["X-Clip-Version"], headers["X-Clip-Space"])
