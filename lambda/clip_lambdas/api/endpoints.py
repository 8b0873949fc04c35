"""Which SageMaker endpoint serves a model right now, and calling it within API Gateway's 29 s.

The promotion workflow switches a model by writing its serving pointer (promotion/pointer.py, a
DynamoDB item per model). Each function reads the pointers it needs and caches them for a few
seconds: a switch reaches every warm function within that time, while the previous endpoint is
still kept serving.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

from botocore.config import Config

from clip_lambdas.api.errors import ApiError, from_endpoint_error, is_retryable, not_configured
from promotion.pointer import ServingPointer, read_pointer, route_space

API_GATEWAY_BUDGET_MS = 29_000
SAFETY_MARGIN_MS = 1_500  # time kept to answer after the last attempt
MAX_READ_TIMEOUT_S = 25
MIN_ATTEMPT_MS = 2_000  # no retry unless an attempt can still get at least this long
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.25, 4.0


def runtime_config(read_timeout_s: float = MAX_READ_TIMEOUT_S) -> Config:
    # Retries are ours (below), bounded by the time left; botocore's own would not know the budget.
    return Config(connect_timeout=min(2, read_timeout_s), read_timeout=read_timeout_s, retries={"total_max_attempts": 1})


def attempt_timeout_s(left_ms: float) -> int:
    """An attempt's read timeout: what is left of the budget, in whole seconds (a client per value), 1..25."""
    return max(1, min(MAX_READ_TIMEOUT_S, math.floor(left_ms / 1000)))


def backoff_s(attempt: int, rng=random.random) -> float:
    """Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): uniform in [0, min(cap, base * 2^attempt)]."""
    return rng() * min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)


@dataclass
class EndpointDirectory:
    dynamodb: object
    table: str
    ttl_s: float = 5.0  # the workflow waits this long (promotion/state_machine.py POINTER_CACHE_SECONDS) before deleting a rolled-back endpoint
    _cache: dict = field(default_factory=dict)

    def endpoint_for(self, model_id: str, space: str | None = None, clock=time.time) -> str:
        """The stable endpoint, or with `space` the endpoint of that embedding space (409 if there is
        none, 410 once its grace period has ended: promotion/pointer.py route_space)."""
        pointer = self._pointer(model_id)
        if not pointer.endpoint_name:
            raise not_configured(model_id)
        answer = route_space(pointer, space, clock())
        if answer.problem == "unavailable":
            raise ApiError(409, "space_unavailable", f"no version of {model_id} embeds in space {space}; available spaces: "
                           f"{', '.join(answer.available) or 'none'} (send one of them in X-Clip-Space, or none for the stable URL's)")
        if answer.problem == "retired":
            raise ApiError(410, "space_retired", f"space {space} of {model_id} is no longer served: re-embed your vectors in one of "
                           f"{', '.join(answer.available)} (the stable URL's is {pointer.space})")
        return answer.endpoint_name

    def _pointer(self, model_id: str) -> ServingPointer:
        cached = self._cache.get(model_id)
        now = time.monotonic()
        if cached and now - cached[1] < self.ttl_s:
            return cached[0]
        try:
            pointer = read_pointer(self.dynamodb, self.table, model_id)
        except Exception as error:  # noqa: BLE001 - any failure means the pointer cannot be read now
            if cached and cached[0].endpoint_name:
                return cached[0]  # keep serving what served a moment ago rather than fail every request
            raise ApiError(503, "model_unavailable", f"{model_id} is unavailable right now", retry_after_s=10) from error
        if pointer.endpoint_name:  # "nothing serves yet" is not cached: the first promotion's switch reaches every function at once
            self._cache[model_id] = (pointer, now)
        return pointer


def invoke_endpoint(runtime_for, endpoint: str, body: bytes, remaining_ms, sleep=time.sleep, rng=random.random) -> tuple[bytes, str]:
    """Invoke with retries of what is safe to retry (throttling, not-ready: embeddings are pure
    functions of the input), while enough of the 29 s budget is left. Every attempt's read timeout
    is what is left of the budget (`runtime_for(seconds)` gives a client with that read timeout), so
    the last attempt ends, and we answer, before API Gateway gives up; backoff has full jitter, so
    throttled callers do not retry in step. Returns (body, custom attributes)."""
    attempt = 0
    while True:
        runtime = runtime_for(attempt_timeout_s(remaining_ms() - SAFETY_MARGIN_MS))
        try:
            response = runtime.invoke_endpoint(EndpointName=endpoint, ContentType="application/json", Accept="application/json", Body=body)
            return response["Body"].read(), response.get("CustomAttributes", "")
        except Exception as error:  # noqa: BLE001 - mapped to a public error below
            delay_s = backoff_s(attempt, rng)
            left = remaining_ms() - SAFETY_MARGIN_MS
            if is_retryable(error) and left > delay_s * 1000 + MIN_ATTEMPT_MS:
                sleep(delay_s)
                attempt += 1
                continue
            raise from_endpoint_error(error) from error
