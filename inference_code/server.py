"""SageMaker bring-your-own-container HTTP contract: GET /ping and POST /invocations.

The model is loaded once at start. Requests are computed on a pool of worker threads (one per
core by default, `workers`), so /ping answers while requests are being embedded and the event
loop never blocks. Bodies are read with a size cap and a read timeout, so an oversized or stalled
upload gets a 413 or 408 instead of exhausting memory.

Back-pressure (issue 13): at most `max_pending_requests` requests are admitted at once (reading
their body, waiting for a worker, or being embedded); one more gets 503 `overloaded` with
Retry-After before its body is read, so memory is bounded by that count times the body limit.
Each request has a deadline (`request_deadline_s`, below SageMaker's 60 s invocation timeout)
from its arrival: past it, a request still waiting gets 503 `deadline_exceeded`; a request whose
client has disconnected while it waited is dropped without being computed.

Scheduling: a request is parsed and checked (no decode, no model) before it waits, which gives
its estimated cost (inference_code/cost.py); waiting requests get a worker cheapest-first with
aging (inference_code/scheduling.py), so a client sending the most work the limits admit delays
the others by little.

/ping answers 200 while the server can make progress, saturated or not (the body says
`"status": "saturated"` when new requests are being refused), and 503 when it cannot: when a
worker has been on one request for longer than the deadline allows (stuck). SageMaker treats
failing pings as an unhealthy container and replaces it; a 503 on mere saturation would make it
kill busy but healthy containers and lose their queued work, so saturation is answered on
/invocations (503 with Retry-After) and only a stuck worker fails the health check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response as HttpResponse
from starlette.routing import Route

from clip_core.limits import ServingLimits
from inference_code.contract import is_jsonlines, jsonlines_too_large, request_too_large
from inference_code.embedder import ClipEmbedder
from inference_code.errors import RequestError
from inference_code.manifest import ArtifactIntegrityError
from inference_code.scheduling import WorkerSlots, request_priority
from inference_code.service import EmbeddingService, ServiceResponse, deadline_exceeded, error_response

logger = logging.getLogger("inference_code.server")
DEFAULT_MODEL_DIR = "/opt/ml/model"
LINGERING_CLOSE = "clip.lingering_close"  # ASGI scope extension set by http_protocol: closing early is safe


@dataclass(frozen=True)
class ServerSettings:
    """Connection and queue settings; those that are serving limits default to ServingLimits' values, and the
    manifest's limits set them (from_limits)."""

    max_pending_requests: int = ServingLimits.max_pending_requests  # bodies held in memory <= this x max_request_bytes
    request_deadline_s: float = ServingLimits.request_deadline_s  # from arrival to the start of the answer
    # a JSON Lines body (Batch Transform mini-batch): its job sets InvocationsTimeoutInSeconds=3600
    batch_request_deadline_s: float = 3000.0
    body_read_timeout_s: float = ServingLimits.body_read_timeout_s
    header_timeout_s: float = ServingLimits.header_timeout_s
    keep_alive_s: float = 60.0
    linger_s: float = 5.0  # draining an unread body after an early 413/503
    linger_max_bytes: int = 16_000_000
    retry_after_s: int = 1
    workers: int = 0  # requests computed at once; 0: the embedder's parallelism (one per core by default)
    cost_weight: float = 8.0  # how long cheap requests may go before an expensive one (inference_code/scheduling.py)

    @classmethod
    def from_limits(cls, limits: dict, **overrides) -> "ServerSettings":
        values = {f.name: limits[f.name] for f in fields(cls) if f.name in limits}
        return cls(**{**values, **overrides})


class BodyTooLarge(Exception):
    def __init__(self, received: int):
        self.received = received


async def read_body(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(int(declared))

    async def collect() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise BodyTooLarge(size)
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), timeout=timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(408, "request_timeout", f"the request body was not received within {timeout_s:g} s") from None


def body_too_large_error(exc: BodyTooLarge, request: Request, limits: ServingLimits) -> RequestError:
    declared = request.headers.get("content-length", "")
    if is_jsonlines(request.headers.get("content-type")):
        return jsonlines_too_large(int(declared) if declared.isdigit() else None, limits)
    if declared.isdigit():
        return request_too_large(int(declared), limits)
    # chunked: the size is unknown; say what is known rather than invent a size
    return RequestError(
        413,
        "request_too_large",
        f"the request body is more than {limits.max_request_bytes} bytes (at least {exc.received} were received); "
        f"at most {limits.max_request_bytes} bytes are accepted (the SageMaker serverless payload limit is 4 MB)",
    )


def to_http(response: ServiceResponse, close: bool = False) -> HttpResponse:
    headers = {**response.headers, **({"Connection": "close"} if close else {})}
    return HttpResponse(response.body, status_code=response.status, headers=headers, media_type="application/json")


class _Admission:
    """Counts admitted requests and tracks the workers, for back-pressure and /ping."""

    def __init__(self, settings: ServerSettings, workers: int):
        self.settings = settings
        self.pending = 0
        self.workers = WorkerSlots(workers)
        self.running: dict[int, tuple[float, float]] = {}  # request -> (monotonic start, how long it may take)
        self.dropped = 0  # computed never: client gone or deadline passed while waiting

    def saturated(self) -> bool:
        return self.pending >= self.settings.max_pending_requests

    def stuck(self) -> bool:
        """A worker has been on one request for longer than its deadline allows: something is wrong."""
        now = time.monotonic()
        return any(now - started > limit for started, limit in list(self.running.values()))


async def _wait_for_worker(admission: _Admission, request: Request, deadline: float, priority: float) -> str:
    """Acquire a worker: 'acquired', 'gone' (the client disconnected) or 'late' (deadline)."""
    acquire = asyncio.ensure_future(admission.workers.acquire(priority))
    # the body has been read: the next receive() returns only when the client disconnects
    watch = asyncio.ensure_future(request.receive())

    def disconnected() -> bool:
        return watch.done() and not watch.cancelled() and watch.result().get("type") == "http.disconnect"

    async def give_back() -> None:
        acquire.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await acquire
        if acquire.done() and not acquire.cancelled():
            admission.workers.release()  # acquired while being cancelled

    try:
        done, _ = await asyncio.wait({acquire, watch}, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the handler itself cancelled: never leave a worker to a request nobody will run
        await asyncio.shield(give_back())
        raise
    finally:
        watch.cancel()
    if acquire in done:
        if disconnected():
            admission.workers.release()
            return "gone"
        return "acquired"
    await give_back()
    return "gone" if disconnected() else "late"


def create_app(service: EmbeddingService, settings: ServerSettings | None = None) -> Starlette:
    settings = settings or ServerSettings.from_limits(service.manifest.limits)
    workers = settings.workers or service.embedder.parallelism.workers
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inference")
    parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parse")  # off the event loop, before the queue
    limits = service.limits
    state: dict[str, _Admission] = {}

    def admission() -> _Admission:
        if "admission" not in state:  # created on the server's event loop
            state["admission"] = _Admission(settings, workers)
        return state["admission"]

    def early(request: Request, error: RequestError) -> HttpResponse:
        """An answer before the body was read. Under our protocol the connection closes and
        lingers to drain the rest (bounded, see http_protocol); under plain uvicorn it stays open
        and h11 discards the rest, since closing there would reset the connection."""
        return to_http(error_response(error), close=LINGERING_CLOSE in request.scope.get("extensions", {}))

    async def ping(_: Request) -> HttpResponse:
        gate = admission()
        status, code = ("unhealthy", 503) if gate.stuck() else ("saturated", 200) if gate.saturated() else ("healthy", 200)
        body = {"status": status, "model": service.manifest.model_id, "version": service.manifest.version}
        if status != "healthy":
            body.update(pending=gate.pending, capacity=settings.max_pending_requests)
        return HttpResponse(json.dumps(body), status_code=code, media_type="application/json")

    async def invocations(request: Request) -> HttpResponse:
        gate = admission()
        arrived = time.monotonic()
        lines = is_jsonlines(request.headers.get("content-type"))
        allowed_s = settings.batch_request_deadline_s if lines else settings.request_deadline_s
        deadline = arrived + allowed_s
        if gate.saturated():
            return early(request, 
                RequestError(
                    503,
                    "overloaded",
                    f"the server is busy ({settings.max_pending_requests} requests in progress); retry after {settings.retry_after_s} s",
                    retry_after=settings.retry_after_s,
                )
            )
        gate.pending += 1
        try:
            try:
                max_bytes = limits.max_jsonlines_bytes if lines else limits.max_request_bytes
                body = await read_body(request, max_bytes, min(settings.body_read_timeout_s, deadline - arrived))
            except BodyTooLarge as exc:
                return early(request, body_too_large_error(exc, request, limits))
            except RequestError as error:
                return early(request, error)
            except ClientDisconnect:
                gate.dropped += 1
                return HttpResponse(status_code=400)
            loop = asyncio.get_running_loop()
            prepared = await loop.run_in_executor(parser, service.prepare, body, request.headers.get("content-type"))
            if isinstance(prepared, ServiceResponse):
                return to_http(prepared)
            del body  # the prepared request holds what is needed
            # an expensive request may be passed over for at most half its time: it still runs in time
            priority = request_priority(arrived, prepared.cost_s, settings.cost_weight, allowed_s / 2)
            outcome = await _wait_for_worker(gate, request, deadline, priority)
            if outcome != "acquired":
                gate.dropped += 1
                if outcome == "gone":
                    logger.info("dropped a request whose client disconnected before it was computed")
                    return HttpResponse(status_code=400)  # nobody reads it
                return to_http(error_response(deadline_exceeded()))
            key = id(prepared)
            try:
                gate.running[key] = (time.monotonic(), allowed_s)
                response = await loop.run_in_executor(executor, service.compute, prepared, deadline, priority)
            finally:
                del gate.running[key]
                gate.workers.release()
            return to_http(response)
        finally:
            gate.pending -= 1

    async def not_found(request: Request, exc: Exception) -> HttpResponse:
        error = RequestError(404, "not_found", f"no route {request.method} {request.url.path}; use POST /invocations or GET /ping")
        return to_http(error_response(error))

    async def method_not_allowed(request: Request, exc: Exception) -> HttpResponse:
        error = RequestError(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}")
        return to_http(error_response(error))

    async def internal_error(request: Request, exc: Exception) -> HttpResponse:
        logger.error("unhandled %s on %s", type(exc).__name__, request.url.path)
        return to_http(error_response(RequestError(500, "internal_error", "internal error")))

    app = Starlette(
        routes=[Route("/ping", ping, methods=["GET"]), Route("/invocations", invocations, methods=["POST"])],
        exception_handlers={404: not_found, 405: method_not_allowed, 500: internal_error},
        lifespan=_shutdown_executors(executor, parser),
    )
    app.state.settings = settings
    app.state.admission = admission
    return app


def _shutdown_executors(*executors: ThreadPoolExecutor):
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        for executor in executors:
            executor.shutdown(wait=False)

    return lifespan


def uvicorn_config(app: Starlette, host: str, port: int, settings: ServerSettings, **kwargs):
    """uvicorn's configuration with our h11 protocol (header timeout, lingering close)."""
    import uvicorn

    from inference_code.http_protocol import protocol_class

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_class(settings.header_timeout_s, settings.linger_s, settings.linger_max_bytes),
        timeout_keep_alive=int(settings.keep_alive_s),
        **kwargs,
    )


def load_service(model_dir: Path | str) -> EmbeddingService:
    embedder = ClipEmbedder(model_dir)
    embedder.warm_up()
    return EmbeddingService(embedder)


def serve(model_dir: Path | str = DEFAULT_MODEL_DIR, host: str = "0.0.0.0", port: int = 8080) -> None:
    import uvicorn

    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"))
    try:
        service = load_service(model_dir)
    except ArtifactIntegrityError as error:  # SageMaker marks the endpoint Failed: the promotion rolls back
        logger.error("refusing to serve: %s", error)
        raise SystemExit(3) from None
    logger.info("serving %s version %s (%s) on %s:%d", service.manifest.model_id, service.manifest.version, service.manifest.variant, host, port)
    settings = ServerSettings.from_limits(service.manifest.limits)
    uvicorn.Server(uvicorn_config(create_app(service, settings), host, port, settings, log_level="warning")).run()
