"""The public API handler: one code for every model, one function per model (configured by environment).

Environment: MODEL_ID (this function's model), SAGEMAKER_ENDPOINT_NAME (set by the promotion
workflow), SERVED_MODELS (model ids whose routes this function answers; default all non-demo
configs), API_FUNCTION_NAME_FORMAT, CORS_ALLOW_ORIGIN (unset: no CORS headers).

Routes: POST /<route> per model (the serving contract: text, texts, image, images) and the
OpenAI-style POST /v1/embeddings.
"""

from __future__ import annotations

import base64
import json
import os
import time

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestUnsupportedContentType, RequestValidationError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from clip_api.model_config import ModelConfig, load_all_model_configs, load_model_config
from embedding_api.endpoints import API_GATEWAY_BUDGET_MS, EndpointDirectory, invoke_endpoint, parse_attributes, runtime_config
from embedding_api.errors import ApiError
from embedding_api.models import EmbeddingItem, EmbeddingRequest, ErrorBody, OpenAIEmbeddingRequest, OpenAIEmbeddingResponse
from inference_code.contract import RequestLimits, check_text, decode_image
from inference_code.errors import RequestError

NAMESPACE = "ClipEmbeddingApi"
logger = Logger(service="clip-embedding-api")
metrics = Metrics(namespace=NAMESPACE, service="clip-embedding-api")
tracer = Tracer(service="clip-embedding-api")
_cors_origin = os.environ.get("CORS_ALLOW_ORIGIN")
app = APIGatewayRestResolver(enable_validation=True, cors=CORSConfig(allow_origin=_cors_origin, max_age=600) if _cors_origin else None)

OWN_MODEL_ID = os.environ.get("MODEL_ID", "clip-vit-b-32")
_served = os.environ.get("SERVED_MODELS")
SERVED: dict[str, ModelConfig] = (
    {model_id: load_model_config(model_id) for model_id in _served.split(",") if model_id}
    if _served
    else {c.model_id: c for c in load_all_model_configs() if not c.demo_only}
)
BY_NAME = {**{c.route: c for c in SERVED.values()}, **SERVED}


class Clients:
    """AWS clients, created on first use (tests swap them)."""

    runtime = None
    lambda_client = None
    directory = None

    @classmethod
    def endpoints(cls) -> EndpointDirectory:
        if cls.directory is None:
            cls.directory = EndpointDirectory(OWN_MODEL_ID, cls.lambda_client or boto3.client("lambda"),
                                              os.environ.get("API_FUNCTION_NAME_FORMAT", "clip-embedding-api-{model_id}"))
        return cls.directory

    @classmethod
    def sagemaker_runtime(cls):
        if cls.runtime is None:
            cls.runtime = boto3.client("sagemaker-runtime", config=runtime_config())
        return cls.runtime


ERROR_RESPONSES = {
    status: {"description": description, "content": {"application/json": {"model": ErrorBody}}}
    for status, description in {
        400: "bad input", 413: "too large (the serverless payload limit is 4 MB)", 415: "not application/json",
        429: "throttled (Retry-After)", 502: "the model failed", 503: "no serving version or cold start (Retry-After)", 504: "timeout",
    }.items()
}


def error_response(error: ApiError) -> Response:
    with single_metric(name="Errors", unit=MetricUnit.Count, value=1, namespace=NAMESPACE,
                       default_dimensions={"model": _current_model(), "kind": error.code}) as metric:
        metric.add_metadata("status", error.status)
    if error.status == 429:
        metrics.add_metric(name="Throttles", unit=MetricUnit.Count, value=1)
    return Response(status_code=error.status, content_type="application/json", body=json.dumps(error.body()), headers=error.headers())


def _current_model() -> str:
    return app.context.get("model_id", OWN_MODEL_ID)


@app.exception_handler(ApiError)
def _api_error(error: ApiError) -> Response:
    return error_response(error)


@app.exception_handler(RequestError)
def _request_error(error: RequestError) -> Response:
    return error_response(ApiError(error.status, error.code, error.message))


@app.exception_handler(RequestUnsupportedContentType)
def _content_type_error(error: RequestUnsupportedContentType) -> Response:
    return error_response(ApiError(415, "unsupported_media_type", "send the request as Content-Type: application/json"))


@app.exception_handler(RequestValidationError)
def _validation_error(error: RequestValidationError) -> Response:
    problems = error.errors()
    kinds = {p.get("type") for p in problems}
    if "json_invalid" in kinds:
        return error_response(ApiError(400, "malformed_json", "the request body is not valid JSON"))
    code = "unknown_field" if "extra_forbidden" in kinds else "invalid_type" if kinds & {"string_type", "list_type", "model_type"} else "invalid_request"
    first = problems[0] if problems else {}
    where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "body"
    return error_response(ApiError(400, code, f"{where}: {first.get('msg', 'invalid request')}"))


def _check_transport(limits: RequestLimits) -> None:
    event = app.current_event
    media = (event.headers.get("content-type") or event.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the request as Content-Type: application/json")
    body = event.body or ""
    size = len(base64.b64decode(body)) if event.is_base64_encoded else len(body.encode())
    if size > limits.max_request_bytes:
        raise ApiError(413, "request_too_large", f"the request body is {size} bytes; the serverless payload limit is 4 MB "
                       f"(at most {limits.max_request_bytes} bytes here): send images of at most about 3 MB, or fewer per batch")


def _check_items(request: EmbeddingRequest, limits: RequestLimits) -> int:
    """The serving contract's own checks (sizes, emptiness, base64), so codes match the endpoint's."""
    values = getattr(request, request.field)
    items = values if isinstance(values, list) else [values]
    batch = isinstance(values, list)
    if batch and not items:
        raise ApiError(400, "empty_batch", f"'{request.field}' must hold at least one item")
    if len(items) > limits.max_batch_size:
        raise ApiError(413, "batch_too_large", f"'{request.field}' holds {len(items)} items; at most {limits.max_batch_size} are accepted")
    for index, item in enumerate(items):
        where = f"{request.field}[{index}]" if batch else request.field
        (check_text if request.field.startswith("text") else decode_image)(item, where, limits)
    return len(items)


@tracer.capture_method
def _embed(config: ModelConfig, body: bytes) -> tuple[bytes, dict]:
    app.append_context(model_id=config.model_id)
    metrics.add_dimension(name="model", value=config.model_id)
    endpoint = Clients.endpoints().endpoint_for(config.model_id)
    started = app.context.get("started", time.monotonic())

    def remaining_ms() -> float:
        gateway_left = API_GATEWAY_BUDGET_MS - 1000 * (time.monotonic() - started)
        return min(gateway_left, app.lambda_context.get_remaining_time_in_millis()) if app.lambda_context else gateway_left

    result, attributes = invoke_endpoint(Clients.sagemaker_runtime(), endpoint, body, remaining_ms)
    return result, parse_attributes(attributes)


def _served_headers(attributes: dict) -> dict:
    return {"X-Clip-Model": attributes.get("model", ""), "X-Clip-Version": attributes.get("version", ""),
            "X-Clip-Truncated": attributes.get("truncated", "none")}


def _register_model_route(config: ModelConfig) -> None:
    limits = RequestLimits.from_dict(config.serving.limits.model_dump())

    def embed(body: EmbeddingRequest):  # no return annotation: the schema is in responses=
        app.append_context(model_id=config.model_id)
        _check_transport(limits)
        metrics.add_metric(name="BatchSize", unit=MetricUnit.Count, value=_check_items(body, limits))
        result, attributes = _embed(config, (app.current_event.body or "").encode())
        return Response(status_code=200, content_type="application/json", body=result.decode(), headers=_served_headers(attributes))

    embed.__name__ = f"embed_{config.route.replace('-', '_')}"
    app.post(f"/{config.route}", summary=f"{config.description}: embeddings", responses={
        200: {"description": "a unit-norm embedding (text, image) or a list of them (texts, images)",
              "content": {"application/json": {"schema": {"oneOf": [
                  {"type": "array", "items": {"type": "number"}},
                  {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}]}}}},
        **ERROR_RESPONSES,
    })(embed)


for _config in SERVED.values():
    _register_model_route(_config)


@app.post("/v1/embeddings", summary="OpenAI-style embeddings (texts, or images as {\"image\": base64})",
          responses={200: {"description": "embeddings", "content": {"application/json": {"model": OpenAIEmbeddingResponse}}}, **ERROR_RESPONSES})
def openai_embeddings(body: OpenAIEmbeddingRequest) -> OpenAIEmbeddingResponse:
    config = BY_NAME.get(body.model)
    if config is None:
        raise ApiError(400, "unknown_model", f"unknown model {body.model!r}; available: {sorted(SERVED)}")
    app.append_context(model_id=config.model_id)
    limits = RequestLimits.from_dict(config.serving.limits.model_dump())
    _check_transport(limits)
    items = body.input if isinstance(body.input, list) else [body.input]
    if not items:
        raise ApiError(400, "empty_batch", "'input' must hold at least one item")
    if all(isinstance(item, str) for item in items):
        request = EmbeddingRequest(texts=items)
    else:
        request = EmbeddingRequest(images=[item.image for item in items])
    metrics.add_metric(name="BatchSize", unit=MetricUnit.Count, value=_check_items(request, limits))
    result, _ = _embed(config, request.model_dump_json(exclude_none=True).encode())
    vectors = json.loads(result)
    return OpenAIEmbeddingResponse(data=[EmbeddingItem(index=i, embedding=v) for i, v in enumerate(vectors)], model=config.model_id)


@app.not_found
def _not_found(error: Exception) -> Response:
    return error_response(ApiError(404, "not_found", f"no route {app.current_event.http_method} {app.current_event.path}; "
                                   f"use POST /{{{'|'.join(sorted(c.route for c in SERVED.values()))}}} or POST /v1/embeddings"))


@app.exception_handler(Exception)
def _unexpected(error: Exception) -> Response:
    logger.exception("unexpected error")
    return error_response(ApiError(500, "internal_error", "internal error"))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict, context) -> dict:
    app.append_context(started=time.monotonic())
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    response = app.resolve(event, context)
    metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=1000 * (time.monotonic() - app.context.get("started", time.monotonic())))
    return response


def openapi_spec() -> dict:
    """The public contract, generated from the routes and models above (committed as openapi.json)."""
    spec = json.loads(app.get_openapi_json_schema(
        title="clip-embedding-api", version="1.0.0",
        summary="L2-normalised OpenAI CLIP text and image embeddings",
        description="Send JSON with Content-Type: application/json and your API key in x-api-key.",
    ))
    spec["components"]["securitySchemes"] = {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}
    spec["security"] = [{"apiKey": []}]
    return spec
