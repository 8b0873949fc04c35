"""Live servers started the way `serve` starts them (our h11 protocol, settings), for the hostile suite."""

from __future__ import annotations

import contextlib
import shutil
import threading

import pytest

from tests.conftest import free_port, wait_for_http


@contextlib.contextmanager
def running_server(service, **settings):
    import uvicorn

    from inference_code.server import ServerSettings, create_app, uvicorn_config

    server_settings = ServerSettings.from_limits(service.manifest.limits, **settings)
    app = create_app(service, server_settings)
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, server_settings, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_for_http(base + "/ping")
    try:
        yield base, app
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def artifact_copy(tiny_fp32, tmp_path):
    """A copy of the tiny fp32 artifact that a test may tamper with."""
    copy = tmp_path / "artifact"
    shutil.copytree(tiny_fp32.directory, copy)
    return copy


@pytest.fixture(scope="session")
def tiny_service(tiny_fp32):
    from inference_code.server import load_service

    return load_service(tiny_fp32.directory)


@pytest.fixture(scope="module")
def hostile_server(tiny_service):
    """The tiny model behind the production server with short connection timeouts."""
    with running_server(tiny_service, header_timeout_s=1.0, linger_s=2.0) as (base, _app):
        yield base


class GatedService:
    """The tiny service whose worker waits for `release()`: makes the queue observable."""

    def __init__(self, service):
        self._service = service
        self.manifest = service.manifest
        self.limits = service.limits
        self.gate = threading.Event()
        self.calls = 0
        self.computed: list = []  # the requests computed, in order
        self.started = threading.Event()

    @property
    def embedder(self):
        return self._service.embedder

    def prepare(self, body, content_type):
        return self._service.prepare(body, content_type)

    def compute(self, prepared, deadline=None, priority=0.0):
        self.calls += 1
        self.computed.append(prepared.request)
        self.started.set()
        self.gate.wait(timeout=30)
        return self._service.compute(prepared, None, priority)

    def release(self):
        self.gate.set()


@pytest.fixture
def gated(tiny_service):
    return GatedService(tiny_service)
