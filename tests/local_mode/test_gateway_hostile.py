"""Local mode's API gateway and inference servers under hostile clients and crashes, over real sockets.

The gateway's HTTP layer is tested in front of a stub integration (starting the whole local loop is
slow; test_local_loop.py does that once); each hostile case is followed by a good request that must
be answered correctly and on time.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sys
import tarfile
import textwrap
import time
import urllib.request

import pytest

from clip_core.model_config import load_model_config
from local_mode import api_gateway as gateway_module
from local_mode.api_gateway import LocalApiGateway


@pytest.fixture
def gateway(monkeypatch):
    monkeypatch.setattr(gateway_module, "BODY_TIMEOUT_S", 1.5)
    gw = LocalApiGateway([load_model_config("clip-tiny")], lambda_client=None, function_name_format="fn-{model_id}", port=0)
    seen: list[str] = []

    def echo(method, path, headers, body):  # the integration: says what body it got
        seen.append(body)
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps({"length": len(body), "body": body[:64]})}

    gw.invoke = echo
    gw.start()
    yield gw, seen
    gw.stop()


def exchange(gw, raw: bytes, timeout: float = 5.0, read_all: bool = False) -> tuple[int, bytes]:
    """Send raw bytes, read one response (status, body). Raises on a reset or no answer within `timeout`."""
    host, port = gw.server.server_address[:2]
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed without an answer: {data!r}")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, rest[:length]


def good_request(gw) -> None:
    started = time.monotonic()
    request = urllib.request.Request(f"{gw.url}/tiny", data=b'{"text": "a dog"}', headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200 and json.loads(response.read())["body"] == '{"text": "a dog"}'
    assert time.monotonic() - started < 2


POST = b"POST /tiny HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize("headers, body, status", [
    (b"Content-Length: -1\r\n", b'{"text": "a"}', 400),
    (b"Content-Length: abc\r\n", b'{"text": "a"}', 400),
    (b"Content-Length: 1e3\r\n", b'{"text": "a"}', 400),
    (b"Content-Length: +13\r\n", b'{"text": "a"}', 400),
    (b"Content-Length: 13\r\nContent-Length: 14\r\n", b'{"text": "a"}', 400),
    (b"Content-Length: 13\r\nTransfer-Encoding: chunked\r\n", b'0\r\n\r\nPOST /tiny HTTP/1.1\r\n', 400),
    (b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n", 400),
    (b"Transfer-Encoding: chunked\r\n", b"zz\r\nabc\r\n0\r\n\r\n", 400),
    (b"Transfer-Encoding: chunked\r\n", b"FFFFFFF\r\nabc", 413),
    (b"Content-Length: 99999999999\r\n", b"", 413),
])
def test_malformed_framing_gets_its_status_and_the_next_request_is_served(gateway, headers, body, status):
    gw, seen = gateway
    got, answer = exchange(gw, POST + headers + b"\r\n" + body)
    assert got == status, answer
    assert "message" in json.loads(answer)
    assert seen == []  # nothing reached the integration
    good_request(gw)


def test_chunked_bodies_are_read_as_one(gateway):
    gw, seen = gateway
    status, answer = exchange(gw, POST + b"Transfer-Encoding: chunked\r\n\r\n" + b'5;ext=1\r\n{"tex\r\n8\r\nt": "a"}\r\n0\r\nX-Trailer: 1\r\n\r\n')
    assert status == 200 and json.loads(answer)["body"] == '{"text": "a"}'
    good_request(gw)


def test_an_oversized_body_sent_in_full_gets_a_readable_413(gateway):
    gw, _ = gateway
    body = b"x" * (gateway_module.MAX_BODY_BYTES + 1)
    status, answer = exchange(gw, POST + f"Content-Length: {len(body)}\r\n\r\n".encode() + body, timeout=20)
    assert status == 413
    good_request(gw)


def test_a_client_that_stops_sending_its_body_is_timed_out(gateway):
    gw, seen = gateway
    started = time.monotonic()
    status, _ = exchange(gw, POST + b"Content-Length: 100\r\n\r\n" + b'{"text": ', timeout=10)
    assert status == 408 and time.monotonic() - started < 5
    assert seen == []
    good_request(gw)


# ---- a crashed inference server comes back ----

STUB_SERVER = textwrap.dedent("""
    import http.server, json, os, sys
    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def _ok(self, body):
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
        def do_GET(self): self._ok(json.dumps({"pid": os.getpid()}).encode())
        def do_POST(self): self._ok(b"[1.0]")
    http.server.HTTPServer.allow_reuse_address = True
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


def ping(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
            return json.loads(response.read())["pid"]
    except OSError:
        return None


def test_a_crashed_inference_server_is_restarted_and_says_so(moto_aws, tmp_path, monkeypatch):
    import boto3

    from local_mode.inference_servers import InferenceServers

    archive = io.BytesIO()  # the stub server serves nothing, but the model is extracted before it starts, as SageMaker does
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        manifest = tarfile.TarInfo("manifest.json")
        manifest.size = 2
        tar.addfile(manifest, io.BytesIO(b"{}"))
    boto3.client("s3", region_name="us-east-1").put_object(Bucket="clip-test-bucket", Key="m/model.tar.gz", Body=archive.getvalue())
    script = tmp_path / "stub_server.py"
    script.write_text(STUB_SERVER)
    served: list[str] = []
    monkeypatch.setattr(InferenceServers, "command", staticmethod(lambda model_path, port: served.append(str(model_path)) or
                                                                  [sys.executable, str(script), str(port)]))
    lines: list[str] = []
    servers = InferenceServers(boto3.client("s3", region_name="us-east-1"), tmp_path, lines.append, check_interval_s=0.1, restart_delay_s=0.2)
    try:
        server = servers.start("clip-tiny-v1", "s3://clip-test-bucket/m/model.tar.gz", timeout_s=20)
        model = tmp_path / "endpoints" / "clip-tiny-v1" / "model"
        # the server is given the extraction in the workdir: a SIGKILL leaves nothing in the temp directory
        assert served == [str(model)] and (model / "manifest.json").is_file()
        first = ping(server.port)
        assert first == server.process.pid
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while (pid := ping(server.port)) in (None, first) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pid not in (None, first), "the crashed server was not restarted"
        assert any("exited" in line and "restarted" in line and "503" in line for line in lines), lines
        # a deliberate stop is not a crash: no restart after it
        servers.stop("clip-tiny-v1")
        time.sleep(0.5)
        assert ping(server.port) is None and not model.exists()
    finally:
        servers.stop_all()


def test_a_server_that_is_down_is_a_503_with_retry_after_not_a_502():
    """What the runtime router answers while a server restarts (ModelError, 503) maps to model_unavailable."""
    from botocore.exceptions import ClientError

    from clip_lambdas.api.errors import from_endpoint_error

    error = ClientError({"Error": {"Code": "ModelError", "Message": "Received server error from model"}, "OriginalStatusCode": 503,
                         "OriginalMessage": "[Errno 111] Connection refused"}, "InvokeEndpoint")
    mapped = from_endpoint_error(error)
    assert (mapped.status, mapped.code) == (503, "model_unavailable") and mapped.headers()["Retry-After"]
    assert "retrying may help" not in mapped.message and "Connection refused" not in mapped.message
