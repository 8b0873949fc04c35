"""Real local inference servers, one per endpoint, started from the version's model.tar.gz in (moto) S3."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from clip_api.s3_uri import split_s3_uri


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class InferenceServer:
    endpoint: str
    port: int
    process: subprocess.Popen


class InferenceServers:
    def __init__(self, s3, workdir: Path, log=print):
        self.s3 = s3
        self.workdir = Path(workdir)
        self.servers: dict[str, InferenceServer] = {}
        self.log = log

    def start(self, endpoint: str, model_data_url: str, timeout_s: float = 120) -> InferenceServer:
        if endpoint in self.servers:
            return self.servers[endpoint]
        bucket, key = split_s3_uri(model_data_url)
        target = self.workdir / "endpoints" / endpoint / "model.tar.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.s3.download_file(bucket, key, str(target))
        port = free_port()
        log_file = open(target.parent / "server.log", "w")
        process = subprocess.Popen([sys.executable, "-m", "inference_code", "serve", "--model-dir", str(target), "--host", "127.0.0.1", "--port", str(port)],
                                   stdout=log_file, stderr=subprocess.STDOUT)
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
        self.servers[endpoint] = InferenceServer(endpoint, port, process)
        self.log(f"    inference server for {endpoint} on 127.0.0.1:{port} (pid {process.pid})")
        return self.servers[endpoint]

    def stop(self, endpoint: str) -> None:
        server = self.servers.pop(endpoint, None)
        if server:
            server.process.terminate()
            try:
                server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.process.kill()
            self.log(f"    stopped the inference server for {endpoint}")

    def stop_all(self) -> None:
        for endpoint in list(self.servers):
            self.stop(endpoint)

    def pids(self) -> list[int]:
        return [server.process.pid for server in self.servers.values()]
