"""Real local inference servers, one per endpoint, started from the version's model.tar.gz in (moto) S3.

A server that exits without being stopped (a crash, the OOM killer) is restarted on the same port,
as SageMaker replaces a failed container, and the restart is logged; while it starts, the runtime
router's calls fail to connect and the API answers 503 model_unavailable with Retry-After. Repeated
crashes are restarted with a growing delay (up to 30 s).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from clip_core.s3_uri import split_s3_uri
from inference_code.artifact import open_artifact


PID_FILE = "server.pid"  # beside the endpoint's model: a killed up-loop leaves its servers running, the next one stops them


def served_model(endpoint_dir: Path) -> Path:
    """The extracted model an endpoint's server serves, as SageMaker extracts model.tar.gz to /opt/ml/model before the container
    starts: in the workdir, so a server that is killed (SIGKILL runs no cleanup) leaves no extraction in the temp directory."""
    return endpoint_dir / "model"


def write_pid_file(endpoint_dir: Path, pid: int) -> None:
    (endpoint_dir / PID_FILE).write_text(str(pid))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class InferenceServer:
    endpoint: str
    port: int
    process: subprocess.Popen
    command: list = field(default_factory=list)
    log_path: Path | None = None
    restarts: int = 0
    stopping: bool = False
    next_restart: float = 0.0
    environment: dict = field(default_factory=dict)  # the model's container Environment, kept for restarts


class InferenceServers:
    def __init__(self, s3, workdir: Path, log=print, check_interval_s: float = 0.5, restart_delay_s: float = 1.0):
        self.s3 = s3
        self.workdir = Path(workdir)
        self.servers: dict[str, InferenceServer] = {}
        self.log = log
        self.check_interval_s = check_interval_s
        self.restart_delay_s = restart_delay_s
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None

    @staticmethod
    def command(model_path: Path, port: int) -> list[str]:
        return [sys.executable, "-m", "inference_code", "serve", "--model-dir", str(model_path), "--host", "127.0.0.1", "--port", str(port)]

    def start(self, endpoint: str, model_data_url: str, timeout_s: float = 120, environment: dict | None = None) -> InferenceServer:
        """Download the model and start its server, with the model's container Environment as SageMaker gives it."""
        if endpoint in self.servers:
            return self.servers[endpoint]
        bucket, key = split_s3_uri(model_data_url)
        target = self.workdir / "endpoints" / endpoint / "model.tar.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.s3.download_file(bucket, key, str(target))
        model = served_model(target.parent)
        shutil.rmtree(model, ignore_errors=True)
        try:
            open_artifact(target, extract_to=model)
        except (tarfile.TarError, OSError) as error:
            raise RuntimeError(f"the model of {endpoint} could not be extracted: {error}") from None
        port = free_port()
        command = self.command(model, port)
        with open(target.parent / "server.log", "w") as log_file:
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **(environment or {})})
        write_pid_file(target.parent, process.pid)
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the inference server for {endpoint} exited; see {target.parent / 'server.log'}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    process.kill()
                    raise TimeoutError(f"the inference server for {endpoint} did not answer /ping in {timeout_s:g} s") from None
                time.sleep(0.2)
        with self._lock:
            self.servers[endpoint] = InferenceServer(endpoint, port, process, command, target.parent / "server.log", environment=dict(environment or {}))
        self.log(f"    inference server for {endpoint} on 127.0.0.1:{port} (pid {process.pid})")
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="inference-server-watcher", daemon=True)
            self._watcher.start()
        return self.servers[endpoint]

    def _watch(self) -> None:
        while not self._closed.wait(self.check_interval_s):
            with self._lock:
                for server in list(self.servers.values()):
                    code = server.process.poll()
                    if code is None or server.stopping or time.monotonic() < server.next_restart:
                        continue
                    server.restarts += 1
                    with open(server.log_path or os.devnull, "a") as log_file:
                        server.process = subprocess.Popen(server.command, stdout=log_file, stderr=subprocess.STDOUT,
                                                          env={**os.environ, **server.environment})
                    if server.log_path:
                        write_pid_file(server.log_path.parent, server.process.pid)
                    server.next_restart = time.monotonic() + min(30.0, self.restart_delay_s * 2 ** (server.restarts - 1))
                    self.log(f"    ! the inference server for {server.endpoint} exited (code {code}); restarted it on 127.0.0.1:{server.port} "
                             f"(pid {server.process.pid}, restart {server.restarts}); until it answers, requests get 503 with Retry-After")

    def stop(self, endpoint: str) -> None:
        with self._lock:
            server = self.servers.pop(endpoint, None)
            if server:
                server.stopping = True
        if server:
            server.process.terminate()
            try:
                server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
            shutil.rmtree(served_model(self.workdir / "endpoints" / endpoint), ignore_errors=True)
            self.log(f"    stopped the inference server for {endpoint}")

    def stop_all(self) -> None:
        self._closed.set()
        for endpoint in list(self.servers):
            self.stop(endpoint)

    def pids(self) -> list[int]:
        return [server.process.pid for server in self.servers.values()]
