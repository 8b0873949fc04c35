"""Which SageMaker endpoint serves a model right now, and calling it within API Gateway's 29 s.

The promotion workflow switches a model by updating its API function's SAGEMAKER_ENDPOINT_NAME.
The function's own model is read from its environment; another model (for /v1/embeddings) is read
from that model's function configuration, cached for a few seconds.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from botocore.config import Config

from embedding_api.errors import ApiError, from_endpoint_error, is_retryable, not_configured

ENDPOINT_ENV = "SAGEMAKER_ENDPOINT_NAME"
API_GATEWAY_BUDGET_MS = 29_000
SAFETY_MARGIN_MS = 1_500


def runtime_config(read_timeout_s: float = 25.0) -> Config:
    # Retries are ours (below), bounded by the time left; botocore's own would not know the budget.
    return Config(connect_timeout=2, read_timeout=read_timeout_s, retries={"total_max_attempts": 1})


@dataclass
class EndpointDirectory:
    own_model_id: str
    lambda_client: object = None
    function_name_format: str = "clip-embedding-api-{model_id}"
    ttl_s: float = 5.0
    _cache: dict = field(default_factory=dict)

    def endpoint_for(self, model_id: str) -> str:
        if model_id == self.own_model_id:
            name = os.environ.get(ENDPOINT_ENV, "")
        else:
            name = self._sibling_endpoint(model_id)
        if not name:
            raise not_configured(model_id)
        return name

    def _sibling_endpoint(self, model_id: str) -> str:
        cached = self._cache.get(model_id)
        if cached and time.monotonic() - cached[1] < self.ttl_s:
            return cached[0]
        function = self.function_name_format.format(model_id=model_id)
        try:
            variables = self.lambda_client.get_function_configuration(FunctionName=function).get("Environment", {}).get("Variables", {})
        except Exception as error:  # noqa: BLE001 - any failure means the model cannot be served now
            raise ApiError(503, "model_unavailable", f"{model_id} is unavailable right now", retry_after_s=10) from error
        name = variables.get(ENDPOINT_ENV, "")
        self._cache[model_id] = (name, time.monotonic())
        return name


def invoke_endpoint(runtime, endpoint: str, body: bytes, remaining_ms, sleep=time.sleep) -> tuple[bytes, str]:
    """Invoke with retries of what is safe to retry (throttling, not-ready: embeddings are pure
    functions of the input), while enough of the 29 s budget is left. Returns (body, custom attributes)."""
    delay_s = 0.25
    while True:
        try:
            response = runtime.invoke_endpoint(EndpointName=endpoint, ContentType="application/json", Accept="application/json", Body=body)
            return response["Body"].read(), response.get("CustomAttributes", "")
        except Exception as error:  # noqa: BLE001 - mapped to a public error below
            left = remaining_ms() - SAFETY_MARGIN_MS
            if is_retryable(error) and left > delay_s * 1000 + 2_000:
                sleep(delay_s)
                delay_s *= 2
                continue
            raise from_endpoint_error(error) from error


def parse_attributes(attributes: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in attributes.split(";") if "=" in item)
    return {key.strip(): value.strip() for key, value in pairs}
