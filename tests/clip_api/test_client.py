"""clip_api.client against the real container behind a proxy that answers 429/503 with Retry-After
for the first requests (as API Gateway throttling and the container's back-pressure do)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from clip_api.client import ClipClient, InvalidInputError, RateLimitedError


class FlakyProxy:
    def __init__(self, upstream: str, refuse_first: int, status: int = 429, retry_after: str = "0.2"):
        self.upstream, self.refuse_left, self.status, self.retry_after = upstream, refuse_first, status, retry_after
        self.batch_sizes: list[int] = []
        self.body_sizes: list[int] = []
        self.keys: list[str | None] = []
        self.refused_at: list[float] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with proxy.lock:
                    proxy.keys.append(self.headers.get("x-api-key"))
                    refuse = proxy.refuse_left > 0
                    proxy.refuse_left -= 1
                    if refuse:
                        proxy.refused_at.append(time.monotonic())
                if refuse:
                    payload = json.dumps({"error": {"code": "throttled", "message": "slow down"}}).encode()
                    self.send_response(proxy.status)
                    self.send_header("Retry-After", proxy.retry_after)
                else:
                    parsed = json.loads(body)
                    with proxy.lock:
                        proxy.batch_sizes.append(len(next(iter(parsed.values()))))
                        proxy.body_sizes.append(len(body))
                    request = urllib.request.Request(proxy.upstream + "/invocations", data=body, headers={"Content-Type": "application/json"})
                    try:
                        with urllib.request.urlopen(request, timeout=60) as response:
                            status, payload = response.status, response.read()
                    except urllib.error.HTTPError as error:
                        status, payload = error.code, error.read()
                    self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/b32"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy_factory(tiny_server):
    proxies = []

    def make(**kwargs):
        proxies.append(FlakyProxy(tiny_server, **kwargs))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


def single(tiny_server, payload) -> np.ndarray:
    request = urllib.request.Request(tiny_server + "/invocations", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return np.asarray(json.loads(response.read()), dtype=np.float32)


def test_texts_are_batched_under_32_retried_and_equal_single_requests(proxy_factory, tiny_server):
    proxy = proxy_factory(refuse_first=3, retry_after="0.3")
    texts = [f"caption number {i}" for i in range(100)]
    client = ClipClient(proxy.url, api_key="k-123", concurrency=3, progress=False)
    vectors = client.embed_texts(texts)
    assert vectors.shape == (100, 64) and vectors.dtype == np.float32
    assert sorted(proxy.batch_sizes) == [4, 32, 32, 32]
    assert client.requests_sent == 4 + 3 and set(proxy.keys) == {"k-123"}
    for i in (0, 31, 32, 99):
        assert np.array_equal(vectors[i], single(tiny_server, {"text": texts[i]}))


def test_retry_after_is_honoured(proxy_factory):
    proxy = proxy_factory(refuse_first=1, status=503, retry_after="1")
    started = time.monotonic()
    ClipClient(proxy.url, progress=False).embed_texts(["a dog"])
    assert time.monotonic() - started >= 1.0  # waited at least Retry-After


def test_gives_up_with_a_typed_error_after_the_retries(proxy_factory):
    proxy = proxy_factory(refuse_first=100, retry_after="0")
    with pytest.raises(RateLimitedError) as raised:
        ClipClient(proxy.url, max_retries=2, progress=False, backoff_base_s=0.01).embed_texts(["a dog"])
    assert raised.value.status == 429 and raised.value.code == "throttled" and len(proxy.keys) == 3


def test_api_error_codes_are_typed_and_not_retried(proxy_factory):
    proxy = proxy_factory(refuse_first=0)
    client = ClipClient(proxy.url, progress=False)
    with pytest.raises(InvalidInputError) as raised:
        client.embed_texts(["fine", ""])
    assert (raised.value.status, raised.value.code, raised.value.index) == (400, "empty_text", 0)
    assert client.requests_sent == 1
    with pytest.raises(InvalidInputError) as raised:
        client.embed_images([b"x" * 3_000_001])
    assert raised.value.code == "image_too_large" and client.requests_sent == 1  # refused before sending


def test_images_are_split_under_4_mb(proxy_factory, tiny_server):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for i in range(6):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (600, 700, 3), dtype=np.uint8)).save(buffer, "PNG")  # ~1.2 MB each
        images.append(buffer.getvalue())
    proxy = proxy_factory(refuse_first=0)
    vectors = ClipClient(proxy.url, progress=False, concurrency=2).embed_images(images)
    assert max(proxy.body_sizes) <= 4_000_000 and len(proxy.body_sizes) >= 3
    assert np.array_equal(vectors[5], single(tiny_server, {"image": base64.b64encode(images[5]).decode()}))
