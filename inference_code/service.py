"""One request in, one response out: the serving logic shared by the HTTP server and the toolkit handler."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np

from inference_code.contract import (
    EmbeddingRequest,
    RequestLimits,
    encode_attributes,
    encode_embeddings,
    parse_request,
    with_item_index,
)
from inference_code.embedder import ClipEmbedder
from inference_code.encoders import DegenerateEmbeddingError
from inference_code.errors import RequestError

logger = logging.getLogger("inference_code")


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def error_response(error: RequestError) -> Response:
    return Response(error.status, json.dumps(error.to_body()).encode())


class EmbeddingService:
    def __init__(self, embedder: ClipEmbedder):
        self.embedder = embedder
        self.manifest = embedder.manifest
        self.limits = RequestLimits.from_dict(self.manifest.limits)

    def handle(self, body: bytes, content_type: str | None) -> Response:
        try:
            request = parse_request(body, content_type, self.limits)
            vectors, truncated = self.embed(request)
        except RequestError as error:
            return error_response(error)
        except DegenerateEmbeddingError:
            logger.exception("degenerate embedding")
            return error_response(RequestError(500, "model_error", "the model produced an embedding that cannot be normalised"))
        attributes = encode_attributes(self.manifest.model_id, self.manifest.version, self.manifest.variant, truncated)
        return Response(200, encode_embeddings(vectors, request.batch), {"X-Amzn-SageMaker-Custom-Attributes": attributes})

    def embed(self, request: EmbeddingRequest):
        if request.kind == "text":
            result = self.embedder.embed_texts(list(request.items))
            return result.vectors, result.truncated
        pixels = []
        for index, data in enumerate(request.items):
            try:
                pixels.append(self.embedder.preprocessor(data))
            except RequestError as error:
                raise (with_item_index(error, f"images[{index}]") if request.batch else error) from None
        return self.embedder.embed_pixels(np.stack(pixels)), ()
