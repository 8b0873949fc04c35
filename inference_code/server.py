"""SageMaker bring-your-own-container HTTP contract: GET /ping and POST /invocations.

The model is loaded once at start. Inference runs on one worker thread, so /ping answers while a
request is being embedded and the event loop never blocks. Bodies are read with a size cap and a
read timeout, so an oversized or stalled upload gets a 413 or 408 instead of exhausting memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response as HttpResponse
from starlette.routing import Route

from inference_code.contract import request_too_large
from inference_code.embedder import ClipEmbedder
from inference_code.errors import RequestError
from inference_code.service import EmbeddingService, Response, error_response

logger = logging.getLogger("inference_code.server")
DEFAULT_MODEL_DIR = "/opt/ml/model"


async def read_body(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(413, "request_too_large", "")

    async def collect() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise RequestError(413, "request_too_large", "")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), timeout=timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(408, "request_timeout", f"the request body was not received within {timeout_s:g} s") from None


def to_http(response: Response) -> HttpResponse:
    return HttpResponse(response.body, status_code=response.status, headers=response.headers, media_type="application/json")


def create_app(service: EmbeddingService) -> Starlette:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    limits = service.limits
    read_timeout = float(service.manifest.limits.get("body_read_timeout_s", 30.0))

    async def ping(_: Request) -> HttpResponse:
        return HttpResponse(
            json.dumps({"status": "healthy", "model": service.manifest.model_id, "version": service.manifest.version}),
            media_type="application/json",
        )

    async def invocations(request: Request) -> HttpResponse:
        try:
            body = await read_body(request, limits.max_request_bytes, read_timeout)
        except RequestError as error:
            if error.code == "request_too_large":
                declared = request.headers.get("content-length", "")
                error = request_too_large(int(declared) if declared.isdigit() else limits.max_request_bytes + 1, limits)
            return to_http(error_response(error))
        except ClientDisconnect:
            return HttpResponse(status_code=400)
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(executor, service.handle, body, request.headers.get("content-type"))
        return to_http(response)

    async def not_found(request: Request, exc: Exception) -> HttpResponse:
        error = RequestError(404, "not_found", f"no route {request.method} {request.url.path}; use POST /invocations or GET /ping")
        return to_http(error_response(error))

    async def method_not_allowed(request: Request, exc: Exception) -> HttpResponse:
        error = RequestError(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}")
        return to_http(error_response(error))

    async def internal_error(request: Request, exc: Exception) -> HttpResponse:
        logger.exception("unhandled error on %s", request.url.path, exc_info=exc)
        return to_http(error_response(RequestError(500, "internal_error", "internal error")))

    return Starlette(
        routes=[Route("/ping", ping, methods=["GET"]), Route("/invocations", invocations, methods=["POST"])],
        exception_handlers={404: not_found, 405: method_not_allowed, 500: internal_error},
        lifespan=_shutdown_executor(executor),
    )


def _shutdown_executor(executor: ThreadPoolExecutor):
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        executor.shutdown(wait=False)

    return lifespan


def load_service(model_dir: Path | str) -> EmbeddingService:
    embedder = ClipEmbedder(model_dir)
    embedder.warm_up()
    return EmbeddingService(embedder)


def serve(model_dir: Path | str = DEFAULT_MODEL_DIR, host: str = "0.0.0.0", port: int = 8080) -> None:
    import uvicorn

    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"))
    service = load_service(model_dir)
    logger.info("serving %s version %s (%s) on %s:%d", service.manifest.model_id, service.manifest.version, service.manifest.variant, host, port)
    uvicorn.run(create_app(service), host=host, port=port, workers=1, log_level="warning", timeout_keep_alive=60)
