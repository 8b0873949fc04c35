"""The public API handler: one code for every model, one function per model (configured by environment).

Environment: MODEL_ID (this function's model), SERVING_POINTER_TABLE (the DynamoDB table the
promotion workflow writes: which endpoint serves each model), SERVED_MODELS (model ids whose routes
this function answers; default all non-demo configs), CORS_ALLOW_ORIGIN (unset: no CORS headers).

Routes: POST /<route> per model (the serving contract: text, texts, image, images) and the
OpenAI-style POST /v1/embeddings.

Every answer the endpoint gave names its embedding space (X-Clip-Space; `space` in /v1/embeddings'
body): the serving container's custom attribute space=<id> (inference_code.manifest.embedding_space).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
import traceback

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from clip_lambdas.api.endpoints import API_GATEWAY_BUDGET_MS, EndpointDirectory, invoke_endpoint, runtime_config
from clip_lambdas.api.errors import ApiError
from clip_lambdas.api.image_header import ACCEPTED_FORMATS, read_header
from clip_lambdas.api.models import EmbeddingItem, EmbeddingRequest, ErrorBody, OpenAIEmbeddingRequest, OpenAIEmbeddingResponse
from pydantic import Field, ValidationError

from clip_core.model_config import ModelConfig, load_all_model_configs, load_model_config
from clip_core.names import CORS_ALLOW_ORIGIN_ENV, METRICS_NAMESPACE, METRICS_SERVICE, MODEL_ID_ENV, POINTER_TABLE, POINTER_TABLE_ENV, SERVED_MODELS_ENV
from inference_code.contract import ParsedRequest, decode_attributes, encode_request, load_json, media_type, parse_payload
from inference_code.errors import RequestError, listed, quoted
from promotion.pointer import SPACE_PATTERN

SERVICE = METRICS_SERVICE
MAX_JSON_DEPTH = 32  # a request nests 3 levels ({"input": [{"image": ...}]}); deeper is refused before parsing
MAX_INT_DIGITS = 4_300  # Python's int() limit: longer integers are kept as a marker (no field of this API is a number)
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)
_cors_origin = os.environ.get(CORS_ALLOW_ORIGIN_ENV)

OWN_MODEL_ID = os.environ.get(MODEL_ID_ENV, "clip-vit-b-32")
_served = os.environ.get(SERVED_MODELS_ENV)
SERVED: dict[str, ModelConfig] = (
    {model_id: load_model_config(model_id) for model_id in _served.split(",") if model_id}
    if _served
    else {c.model_id: c for c in load_all_model_configs() if not c.demo_only}
)
BY_NAME = {**{c.route: c for c in SERVED.values()}, **SERVED}
MAX_REQUEST_BYTES = max((c.serving.limits.max_request_bytes for c in SERVED.values()), default=4_000_000)


class HugeNumber:
    """An integer literal past Python's conversion limit: valid JSON, but never a valid value here."""

    def __init__(self, digits: int):
        self.digits = digits

    def __repr__(self) -> str:
        return f"<a {self.digits}-digit number>"


def _parse_int(literal: str):
    return int(literal) if len(literal) <= MAX_INT_DIGITS else HugeNumber(len(literal))


def json_nesting_exceeds(value, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether parsed JSON nests deeper than `limit` (the top-level value is level 1), without recursion."""
    level = [value]
    for _ in range(limit):
        level = [child for node in level for child in (node.values() if type(node) is dict else node) if type(child) in (dict, list)]
        if not level:
            return False
    return True


def too_deep() -> ApiError:
    return ApiError(400, "json_too_deep", f"the JSON nests more than {MAX_JSON_DEPTH} levels deep; a request is an object "
                    "whose values are strings or lists of strings (or, for /v1/embeddings, {\"image\": ...} objects)")


def request_too_large(size: int, max_bytes: int) -> ApiError:
    return ApiError(413, "request_too_large", f"the request body is {size} bytes; the serverless payload limit is 4 MB "
                    f"(at most {max_bytes} bytes here): send images of at most about 3 MB, or fewer per batch")


def parse_request_json(body: bytes | str):
    """/v1/embeddings' JSON, parsed with bounded work (its size is checked before): every way a client can make
    Python's json fail (nesting, integer digits, bytes that are not UTF-8) is a 4xx with a stable code."""
    if not body.strip():
        raise ApiError(400, "empty_body", "the request body is empty; send a JSON object such as {\"model\": \"b32\", \"input\": \"a dog\"}")
    try:
        value = json.loads(body, parse_int=_parse_int)
    except RecursionError:  # json.loads gives up about 1,000 levels down, after reading only those
        raise too_deep() from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        raise ApiError(400, "malformed_json", "the request body is not valid JSON") from None
    if isinstance(value, (dict, list)) and json_nesting_exceeds(value):  # the same answer for 33 levels as for 100,000
        raise too_deep()
    return value


SPACE_HEADER = "X-Clip-Space"  # names the embedding space of a response, and pins one in a request
_CORS = CORSConfig(allow_origin=_cors_origin, max_age=600, allow_headers=[SPACE_HEADER],
                   expose_headers=[SPACE_HEADER, "X-Clip-Model", "X-Clip-Version", "X-Clip-Truncated"]) if _cors_origin else None
# Validation on: the generated spec documents each route's Pydantic body. Each route turns it off for itself and
# reads its body once (request_body), so what it forwards is what it checked.
app = APIGatewayRestResolver(enable_validation=True, cors=_CORS)


class Clients:
    """AWS clients, created on first use (tests swap them)."""

    runtime = None
    dynamodb = None
    directory = None

    @classmethod
    def endpoints(cls) -> EndpointDirectory:
        if cls.directory is None:
            cls.directory = EndpointDirectory(cls.dynamodb or boto3.client("dynamodb"), os.environ.get(POINTER_TABLE_ENV, POINTER_TABLE))
        return cls.directory

    runtimes: dict = {}  # read timeout (whole seconds) -> client: botocore fixes a client's timeout when it is made

    @classmethod
    def sagemaker_runtime(cls, read_timeout_s: int = 25):
        if cls.runtime is not None:  # a test's stubbed client
            return cls.runtime
        if read_timeout_s not in cls.runtimes:
            cls.runtimes[read_timeout_s] = boto3.client("sagemaker-runtime", config=runtime_config(read_timeout_s))
        return cls.runtimes[read_timeout_s]


SPACE_SCHEMA = {"type": "string", "pattern": f"^{SPACE_PATTERN.pattern}$"}
SPACE_DESCRIPTION = ("the embedding space of the answering model (12 hex characters): store it with your vectors; "
                     "vectors of different spaces must not be compared. fp32 and int8 builds of the same weights share a space")
SERVED_HEADERS = {
    SPACE_HEADER: {"description": SPACE_DESCRIPTION, "schema": SPACE_SCHEMA},
    "X-Clip-Model": {"description": "the model id that answered", "schema": {"type": "string"}},
    "X-Clip-Version": {"description": "the model version (artifact) that answered", "schema": {"type": "string"}},
    "X-Clip-Truncated": {"description": "indices of texts truncated to the context length, or none", "schema": {"type": "string"}},
}


class OpenAIEmbeddingList(OpenAIEmbeddingResponse):
    """The OpenAI-style answer, with the embedding space its vectors live in."""

    space: str = Field(description=SPACE_DESCRIPTION)


ERROR_RESPONSES = {
    status: {"description": description, "content": {"application/json": {"model": ErrorBody}},
             "headers": {SPACE_HEADER: {"description": "the embedding space, when the request reached a model", "schema": {"type": "string"}}}}
    for status, description in {
        400: "bad input", 409: "space_unavailable: no version of the pinned embedding space is served (the message names those that are)",
        410: "space_retired: the pinned embedding space's grace period has ended; re-embed in an available one",
        413: "too large (the serverless payload limit is 4 MB)", 415: "not application/json",
        429: "throttled (Retry-After)", 502: "the model failed (model_error), or answered in another space than the pinned one (space_mismatch)", 503: "no serving version or cold start (Retry-After)", 504: "timeout",
    }.items()
}


def error_response(error: ApiError) -> Response:
    # service is explicit: single_metric would otherwise take POWERTOOLS_SERVICE_NAME (the function's name) or none.
    with single_metric(name="Errors", unit=MetricUnit.Count, value=1, namespace=METRICS_NAMESPACE,
                       default_dimensions={"model": _current_model(), "kind": error.code, "service": SERVICE}) as metric:
        metric.add_metadata("status", error.status)
    if error.status == 429:
        metrics.add_metric(name="Throttles", unit=MetricUnit.Count, value=1)
    headers = error.headers()
    if _Request.space:  # the endpoint answered before the error: its space is known
        headers = {**headers, SPACE_HEADER: _Request.space}
    return Response(status_code=error.status, content_type="application/json", body=json.dumps(error.body()), headers=headers)


class _Request:
    """What the handler needs after app.resolve(), which clears the resolver's context."""

    model_id: str | None = None
    started: float = 0.0
    space: str = ""  # the embedding space the endpoint named in its answer


def _set_model(model_id: str) -> None:
    _Request.model_id = model_id
    app.append_context(model_id=model_id)


def _current_model() -> str:
    return _Request.model_id or OWN_MODEL_ID


@app.exception_handler(ApiError)
def _api_error(error: ApiError) -> Response:
    return error_response(error)


@app.exception_handler(RequestError)
def _request_error(error: RequestError) -> Response:
    return error_response(ApiError(error.status, error.code, error.message))


def invalid_body(problems: list) -> ApiError:
    """A Pydantic validation failure of a body, as the public error codes name it."""
    kinds = {p.get("type") for p in problems}
    code = "unknown_field" if "extra_forbidden" in kinds else "invalid_type" if kinds & {"string_type", "list_type", "model_type"} else "invalid_request"
    first = problems[0] if problems else {}
    where = ".".join(str(part) for part in first.get("loc", ())) or "body"
    return ApiError(400, code, f"{quoted(where)[1:-1]}: {first.get('msg', 'invalid request')}")


MAX_BATCH_SIZE = max((c.serving.limits.max_batch_size for c in SERVED.values()), default=32)
_OPENAI_FIELDS = frozenset(OpenAIEmbeddingRequest.model_fields)


def check_openai_envelope(payload: object) -> None:
    """What Pydantic would refuse only after one error per item (a 4 MB list of numbers is ~2 M errors: gigabytes
    and tens of seconds), refused first in bounded work: an object of known fields, `input` one kind and no longer
    than any served model takes, each image item exactly {"image": ...}."""
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_request", "the request body must be a JSON object")
    unknown = [key for key in payload if key not in _OPENAI_FIELDS]
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s) {listed(unknown)}; expected {sorted(_OPENAI_FIELDS)}")
    items = payload.get("input")
    if not isinstance(items, list):
        items = [items]
    elif len(items) > MAX_BATCH_SIZE:
        raise ApiError(413, "batch_too_large", f"'input' holds {len(items)} items; at most {MAX_BATCH_SIZE} are accepted")
    if len({type(item) for item in items}) > 1:
        raise ApiError(400, "invalid_type", "'input' must hold one kind of item: strings, or {\"image\": base64} objects")
    for index, item in enumerate(items):
        if isinstance(item, dict) and set(item) != {"image"}:
            extra = [key for key in item if key != "image"]
            raise ApiError(400, "unknown_field" if extra else "invalid_request",
                           f"'input[{index}]' must be {{\"image\": base64}}" + (f"; unknown field(s) {listed(extra)}" if extra else ""))


def request_body() -> bytes:
    """The request's body as the client sent it, decoded once (API Gateway base64-encodes a body it passes as
    binary: isBase64Encoded), after its media type is checked."""
    event = app.current_event
    if media_type(event.headers.get("content-type") or event.headers.get("Content-Type")) != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the request as Content-Type: application/json")
    body = event.body or ""
    if not event.is_base64_encoded:
        return body.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):  # ValueError: characters outside ASCII
        raise ApiError(400, "invalid_base64", "the request body is marked base64-encoded but is not valid base64") from None


def check_size(body: bytes, max_bytes: int) -> None:
    if len(body) > max_bytes:
        raise request_too_large(len(body), max_bytes)


def check_image(data: bytes, where: str, config: ModelConfig) -> None:
    """What the endpoint would reject from the image's header alone, with its codes and messages
    (inference_code.preprocess.ImagePreprocessor.decode): no pixel is decoded here."""
    limits = config.serving.limits
    if not data:
        raise ApiError(400, "empty_image", f"'{where}': the image is empty")
    if len(data) > limits.max_image_bytes:
        raise ApiError(413, "image_too_large", f"'{where}': the image is {len(data)} bytes; at most {limits.max_image_bytes} bytes are accepted")
    header = read_header(data)
    if header.format is None:
        raise ApiError(400, "not_an_image", f"'{where}': the bytes are not an image in a supported format ({', '.join(ACCEPTED_FORMATS)})")
    if header.size is None:
        return  # an unusual header: the endpoint decides
    width, height = header.size
    if width < 1 or height < 1:  # Pillow's ImageFile refuses to identify it
        raise ApiError(400, "not_an_image", f"'{where}': the image has no pixels")
    if width * height > limits.max_image_pixels:
        raise ApiError(413, "image_too_many_pixels",
                       f"'{where}': the image is {width}x{height} pixels; at most {limits.max_image_pixels} pixels are accepted")
    if max(width, height) / min(width, height) > limits.max_aspect_ratio:
        raise ApiError(400, "image_aspect_ratio",
                       f"'{where}': the image is {width}x{height}; the aspect ratio may be at most {limits.max_aspect_ratio:g}:1")


def validated(payload: object, config: ModelConfig) -> ParsedRequest:
    """The serving container's own checks of a request (inference_code.contract.parse_payload: sizes, emptiness,
    types, base64, each image decoded once), then what the container would reject from each image's header."""
    parsed = parse_payload(payload, config.serving.limits)
    if parsed.kind == "image":
        for index, data in enumerate(parsed.items):
            check_image(data, f"images[{index}]" if parsed.batch else "image", config)
    return parsed


def body_space(payload: object) -> str | None:
    """Takes the body's `space` out of it (the container's contract has none), so the contract checks the rest."""
    if not isinstance(payload, dict):
        return None
    space = payload.pop("space", None)
    if space is not None and not isinstance(space, str):
        raise ApiError(400, "invalid_type", "space: Input should be a valid string")
    return space


@tracer.capture_method(capture_response=False)  # the response is the embedding: user-derived data stays out of X-Ray
def _embed(config: ModelConfig, body: bytes, space: str | None = None) -> tuple[bytes, dict]:
    _set_model(config.model_id)
    endpoint = Clients.endpoints().endpoint_for(config.model_id, space)
    started = _Request.started or time.monotonic()

    def remaining_ms() -> float:
        gateway_left = API_GATEWAY_BUDGET_MS - 1000 * (time.monotonic() - started)
        return min(gateway_left, app.lambda_context.get_remaining_time_in_millis()) if app.lambda_context else gateway_left

    result, attributes = invoke_endpoint(Clients.sagemaker_runtime, endpoint, body, remaining_ms)
    parsed = decode_attributes(attributes)
    _Request.space = parsed.get("space", "")
    if space is not None and _Request.space != space:  # never hand a pinned client vectors of another space
        logger.error("a pinned space was answered from another", extra={"pinned": space, "answered": _Request.space, "endpoint": endpoint})
        raise ApiError(502, "space_mismatch", f"the model answered in space {_Request.space or 'unknown'}, not the pinned {space}; retry later")
    return result, parsed


def _pinned_space(from_body: str | None) -> str | None:
    """The space a request pins (the X-Clip-Space header or the body's `space`), checked; None: the stable URL's."""
    from_header = app.current_event.get_header_value(SPACE_HEADER, case_sensitive=False)
    if from_header is not None and from_body is not None and from_header.strip() != from_body:
        raise ApiError(400, "space_conflict", f"the {SPACE_HEADER} header and the body's 'space' name different spaces; send one")
    space = from_body if from_body is not None else (from_header.strip() if from_header is not None else None)
    if space is not None and not SPACE_PATTERN.fullmatch(space):
        raise ApiError(400, "invalid_space", f"a space is 12 lowercase hex characters, as {SPACE_HEADER} reports it")
    return space


def _served_headers(attributes: dict) -> dict:
    headers = {"X-Clip-Model": attributes.get("model", ""), "X-Clip-Version": attributes.get("version", ""),
               "X-Clip-Truncated": attributes.get("truncated", "none")}
    if attributes.get("space"):  # every serving container names it; one built before spaces does not
        headers[SPACE_HEADER] = attributes["space"]
    return headers


def _register_model_route(config: ModelConfig) -> None:
    limits = config.serving.limits

    def embed(body: EmbeddingRequest = None):  # `body` documents the request (the spec); the contract's parser reads it
        _set_model(config.model_id)
        raw = request_body()
        check_size(raw, limits.max_request_bytes)
        payload = load_json(raw)
        named_space = body_space(payload)
        parsed = validated(payload, config)
        metrics.add_metric(name="BatchSize", unit=MetricUnit.Count, value=len(parsed.items))
        space = _pinned_space(named_space)
        result, attributes = _embed(config, encode_request(parsed), space)  # what was checked, never the raw body
        return Response(status_code=200, content_type="application/json", body=result.decode(), headers=_served_headers(attributes))

    embed.__name__ = f"embed_{config.route.replace('-', '_')}"
    app.post(f"/{config.route}", summary=f"{config.description}: embeddings", enable_validation=False, responses={
        200: {"description": "a unit-norm embedding (text, image) or a list of them (texts, images)", "headers": SERVED_HEADERS,
              "content": {"application/json": {"schema": {"oneOf": [
                  {"type": "array", "items": {"type": "number"}},
                  {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}]}}}},
        **ERROR_RESPONSES,
    })(embed)


for _config in SERVED.values():
    _register_model_route(_config)


@app.post("/v1/embeddings", summary="OpenAI-style embeddings (texts, or images as {\"image\": base64})",
          enable_validation=False,
          responses={200: {"description": "embeddings, and the embedding space they live in", "headers": SERVED_HEADERS,
                           "content": {"application/json": {"model": OpenAIEmbeddingList}}}, **ERROR_RESPONSES})
def openai_embeddings(body: OpenAIEmbeddingRequest = None):  # `body` documents the request (the spec); read below
    raw = request_body()
    check_size(raw, MAX_REQUEST_BYTES)  # the largest any served model takes: the model is named inside
    payload = parse_request_json(raw)
    check_openai_envelope(payload)
    try:
        request = OpenAIEmbeddingRequest.model_validate(payload)
    except ValidationError as error:
        raise invalid_body(error.errors(include_url=False, include_context=False, include_input=False)) from None
    config = BY_NAME.get(request.model)
    if config is None:
        raise ApiError(400, "unknown_model", f"unknown model {quoted(request.model)}; available: {sorted(SERVED)}")
    _set_model(config.model_id)
    check_size(raw, config.serving.limits.max_request_bytes)
    items = request.input if isinstance(request.input, list) else [request.input]
    if not items:
        raise ApiError(400, "empty_batch", "'input' must hold at least one item")
    texts = all(isinstance(item, str) for item in items)
    parsed = validated({"texts": items} if texts else {"images": [item.image for item in items]}, config)
    metrics.add_metric(name="BatchSize", unit=MetricUnit.Count, value=len(parsed.items))
    result, attributes = _embed(config, encode_request(parsed), _pinned_space(request.space))
    vectors = json.loads(result)
    answer = OpenAIEmbeddingList(data=[EmbeddingItem(index=i, embedding=v) for i, v in enumerate(vectors)], model=config.model_id,
                                 space=attributes.get("space", ""))
    return Response(status_code=200, content_type="application/json", body=answer.model_dump_json(), headers=_served_headers(attributes))


@app.not_found
def _not_found(error: Exception) -> Response:
    if app.current_event.http_method == "OPTIONS":
        # With CORS on, the resolver answers preflights itself; with CORS off there is nothing to say to a
        # caller without an API key (OPTIONS is not key-protected), least of all the list of routes.
        return error_response(ApiError(404, "not_found", "not found"))
    return error_response(ApiError(404, "not_found", f"no route {app.current_event.http_method} {app.current_event.path}; "
                                   f"use POST /{{{'|'.join(sorted(c.route for c in SERVED.values()))}}} or POST /v1/embeddings"))


@app.exception_handler(Exception)
def _unexpected(error: Exception) -> Response:
    # Our bug, not the client's: logged once, with where it happened but not the exception's message or
    # locals (they can hold the request's text or image).
    frames = [f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}" for frame in traceback.extract_tb(error.__traceback__)]
    logger.error("unexpected error", extra={"error_type": type(error).__name__, "frames": frames[-8:]})
    return error_response(ApiError(500, "internal_error", "internal error"))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False)  # responses carry embeddings: never into X-Ray
@metrics.log_metrics
def handler(event: dict, context) -> dict:
    started = time.monotonic()  # a local: app.resolve() clears the resolver's context before it returns
    _Request.model_id, _Request.started, _Request.space = None, started, ""
    response = app.resolve(event, context)
    # Every metric of the request carries the same dimension set, {model, service}, whatever path it took.
    metrics.add_dimension(name="model", value=_current_model())
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=1000 * (time.monotonic() - started))
    return response


def openapi_spec() -> dict:
    """The public contract, generated from the routes and models above (committed as openapi.json)."""
    spec = json.loads(app.get_openapi_json_schema(
        title="clip-embedding-api", version="1.0.0",
        summary="L2-normalised OpenAI CLIP text and image embeddings",
        description="Send JSON with Content-Type: application/json and your API key in x-api-key.",
    ))
    spec["components"]["securitySchemes"] = {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}
    pin = {"name": SPACE_HEADER, "in": "header", "required": False, "schema": SPACE_SCHEMA,
           "description": "pin an embedding space: answered by a version of that space while one is served (409/410 otherwise)"}
    for operation in (path.get("post") for path in spec["paths"].values()):
        if operation is not None:
            operation.setdefault("parameters", []).append(pin)
            operation["requestBody"]["required"] = True  # the routes read their bodies themselves, so their parameters are optional
    spec["security"] = [{"apiKey": []}]
    return spec
