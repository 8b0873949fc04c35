"""`clip-api loadtest`: counts that add up against a real server, and a tool that can fail.

Short runs (a second or two, a few clients); no assertion on speed: speed lives in the README.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from clip_api.cli import main
from clip_api.loadtest import LoadSettings, LoadTestError, check_settings, hostile_bodies, parse_mix, run_loadtest
from clip_core.limits import ServingLimits
from inference_code.contract import parse_request
from inference_code.errors import RequestError
from inference_code.preprocess import ImagePreprocessor, jpeg_scan_count

SMALL = dict(image_size=(64, 48), timeout_s=10.0)


class _Stub(BaseHTTPRequestHandler):
    """Answers by path: /ok 200, /busy 503 + Retry-After, /busy-bare 503 without it, /fail 500,
    /close closes without answering, /reset resets the connection, /alternate 200 and 503 in turn."""

    protocol_version = "HTTP/1.1"
    turns = 0

    def log_message(self, *args):  # quiet
        pass

    def _answer(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        busy = json.dumps({"error": {"code": "overloaded", "message": "busy"}}).encode()
        if self.path == "/alternate":
            type(self).turns += 1
            self.path = "/ok" if type(self).turns % 2 else "/busy"
        if self.path == "/ok":
            self._answer(200, b"[0.6, 0.8]")
        elif self.path == "/busy":
            self._answer(503, busy, {"Retry-After": "1"})
        elif self.path == "/busy-bare":
            self._answer(503, busy)
        elif self.path == "/fail":
            self._answer(500, json.dumps({"error": {"code": "internal_error", "message": "x"}}).encode())
        elif self.path == "/close":
            self.close_connection = True
        elif self.path == "/reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # the socket's file descriptor closes with its last file object:
            self.wfile.close()  # closed here, before the server's shutdown() could send a FIN, it sends an RST
            self.connection.close()
            self.close_connection = True


@pytest.fixture(scope="module")
def stub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _assert_counts_add_up(report: dict) -> None:
    for part in [report["all"], *(report[k] for k in ("ordinary_clients", "hostile_client") if k in report)]:
        assert sum(part["statuses"].values()) == part["requests"] == part["latency_all"]["count"]
        assert part["acceptable"] + sum(f["count"] for f in part["failures"]) == part["requests"]
        assert part["latency_200"]["count"] == part["statuses"].get("200", 0)
        assert sum(s["count"] for s in part["latency_200_by_kind"].values()) == part["latency_200"]["count"]
    if "hostile_client" in report:
        assert report["ordinary_clients"]["requests"] + report["hostile_client"]["requests"] == report["all"]["requests"]


def test_against_the_tiny_server_counts_add_up_and_memory_is_read(tiny_server):
    settings = LoadSettings(url=tiny_server + "/invocations", clients=3, duration_s=1.5, server_pids=(os.getpid(),), **SMALL)
    report = run_loadtest(settings)
    _assert_counts_add_up(report)
    assert report["passed"], report["all"]["failures"]
    assert report["all"]["statuses"].get("200", 0) > 0
    assert set(report["all"]["latency_200_by_kind"]) <= {"text", "image"}
    rss = report["rss_mb"][f"server pid {os.getpid()}"]  # the fixture's server runs in this process
    assert rss["start"] > 0 and rss["end"] > 0 and rss["peak"] >= max(rss["start"], rss["end"])


def test_hostile_client_is_reported_apart(tiny_server):
    # the hostile bodies are sized by the limits given: small ones keep this test short
    limits = ServingLimits(max_text_chars=300, max_batch_size=2, max_image_pixels=400 * 300, max_request_pixels=2 * 400 * 300, max_jpeg_scans=16)
    settings = LoadSettings(url=tiny_server + "/invocations", clients=2, duration_s=1.5, hostile=True, **SMALL)
    report = run_loadtest(settings, limits)
    _assert_counts_add_up(report)
    assert report["hostile_client"]["requests"] > 0 and report["ordinary_clients"]["requests"] > 0
    assert report["hostile_client"]["statuses"] == {"200": report["hostile_client"]["requests"]}  # admitted, not refused
    assert report["passed"]


def test_max_requests_bounds_the_run(tiny_server):
    report = run_loadtest(LoadSettings(url=tiny_server + "/invocations", clients=4, duration_s=30, max_requests=6, **SMALL))
    assert report["all"]["requests"] == 6


def test_503_with_retry_after_is_acceptable(stub):
    report = run_loadtest(LoadSettings(url=stub + "/alternate", clients=2, duration_s=1.0, retry_wait_max_s=0, **SMALL))
    _assert_counts_add_up(report)
    assert set(report["all"]["statuses"]) == {"200", "503+Retry-After"}
    assert report["passed"] and not report["all"]["failures"]


@pytest.mark.parametrize(
    ("path", "label", "code"),
    [
        ("/fail", "500", "internal_error"),
        ("/busy-bare", "503 without Retry-After", "overloaded"),
        ("/close", "closed without an answer", "closed without an answer"),
        ("/reset", "reset", "reset"),
    ],
)
def test_failures_are_counted_and_listed(stub, path, label, code):
    report = run_loadtest(LoadSettings(url=stub + path, clients=2, duration_s=0.5, **SMALL))
    _assert_counts_add_up(report)
    assert not report["passed"]
    assert list(report["all"]["statuses"]) == [label]
    assert [(f["status"], f["code"]) for f in report["all"]["failures"]] == [(label, code)]
    assert report["all"]["failures"][0]["count"] == report["all"]["requests"] > 0


def test_cli_exit_status_follows_the_verdict(stub, capsys):
    common = ["--clients", "1", "--duration", "0.3", "--image-size", "64x48"]
    assert main(["loadtest", stub + "/ok", *common]) == 0
    assert main(["loadtest", stub + "/fail", *common]) == 1
    out = capsys.readouterr().out
    assert "passed: no failures" in out and "FAILURES" in out and "x 500 internal_error" in out
    assert main(["loadtest", "http://10.1.2.3:8000/b32", *common]) == 2  # not loopback: refused, nothing sent


@pytest.mark.parametrize("url", ["http://10.1.2.3:8000/x", "https://127.0.0.1/x", "http://[2001:db8::1]:80/x"])
def test_only_loopback_is_a_target(url):
    with pytest.raises(LoadTestError):
        check_settings(LoadSettings(url=url))


@pytest.mark.parametrize("changes", [{"clients": 0}, {"clients": 10_000}, {"duration_s": 0}, {"duration_s": 3_600}, {"max_requests": 0}])
def test_bounds(changes):
    with pytest.raises(LoadTestError):
        check_settings(LoadSettings(url="http://127.0.0.1:8000/x", **changes))


def test_mix():
    assert parse_mix("text=1,image=3") == {"text": 0.25, "image": 0.75}
    for bad in ("audio=1", "text=x", "text=0", "text=-1,image=2"):
        with pytest.raises(LoadTestError):
            parse_mix(bad)


def test_hostile_requests_are_the_worst_the_default_limits_admit():
    limits = ServingLimits()
    bodies = hostile_bodies(limits)
    request_limits = limits
    texts = parse_request(bodies["text"][0], "application/json", request_limits)
    assert len(texts.items) == limits.max_batch_size and {len(t) for t in texts.items} == {limits.max_text_chars}
    assert all(" " not in t for t in texts.items)  # one word each: BPE's worst case
    images = parse_request(bodies["image"][0], "application/json", request_limits)
    admit = ImagePreprocessor(limits=limits)
    opened = [admit.open(data) for data in images.items]
    pixels = [image.size[0] * image.size[1] for image in opened]
    assert sum(pixels) <= limits.max_request_pixels < sum(pixels) + pixels[0]  # one more image would be refused
    assert all(p > 0.99 * limits.max_image_pixels for p in pixels)
    assert {jpeg_scan_count(data, stop_after=1_000) for data in images.items} == {limits.max_jpeg_scans}
    fewer_scans = ImagePreprocessor(limits=ServingLimits(max_jpeg_scans=limits.max_jpeg_scans - 1))
    with pytest.raises(RequestError) as refused:
        fewer_scans.open(images.items[0])
    assert refused.value.code == "image_too_complex"


def test_generated_photos_have_the_size_asked():
    from clip_api.loadtest import ordinary_bodies

    bodies = ordinary_bodies(LoadSettings(url="http://127.0.0.1/x", image_size=(320, 200)), images=1)
    data = base64.b64decode(json.loads(bodies["image"][0])["image"])
    assert Image.open(io.BytesIO(data)).size == (320, 200)
