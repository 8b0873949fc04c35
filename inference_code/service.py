"""One request in, one response out: the serving logic shared by the HTTP server and the toolkit handler."""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from clip_core.limits import ServingLimits
from inference_code.contract import (
    ParsedRequest,
    encode_attributes,
    encode_embeddings,
    encode_lines,
    is_jsonlines,
    parse_record,
    parse_request,
    split_records,
    with_item_index,
)
from inference_code.cost import CostModel
from inference_code.embedder import ClipEmbedder
from inference_code.encoders import DegenerateEmbeddingError
from inference_code.errors import RequestError

logger = logging.getLogger("inference_code")


@dataclass(frozen=True)
class ServiceResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def error_response(error: RequestError) -> ServiceResponse:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
    return ServiceResponse(error.status, json.dumps(error.to_body()).encode(), headers)


def deadline_exceeded() -> RequestError:
    return RequestError(
        503, "deadline_exceeded", "the request could not be answered in time (the server is busy); retry later", retry_after=1
    )


def check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise deadline_exceeded()


def log_internal_error(exc: BaseException) -> None:
    """One log record per internal error: the exception's type and where it was raised, never its
    message (it may quote the request)."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    logger.error("internal error handling a request: %s\n%s", type(exc).__name__, frames)


def internal_error_response(exc: BaseException) -> ServiceResponse:
    """Anything raised while handling a request that is not a client's mistake: a 500, logged once here
    (so the HTTP layer never logs it again)."""
    log_internal_error(exc)
    return error_response(RequestError(500, "internal_error", "internal error"))


@dataclass(frozen=True)
class PreparedRequest:
    """A request parsed and checked, not yet computed, with its estimated cost (inference_code/cost.py)."""

    cost_s: float
    request: ParsedRequest | None = None
    images: list | None = None  # opened (headers read and checked), not decoded
    lines: list[bytes] | None = None  # a JSON Lines body's records, parsed one by one when computed


class EmbeddingService:
    def __init__(self, embedder: ClipEmbedder, costs: CostModel | None = None):
        self.embedder = embedder
        self.manifest = embedder.manifest
        self.limits = ServingLimits.from_dict(self.manifest.limits)
        self.costs = costs or embedder.cost_model()

    def handle(self, body: bytes, content_type: str | None, deadline: float | None = None) -> ServiceResponse:
        prepared = self.prepare(body, content_type)
        return prepared if isinstance(prepared, ServiceResponse) else self.compute(prepared, deadline)

    def prepare(self, body: bytes, content_type: str | None) -> PreparedRequest | ServiceResponse:
        """Parse and check a request without decoding an image or running the model: cheap, so the
        server can do it before the request waits for a worker. A ServiceResponse when it is refused."""
        try:
            if is_jsonlines(content_type):
                lines = split_records(body, self.limits)
                return PreparedRequest(cost_s=self.costs.records(len(lines)), lines=lines)
            request = parse_request(body, content_type, self.limits)
            if request.kind == "text":
                return PreparedRequest(cost_s=self.costs.texts(request.items), request=request)
            images = self.open_images(request)
            return PreparedRequest(cost_s=self.costs.images(images), request=request, images=images)
        except RequestError as error:
            return error_response(error)
        except Exception as exc:  # noqa: BLE001 - our bug, not the client's
            return internal_error_response(exc)

    def compute(self, prepared: PreparedRequest, deadline: float | None = None, priority: float = 0.0) -> ServiceResponse:
        """Every client mistake is a RequestError with its 4xx; anything else is our bug: a 500
        (internal_error_response)."""
        if prepared.lines is not None:
            return self.handle_lines(prepared.lines, deadline, priority)
        request = prepared.request
        try:
            vectors, truncated = self.embed(request, deadline, prepared.images, priority)
        except RequestError as error:
            return error_response(error)
        except DegenerateEmbeddingError as exc:
            log_internal_error(exc)
            return error_response(RequestError(500, "model_error", "the model produced an embedding that cannot be normalised"))
        except Exception as exc:  # noqa: BLE001 - our bug, not the client's
            return internal_error_response(exc)
        attributes = encode_attributes(self.manifest.model_id, self.manifest.version, self.manifest.variant, truncated, space=self.manifest.space)
        return ServiceResponse(200, encode_embeddings(vectors, request.batch), {"X-Amzn-SageMaker-Custom-Attributes": attributes})

    def handle_lines(self, lines: list[bytes], deadline: float | None = None, priority: float = 0.0) -> ServiceResponse:
        """A JSON Lines body: each record answered on its line, in order, as it would be alone.

        Records are parsed and their images decoded one by one (each with its own limits and
        decode deadline); the good ones are then embedded together in batches of at most
        max_batch_size items. An item's embedding does not depend on the batch it is computed in
        (the embedder runs rows alone; tested bit for bit), so a record answers the same vector
        here as alone. A fault of the whole body (size, empty, the deadline) is one error.
        """
        try:
            answers, truncated = self._answer_records(lines, deadline, priority)
        except RequestError as error:
            return error_response(error)
        except Exception as exc:  # noqa: BLE001 - our bug, not the client's
            return internal_error_response(exc)
        attributes = encode_attributes(self.manifest.model_id, self.manifest.version, self.manifest.variant, truncated, space=self.manifest.space)
        headers = {"Content-Type": "application/jsonlines", "X-Amzn-SageMaker-Custom-Attributes": attributes}
        return ServiceResponse(200, encode_lines(answers), headers)

    def _answer_records(self, lines: list[bytes], deadline: float | None, priority: float = 0.0) -> tuple[list[bytes], tuple[bool, ...]]:
        answers: list[bytes | None] = [None] * len(lines)
        truncated = [False] * len(lines)
        pending: dict[str, list] = {"text": [], "image": []}  # (record index, request, inputs) awaiting the model

        def fail(index: int, error: RequestError) -> None:
            answers[index] = json.dumps(error.to_body()).encode()

        def flush(kind: str) -> None:
            group = pending[kind]
            pending[kind] = []
            if not group:
                return
            check_deadline(deadline)
            try:
                vectors, flags = self._embed_group(kind, [inputs for _, _, inputs in group], priority)
            except DegenerateEmbeddingError as exc:
                if len(group) == 1:
                    log_internal_error(exc)
                    fail(group[0][0], RequestError(500, "model_error", "the model produced an embedding that cannot be normalised"))
                    return
                for one in group:  # find the record(s) the model cannot embed; the others still succeed
                    pending[kind] = [one]
                    flush(kind)
                return
            start = 0
            for index, request, inputs in group:
                count = len(inputs)
                answers[index] = encode_embeddings(vectors[start : start + count], request.batch)
                truncated[index] = any(flags[start : start + count]) if flags else False
                start += count

        for index, line in enumerate(lines):
            try:
                request = parse_record(line, self.limits)
                if request.kind == "image":
                    check_deadline(deadline)
                    inputs = self.preprocess_images(request, deadline)
                else:
                    inputs = list(request.items)
            except RequestError as error:
                if error.code == "deadline_exceeded":
                    raise
                fail(index, error)
                continue
            queued = pending[request.kind]
            if queued and sum(len(entry[2]) for entry in queued) + len(inputs) > self.limits.max_batch_size:
                flush(request.kind)
            pending[request.kind].append((index, request, inputs))
        flush("text")
        flush("image")
        missing = [index for index, answer in enumerate(answers) if answer is None]
        if missing:
            raise RuntimeError(f"{len(missing)} records were not answered")
        return answers, tuple(truncated)

    def _embed_group(self, kind: str, inputs: list[list], priority: float = 0.0) -> tuple[np.ndarray, tuple[bool, ...]]:
        items = [item for record in inputs for item in record]
        if kind == "text":
            result = self.embedder.embed_texts(items, priority)
            return result.vectors, tuple(result.truncated)
        return self.embedder.embed_pixels(np.stack(items), priority), ()

    def embed(self, request: ParsedRequest, deadline: float | None = None, images: list | None = None, priority: float = 0.0):
        if request.kind == "text":
            check_deadline(deadline)
            result = self.embedder.embed_texts(list(request.items), priority)
            return result.vectors, result.truncated
        pixels = self.decode_images(request, images if images is not None else self.open_images(request), deadline)
        check_deadline(deadline)
        return self.embedder.embed_pixels(np.stack(pixels), priority), ()

    def preprocess_images(self, request: ParsedRequest, deadline: float | None = None) -> list[np.ndarray]:
        return self.decode_images(request, self.open_images(request), deadline)

    def open_images(self, request: ParsedRequest) -> list:
        """Check every image's header (size, JPEG scans) and their pixels together before decoding any."""
        preprocessor = self.embedder.preprocessor
        opened = []
        for index, data in enumerate(request.items):
            try:
                opened.append(preprocessor.open(data))
            except RequestError as error:
                raise _at_item(request, index, error) from None
        total = sum(image.size[0] * image.size[1] for image in opened)
        if total > self.limits.max_request_pixels:
            raise RequestError(
                413,
                "request_too_many_pixels",
                f"the request's images hold {total} pixels together; at most {self.limits.max_request_pixels} are "
                "decoded per request: send fewer or smaller images (CLIP sees 224x224 anyway)",
            )
        return opened

    def decode_images(self, request: ParsedRequest, opened: list, deadline: float | None = None) -> list[np.ndarray]:
        """Decode opened images one by one within the decode deadline and the request's deadline."""
        preprocessor = self.embedder.preprocessor
        decode_by = time.monotonic() + self.limits.image_decode_deadline_s
        pixels = []
        for index, image in enumerate(opened):
            check_deadline(deadline)
            if time.monotonic() > decode_by:
                raise RequestError(
                    413,
                    "image_too_complex",
                    f"decoding the request's images took more than {self.limits.image_decode_deadline_s:g} s; "
                    "send fewer or simpler images",
                )
            try:
                pixels.append(preprocessor.to_array(preprocessor.load(image)))
            except RequestError as error:
                raise _at_item(request, index, error) from None
        return pixels


def _at_item(request: ParsedRequest, index: int, error: RequestError) -> RequestError:
    return with_item_index(error, f"images[{index}]") if request.batch else error
