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
