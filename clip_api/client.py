"""A Python client for the public API: `ClipClient(url, api_key).embed_texts([...])` -> numpy array.

Splits inputs into requests under the API's limits (32 items, 4 MB of JSON), sends up to
`concurrency` requests at once, retries 429/503 and lost connections (Retry-After honoured,
jittered exponential backoff otherwise), shows a progress bar for long lists, and raises
`ClipApiError` subclasses carrying the API's error code. Standard library + numpy (+ tqdm for the bar).
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

MAX_BATCH = 32
MAX_REQUEST_BYTES = 4_000_000
MAX_IMAGE_BYTES = 3_000_000
RETRY_STATUSES = (429, 502, 503, 504)


class ClipApiError(Exception):
    """An error answer of the API: `status`, the stable `code` (e.g. "text_too_long") and `message`."""

    def __init__(self, status: int, code: str, message: str, index: int | None = None):
        super().__init__(f"{status} {code}: {message}" + (f" (request starting at item {index})" if index is not None else ""))
        self.status, self.code, self.message, self.index = status, code, message, index


class InvalidInputError(ClipApiError):
    """4xx: the request was refused (bad or too large input); retrying will not help."""


class RateLimitedError(ClipApiError):
    """429/503 after every retry."""


class ServerError(ClipApiError):
    """5xx other than back-pressure."""


def _error_for(status: int, code: str, message: str, index: int | None) -> ClipApiError:
    kind = RateLimitedError if status in (429, 503) else InvalidInputError if 400 <= status < 500 else ServerError
    return kind(status, code, message, index)


class ClipClient:
    def __init__(self, url: str, api_key: str | None = None, concurrency: int = 4, max_retries: int = 6, timeout_s: float = 60.0,
                 progress: bool | None = None, max_batch: int = MAX_BATCH, max_request_bytes: int = MAX_REQUEST_BYTES,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 20.0):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.concurrency = max(1, concurrency)
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.progress = progress
        self.max_batch = max_batch
        self.max_request_bytes = max_request_bytes
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.requests_sent = 0  # counting every attempt (tests, and your own accounting)

    # -- public
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self._embed("texts", [json.dumps(t) for t in texts])

    def embed_images(self, images: list) -> np.ndarray:
        """`images`: paths or bytes (JPEG/PNG/WebP/GIF/BMP). One over the API's 3 MB image limit raises
        InvalidInputError(image_too_large) before anything is sent."""
        encoded = []
        for index, image in enumerate(images):
            data = image if isinstance(image, (bytes, bytearray)) else Path(image).read_bytes()
            if len(data) > MAX_IMAGE_BYTES:
                raise InvalidInputError(413, "image_too_large", f"image {index} is {len(data)} bytes; at most {MAX_IMAGE_BYTES} are accepted", index)
            encoded.append(json.dumps(base64.b64encode(data).decode()))
        return self._embed("images", encoded)

    # -- batching
    def batches(self, encoded: list[str], key: str) -> list[tuple[int, list[str]]]:
        """(start index, items) per request: at most max_batch items and max_request_bytes of JSON."""
        overhead = len(key) + 8
        out, start, size = [], 0, overhead
        for index, item in enumerate(encoded):
            grow = len(item) + 1
            if index > start and (index - start >= self.max_batch or size + grow > self.max_request_bytes):
                out.append((start, encoded[start:index]))
                start, size = index, overhead
            size += grow
        if encoded:
            out.append((start, encoded[start:]))
        return out

    def _embed(self, key: str, encoded: list[str]) -> np.ndarray:
        if not encoded:
            return np.zeros((0, 0), dtype=np.float32)
        batches = self.batches(encoded, key)
        show = self.progress if self.progress is not None else len(encoded) >= 1000
        results: dict[int, np.ndarray] = {}
        bar = None
        if show:
            from tqdm import tqdm

            bar = tqdm(total=len(encoded), unit="item")
        try:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(batches))) as pool:
                futures = {pool.submit(self._post_batch, key, items, start): (start, len(items)) for start, items in batches}
                for future, (start, count) in futures.items():
                    results[start] = future.result()
                    if bar:
                        bar.update(count)
        finally:
            if bar:
                bar.close()
        return np.concatenate([results[start] for start, _ in batches]).astype(np.float32, copy=False)

    # -- one request with retries
    def _post_batch(self, key: str, items: list[str], start: int) -> np.ndarray:
        body = ('{"' + key + '":[' + ",".join(items) + "]}").encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        delay = self.backoff_base_s
        for attempt in range(self.max_retries + 1):
            self.requests_sent += 1
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    vectors = np.asarray(json.loads(response.read()), dtype=np.float32)
                    if vectors.ndim != 2 or len(vectors) != len(items):
                        raise ServerError(response.status, "unexpected_answer", f"expected {len(items)} embeddings", start)
                    return vectors
            except urllib.error.HTTPError as error:
                payload = error.read()
                code, message = _parse_error(payload, error.code)
                if error.code in RETRY_STATUSES and attempt < self.max_retries:
                    time.sleep(self._wait(error.headers.get("Retry-After"), delay))
                    delay = min(delay * 2, self.backoff_max_s)
                    continue
                raise _error_for(error.code, code, message, start) from None
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as error:
                if attempt < self.max_retries:
                    time.sleep(self._wait(None, delay))
                    delay = min(delay * 2, self.backoff_max_s)
                    continue
                raise ServerError(0, "connection_failed", str(error), start) from None
        raise AssertionError("unreachable")

    def _wait(self, retry_after: str | None, delay: float) -> float:
        """Retry-After (seconds) when given, else the backoff; jittered so clients do not retry in step."""
        try:
            base = float(retry_after) if retry_after is not None else delay
        except ValueError:
            base = delay
        return min(base, self.backoff_max_s) * (1 + random.random() * 0.5)


def _parse_error(payload: bytes, status: int) -> tuple[str, str]:
    try:
        error = json.loads(payload)["error"]
        return str(error["code"]), str(error.get("message", ""))
    except (ValueError, KeyError, TypeError):
        try:
            return "http_error", str(json.loads(payload).get("message", ""))  # API Gateway's own answers: {"message": ...}
        except (ValueError, AttributeError):
            return "http_error", f"HTTP {status}"
