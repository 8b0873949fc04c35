"""Turning endpoint failures into public errors, as pure functions.

Every public error is JSON with a stable code; none carries ARNs, endpoint names or stack traces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

RETRYABLE_CODES = ("ThrottlingException", "ServiceUnavailable", "ModelNotReadyException", "InternalFailure")


@dataclass(frozen=True)
class ApiError(Exception):
    status: int
    code: str
    message: str
    retry_after_s: int | None = None

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}

    def headers(self) -> dict:
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else {}


def is_retryable(error: Exception) -> bool:
    return isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") in RETRYABLE_CODES


def _model_error(error: ClientError) -> ApiError:
    response = error.response
    status = int(response.get("OriginalStatusCode") or 500)
    retry_after = 2 if status == 429 else None  # the container is busy: its queue is full
    if 400 <= status < 500:
        try:
            detail = json.loads(response.get("OriginalMessage") or "")["error"]
            return ApiError(status, str(detail["code"]), str(detail["message"]), retry_after_s=retry_after)
        except (ValueError, KeyError, TypeError):
            return ApiError(status, "bad_request", "the model rejected the request", retry_after_s=retry_after)
    if status == 503:  # the container is starting, restarting or full: not a failure of the model
        return ApiError(503, "model_unavailable", "the model is starting or busy; retry later", retry_after_s=5)
    return ApiError(502, "model_error", "the model failed to compute the embedding; retrying may help")


def from_endpoint_error(error: Exception) -> ApiError:
    if isinstance(error, ReadTimeoutError):
        return ApiError(504, "timeout", "the model did not answer in time (cold start or overload); retry later", retry_after_s=5)
    if isinstance(error, (ConnectTimeoutError, EndpointConnectionError)):
        return ApiError(503, "model_unavailable", "the model service could not be reached; retry later", retry_after_s=5)
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code == "ModelError":
            return _model_error(error)
        if code == "ThrottlingException":
            return ApiError(429, "throttled", "too many requests for this model right now; retry later", retry_after_s=2)
        if code in ("ModelNotReadyException", "ServiceUnavailable", "InternalFailure"):
            return ApiError(503, "model_unavailable", "the model is starting or unavailable; retry later", retry_after_s=5)
        if code == "ValidationException":  # e.g. no endpoint yet for this model
            return ApiError(503, "model_unavailable", "this model has no serving version yet", retry_after_s=30)
    return ApiError(502, "upstream_error", "the model service failed; retry later")


def not_configured(model_id: str) -> ApiError:
    return ApiError(503, "model_unavailable", f"{model_id} has no serving version yet", retry_after_s=30)
