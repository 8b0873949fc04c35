"""The BYOC server over real HTTP: the contract, every bad input, and health after each."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import urllib.parse

import numpy as np
import pytest

from model_build.reference import cosine_rows


def request(base: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    url = urllib.parse.urlparse(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, response.headers, payload  # case-insensitive header lookup


def invoke(base: str, payload, content_type: str = "application/json"):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return request(base, "POST", "/invocations", body, {"Content-Type": content_type})


def test_ping_reports_the_model(tiny_server, tiny_fp32):
    status, _, body = request(tiny_server, "GET", "/ping")
    assert status == 200
    assert json.loads(body) == {"status": "healthy", "model": "clip-tiny", "version": tiny_fp32.manifest.version}


def test_text_and_image_embeddings_are_unit_norm_and_match_open_clip(tiny_server, tiny_reference, probe_images):
    status, headers, body = invoke(tiny_server, {"text": "a photo of a dog"})
    assert status == 200
    vector = np.array(json.loads(body), dtype=np.float32)
    assert vector.shape == (64,)
    assert abs(np.linalg.norm(vector) - 1) < 1e-5
    assert cosine_rows(vector[None], tiny_reference.embed_texts(["a photo of a dog"]))[0] >= 0.99999
    assert headers["X-Amzn-SageMaker-Custom-Attributes"].startswith("model=clip-tiny;version=")

    photo = probe_images[0].data
    status, _, body = invoke(tiny_server, {"image": base64.b64encode(photo).decode()})
    assert status == 200
    assert cosine_rows(np.array([json.loads(body)]), tiny_reference.embed_images([photo]))[0] >= 0.99999

    status, _, raw_body = invoke(tiny_server, photo, content_type="image/png")
    assert status == 200 and json.loads(raw_body) == json.loads(body)


def test_every_answer_names_the_artifacts_embedding_space(tiny_server, tiny_fp32):
    """The custom attributes carry space=<id>, the manifest's space (embedding_space), whatever the request's form."""
    from inference_code.manifest import embedding_space, load_manifest

    space = embedding_space(load_manifest(tiny_fp32.directory))
    assert space == tiny_fp32.manifest.space
    for payload in ({"text": "a dog"}, {"texts": ["a dog", "a cat"]}):
        status, headers, _ = invoke(tiny_server, payload)
        attributes = dict(item.split("=", 1) for item in headers["X-Amzn-SageMaker-Custom-Attributes"].split(";"))
        assert status == 200 and attributes["space"] == space and attributes["model"] == "clip-tiny"


def test_batches_answer_arrays_of_arrays_and_report_truncation(tiny_server, probe_images):
    status, headers, body = invoke(tiny_server, {"texts": ["a dog", "word " * 200, "a cat"]})
    assert status == 200
    assert np.array(json.loads(body)).shape == (3, 64)
    assert headers["X-Amzn-SageMaker-Custom-Attributes"].endswith("truncated=1")
    images = [base64.b64encode(p.data).decode() for p in probe_images[:3]]
    status, _, body = invoke(tiny_server, {"images": images})
    assert status == 200 and np.array(json.loads(body)).shape == (3, 64)


def _bomb_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (9_000, 9_000)).save(buffer, "PNG")
    return buffer.getvalue()


def _truncated_jpeg(probe_images) -> bytes:
    data = next(p for p in probe_images if p.name == "large-1024x768-jpeg").data
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "case, status, code",
    [
        ("malformed_json", 400, "malformed_json"),
        ("bad_base64", 400, "invalid_base64"),
        ("not_an_image", 400, "not_an_image"),
        ("truncated_image", 400, "corrupt_image"),
        ("decompression_bomb", 413, "image_too_many_pixels"),
        ("empty_text", 400, "empty_text"),
        ("over_long_text", 413, "text_too_long"),
        ("wrong_content_type", 415, "unsupported_media_type"),
        ("oversized_batch", 413, "batch_too_large"),
        ("missing_key", 400, "invalid_request"),
        ("both_keys", 400, "invalid_request"),
        ("wrong_type", 400, "invalid_type"),
        ("oversized_body", 413, "request_too_large"),
        ("bad_item_in_image_batch", 400, "not_an_image"),
    ],
)
def test_bad_input_gets_a_clear_error_and_the_server_stays_healthy(tiny_server, probe_images, case, status, code):
    good_image = base64.b64encode(probe_images[0].data).decode()
    payloads = {
        "malformed_json": (b'{"text": "unterminated', "application/json"),
        "bad_base64": ({"image": "%%%%not-base64%%%%"}, "application/json"),
        "not_an_image": ({"image": base64.b64encode(b"hello, I am text").decode()}, "application/json"),
        "truncated_image": ({"image": base64.b64encode(_truncated_jpeg(probe_images)).decode()}, "application/json"),
        "decompression_bomb": ({"image": base64.b64encode(_bomb_png()).decode()}, "application/json"),
        "empty_text": ({"text": ""}, "application/json"),
        "over_long_text": ({"text": "x" * 10_001}, "application/json"),
        "wrong_content_type": ({"text": "a dog"}, "text/plain"),
        "oversized_batch": ({"texts": ["a dog"] * 33}, "application/json"),
        "missing_key": ({}, "application/json"),
        "both_keys": ({"text": "a", "image": good_image}, "application/json"),
        "wrong_type": ({"texts": [1, 2]}, "application/json"),
        "oversized_body": (json.dumps({"text": "a" * 4_100_000}).encode(), "application/json"),
        "bad_item_in_image_batch": ({"images": [good_image, base64.b64encode(b"nope").decode()]}, "application/json"),
    }
    payload, content_type = payloads[case]
    got_status, headers, body = invoke(tiny_server, payload, content_type)
    error = json.loads(body)["error"]
    assert (got_status, error["code"]) == (status, code), error
    assert headers["content-type"].startswith("application/json")
    for leak in ("Traceback", ".py", "/tmp", "/opt", "inference_code", "File "):
        assert leak not in error["message"]
    ok_status, _, ok_body = invoke(tiny_server, {"text": "still healthy?"})
    assert ok_status == 200 and len(json.loads(ok_body)) == 64


def test_declared_oversized_body_is_refused_without_reading_it(tiny_server):
    url = urllib.parse.urlparse(tiny_server)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n{")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")


def test_unknown_routes_and_methods_are_json_errors(tiny_server):
    status, _, body = request(tiny_server, "GET", "/nope")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
    status, _, body = request(tiny_server, "GET", "/invocations")
    assert status == 405 and json.loads(body)["error"]["code"] == "method_not_allowed"


# ---------------------------------------------------------------------------------------------
# Hostile input and load (issue 13), over real HTTP against the server as `serve` runs it
# (tests/inference_code/conftest.py): each case, then a good request answered correctly and promptly.
import threading  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

from tests.inference_code.conftest import running_server  # noqa: E402
from tests.inference_code.hostile import blank_png, many_scan_jpeg  # noqa: E402


def assert_good_request_answered_promptly(base: str, reference) -> None:
    started = time.monotonic()
    status, _, body = invoke(base, {"text": "a photo of a dog"})
    assert status == 200
    assert time.monotonic() - started < 5.0
    vector = np.array(json.loads(body), dtype=np.float32)
    assert cosine_rows(vector[None], reference.embed_texts(["a photo of a dog"]))[0] >= 0.99999


def error_code(body: bytes) -> str:
    return json.loads(body)["error"]["code"]


@pytest.mark.parametrize(
    "body, status, code",
    [
        (b'{"texts": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", 400, "json_too_deep"),
        (b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "json_too_deep"),
        (b'{"text": ' + b"7" * 5_000 + b"}", 400, "invalid_type"),
    ],
    ids=["nested-5000", "nested-100000", "5000-digit-integer"],
)
def test_hostile_json_is_a_4xx(hostile_server, tiny_reference, body, status, code):
    got, _, answer = invoke(hostile_server, body)
    assert (got, error_code(answer)) == (status, code)
    assert_good_request_answered_promptly(hostile_server, tiny_reference)


def test_hostile_texts_are_tokenised_quickly_and_truncated(hostile_server, tiny_reference):
    import random
    import string

    rng = random.Random(1)
    texts = ["".join(rng.choice(string.ascii_lowercase) for _ in range(10_000)) for _ in range(32)]
    started = time.monotonic()
    status, headers, body = invoke(hostile_server, {"texts": texts})
    assert status == 200 and np.array(json.loads(body)).shape == (32, 64)
    assert headers["X-Amzn-SageMaker-Custom-Attributes"].endswith("truncated=" + ",".join(str(i) for i in range(32)))
    assert time.monotonic() - started < 15.0  # generous: about 0.5 s; the quadratic BPE took over a minute
    assert_good_request_answered_promptly(hostile_server, tiny_reference)


def test_many_scan_progressive_jpeg_is_413_image_too_complex(hostile_server, tiny_reference):
    data = many_scan_jpeg(size=2_000, repeats=5_000)
    status, _, body = invoke(hostile_server, {"image": base64.b64encode(data).decode()})
    assert (status, error_code(body)) == (413, "image_too_complex")
    status, _, body = invoke(hostile_server, data, content_type="image/jpeg")
    assert (status, error_code(body)) == (413, "image_too_complex")
    assert_good_request_answered_promptly(hostile_server, tiny_reference)


def test_too_many_pixels_in_one_request_is_413(hostile_server, tiny_reference):
    big = base64.b64encode(blank_png(6_000, 6_000)).decode()  # 36 Mpx each, under the per-image 40 Mpx
    status, _, body = invoke(hostile_server, {"images": [big] * 24})
    assert (status, error_code(body)) == (413, "request_too_many_pixels")
    status, _, body = invoke(hostile_server, {"images": [big] * 2})  # 72 Mpx: within the budget
    assert status == 200 and np.array(json.loads(body)).shape == (2, 64)
    assert_good_request_answered_promptly(hostile_server, tiny_reference)


def test_half_sent_headers_are_timed_out(hostile_server, tiny_reference):
    url = urllib.parse.urlparse(hostile_server)
    sockets = []
    for _ in range(20):
        sock = socket.create_connection((url.hostname, url.port), timeout=10)
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
        sockets.append(sock)
    silent = socket.create_connection((url.hostname, url.port), timeout=10)
    started = time.monotonic()
    for sock in sockets:
        reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert error_code(reply.split(b"\r\n\r\n", 1)[1]) == "request_timeout"
        assert sock.recv(4096) == b""  # and closed
        sock.close()
    assert silent.recv(4096) == b""  # a connection that sends nothing is closed too
    silent.close()
    assert time.monotonic() - started < 8.0  # header timeout 1 s here (10 s by default)
    assert_good_request_answered_promptly(hostile_server, tiny_reference)


def test_oversized_body_sent_before_reading_gets_the_413_not_a_reset(hostile_server, tiny_reference):
    # 12 MB: more than loopback's socket buffers hold, so closing with it unread resets (it did)
    body = json.dumps({"text": "a" * 12_000_000}).encode()
    request_ = urllib.request.Request(
        hostile_server + "/invocations", data=body, headers={"Content-Type": "application/json", "Connection": "close"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request_, timeout=30)
    assert caught.value.code == 413
    assert error_code(caught.value.read()) == "request_too_large"
    assert_good_request_answered_promptly(hostile_server, tiny_reference)


def test_chunked_oversized_body_reports_what_is_known(hostile_server, tiny_reference):
    import re

    size = 4_200_000
    url = urllib.parse.urlparse(hostile_server)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    chunks = (b"x" * 100_000 for _ in range(size // 100_000))
    connection.request("POST", "/invocations", body=chunks, headers={"Content-Type": "application/json"}, encode_chunked=True)
    response = connection.getresponse()
    error = json.loads(response.read())["error"]
    connection.close()
    assert (response.status, error["code"]) == (413, "request_too_large")
    received = int(re.search(r"at least (\d+)", error["message"]).group(1))
    assert 4_000_000 < received <= size  # never a size the client did not send
    assert_good_request_answered_promptly(hostile_server, tiny_reference)


def _post_in_thread(base: str, payload: dict, results: list) -> threading.Thread:
    def run():
        results.append(invoke(base, payload))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_queue_is_bounded_with_503_and_retry_after_and_ping_stays_up(gated, tiny_reference):
    with running_server(gated, max_pending_requests=3, workers=1) as (base, _app):
        results: list = []
        threads = [_post_in_thread(base, {"text": f"dog {i}"}, results) for i in range(3)]
        assert gated.started.wait(10)
        deadline = time.monotonic() + 10
        while _app.state.admission().pending < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        status, headers, body = invoke(base, {"text": "one too many"})
        assert (status, error_code(body)) == (503, "overloaded")
        assert int(headers["Retry-After"]) >= 1
        status, _, body = request(base, "GET", "/ping")  # saturated, not broken: SageMaker must not replace it
        assert status == 200 and json.loads(body)["status"] == "saturated"
        gated.release()
        for thread in threads:
            thread.join(30)
        assert sorted(r[0] for r in results) == [200, 200, 200]
        assert json.loads(request(base, "GET", "/ping")[2])["status"] == "healthy"
        assert_good_request_answered_promptly(base, tiny_reference)


def test_work_of_a_client_that_went_away_is_dropped(gated, tiny_reference):
    with running_server(gated, workers=1) as (base, app):
        results: list = []
        first = _post_in_thread(base, {"text": "holds the worker"}, results)
        assert gated.started.wait(10)
        url = urllib.parse.urlparse(base)
        body = json.dumps({"text": "I will not wait"}).encode()
        for _ in range(5):  # five clients that time out and leave
            with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
                sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                time.sleep(0.2)
        deadline = time.monotonic() + 10
        while app.state.admission().pending > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.admission().dropped == 5
        gated.release()
        first.join(30)
        assert results[0][0] == 200
        assert gated.calls == 1  # the five abandoned requests were never computed
        assert_good_request_answered_promptly(base, tiny_reference)


def test_request_past_its_deadline_gets_503_and_a_stuck_worker_fails_ping(gated, tiny_reference):
    with running_server(gated, request_deadline_s=1.0, workers=1) as (base, _app):
        results: list = []
        first = _post_in_thread(base, {"text": "holds the worker"}, results)
        assert gated.started.wait(10)
        started = time.monotonic()
        status, headers, body = invoke(base, {"text": "waits too long"})
        assert (status, error_code(body)) == (503, "deadline_exceeded")
        assert 0.9 <= time.monotonic() - started < 5.0 and int(headers["Retry-After"]) >= 1
        time.sleep(0.2)
        status, _, body = request(base, "GET", "/ping")  # one request on the worker past the deadline
        assert status == 503 and json.loads(body)["status"] == "unhealthy"
        gated.release()
        first.join(30)
        assert request(base, "GET", "/ping")[0] == 200
        assert_good_request_answered_promptly(base, tiny_reference)


def test_internal_error_is_a_500_logged_once_without_user_data(tiny_service, monkeypatch, caplog):
    def broken(texts, priority=0.0):
        raise ValueError(f"cannot embed {texts[0]}")

    monkeypatch.setattr(tiny_service.embedder, "embed_texts", broken)
    with caplog.at_level("ERROR"):
        response = tiny_service.handle(json.dumps({"text": "my secret diary"}).encode(), "application/json")
    assert response.status == 500 and json.loads(response.body)["error"]["code"] == "internal_error"
    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1 and "ValueError" in errors[0].getMessage()
    assert "secret" not in caplog.text
