"""Serving limits are per-model config values, defined once (clip_core.limits.ServingLimits): written into the
manifest by packaging, read by the container. A value set in a config changes the running server's
behaviour, and every declared limit is read somewhere in the serving code."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import fields
from pathlib import Path

import pytest
from PIL import Image

import inference_code
from clip_core.limits import ServingLimits
from inference_code.server import ServerSettings


def test_every_declared_limit_is_read_by_the_serving_code():
    """A limit nobody reads would be a setting that silently does nothing: each name is read as an attribute
    (`limits.max_batch_size`) or a key (`limits["intra_op_threads"]`) in inference_code."""
    source = "\n".join(path.read_text() for path in Path(inference_code.__file__).parent.glob("*.py"))
    for field in fields(ServingLimits):
        assert re.search(rf"\.{field.name}\b|\[\"{field.name}\"\]|\.get\(\"{field.name}\"", source), \
            f"ServingLimits.{field.name} is written into manifests but inference_code never reads it"


def test_server_settings_take_the_manifest_limits():
    limits = ServingLimits(max_pending_requests=3, request_deadline_s=7.0, body_read_timeout_s=2.0, header_timeout_s=1.5)
    settings = ServerSettings.from_limits(limits.as_dict())
    for name in ("max_pending_requests", "request_deadline_s", "body_read_timeout_s", "header_timeout_s"):
        assert getattr(settings, name) == getattr(limits, name) != getattr(ServerSettings(), name)


def test_limits_from_a_manifest_ignore_keys_this_code_does_not_know():
    assert ServingLimits.from_dict({"max_batch_size": 4, "a_newer_limit": 1}) == ServingLimits(max_batch_size=4)


@pytest.mark.parametrize("name", ["max_jpeg_scans", "max_request_pixels", "image_decode_deadline_s", "max_pending_requests",
                                  "request_deadline_s", "header_timeout_s"])
def test_container_limits_are_config_values(name):
    """The container's own defaults for these were code constants; a config may now set them."""
    assert name in {field.name for field in fields(ServingLimits)}
    with pytest.raises(ValueError):
        ServingLimits(**{name: 0})


def _jpeg(width: int, height: int, progressive: bool = False) -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((width, height)).convert("RGB").save(buffer, "JPEG", progressive=progressive)
    return buffer.getvalue()


def _post(url: str, payload: dict) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, json.loads(error.read())


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory, tiny_config):
    """The tiny model packaged from a config with tight limits, served as `clip-api serve` does (our protocol)."""
    import uvicorn

    from inference_code.server import ServerSettings, create_app, load_service, uvicorn_config
    from model_build.package import package_model
    from model_build.progress import Progress
    from model_build.weights_source import RANDOM_INIT, WeightsSource
    from tests.conftest import free_port, wait_for_http

    limits = ServingLimits(max_jpeg_scans=3, max_request_pixels=2 * 300 * 200, max_pending_requests=1, header_timeout_s=0.5)
    config = tiny_config.model_copy(update={"serving": tiny_config.serving.model_copy(update={"limits": limits})})
    result = package_model(config, tmp_path_factory.mktemp("strict"), WeightsSource(RANDOM_INIT), variant="fp32", progress=Progress(5, enabled=False))
    assert result.manifest.limits == limits.as_dict()  # the config's values, all of them, in the manifest
    service = load_service(result.directory)
    settings = ServerSettings.from_limits(service.manifest.limits)
    port = free_port()
    server = uvicorn.Server(uvicorn_config(create_app(service, settings), "127.0.0.1", port, settings, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_for_http(base + "/ping")
    yield base, port
    server.should_exit = True
    thread.join(timeout=10)


def test_jpeg_scans_and_request_pixels_from_the_config(strict_server):
    base, _ = strict_server
    baseline = base64.b64encode(_jpeg(300, 200)).decode()
    assert _post(base + "/invocations", {"images": [baseline, baseline]})[0] == 200  # exactly the configured pixels
    status, _, body = _post(base + "/invocations", {"images": [baseline, baseline, baseline]})
    assert (status, body["error"]["code"]) == (413, "request_too_many_pixels")  # the default (100 Mpx) would admit it
    status, _, body = _post(base + "/invocations", {"image": base64.b64encode(_jpeg(300, 200, progressive=True)).decode()})
    assert (status, body["error"]["code"]) == (413, "image_too_complex")  # Pillow's progressive JPEG has 6-10 scans; default 32


def test_pending_requests_and_header_timeout_from_the_config(strict_server):
    base, port = strict_server
    with socket.create_connection(("127.0.0.1", port)) as holder:
        # one request admitted (its body never comes): with max_pending_requests 1 the next is refused
        holder.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):  # until the server has admitted it (no fixed sleep)
            with urllib.request.urlopen(base + "/ping", timeout=5) as ping:
                if json.loads(ping.read())["status"] == "saturated":
                    break
        else:
            pytest.fail("the held request was never admitted")
        status, headers, body = _post(base + "/invocations", {"text": "a dog"})
        assert (status, body["error"]["code"]) == (503, "overloaded") and headers["retry-after"] == "1"
    with socket.create_connection(("127.0.0.1", port)) as slow:
        slow.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")  # half the headers, then nothing
        slow.settimeout(5)  # the default header timeout (10 s) would not answer within this
        assert slow.recv(4096).startswith(b"HTTP/1.1 408")
