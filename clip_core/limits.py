"""Request limits, defined once: each model config may set them (configs/models/*.yaml, serving.limits),
packaging copies them into the artifact's manifest, and the serving container, the API Lambda and the
clients read them from here. A plain dataclass: the container imports it without pydantic."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class ServingLimits:
    max_request_bytes: int = 4_000_000  # SageMaker serverless payload limit is 4 MB
    max_image_bytes: int = 3_000_000  # a base64 image above ~3 MB raw cannot fit in 4 MB
    max_image_pixels: int = 40_000_000  # decompression bombs: decoded width*height
    max_aspect_ratio: float = 50.0  # bounds the resized image (shorter side -> 224)
    max_batch_size: int = 32
    max_text_chars: int = 10_000
    body_read_timeout_s: float = 30.0
    # Bounded decode work (inference_code.preprocess / service): a progressive JPEG re-decodes the
    # whole image per scan; all images of one request together; one request's decoding.
    max_jpeg_scans: int = 32
    max_request_pixels: int = 100_000_000
    image_decode_deadline_s: float = 10.0
    # Back-pressure and connections (inference_code.server.ServerSettings): requests admitted at
    # once (bodies held <= this x max_request_bytes; one more gets 503 with Retry-After), each
    # request's deadline from arrival (SageMaker cuts at 60 s), and the time to send the headers.
    max_pending_requests: int = 16
    request_deadline_s: float = 50.0
    header_timeout_s: float = 10.0
    # Threads one model run (one row) uses; the server runs cores / this many rows at once (0: all cores, one row at a
    # time). Rows run alone either way, so embeddings do not depend on it (inference_code/encoders.py). 1 suits ViT-B/32
    # (two rows at once beat one on two threads); ViT-L/14's rows are long enough that one row on all cores wins.
    intra_op_threads: int = 1
    # A JSON Lines body (Batch Transform's MultiRecord mini-batch, MaxPayloadInMB=6); each record
    # within it still obeys max_request_bytes and every per-request limit above.
    max_jsonlines_bytes: int = 6 * 1024 * 1024

    # pydantic reads this when a ModelConfig validates the limits of a YAML file: unknown keys are typos.
    __pydantic_config__ = {"extra": "forbid"}

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"serving limit {field.name} must be a number, got {value!r}")
            least = 0 if field.name == "intra_op_threads" else 1e-9
            if value < least:
                raise ValueError(f"serving limit {field.name} must be {'>= 0' if least == 0 else '> 0'}, got {value}")
        if self.request_deadline_s >= 60:
            raise ValueError(f"request_deadline_s must be below 60 s (SageMaker's invocation timeout), got {self.request_deadline_s}")

    @classmethod
    def from_dict(cls, limits: dict) -> "ServingLimits":
        """The limits a manifest records; keys this code does not know (a newer build's) are left out, missing ones default."""
        return cls(**{field.name: limits[field.name] for field in fields(cls) if field.name in limits})

    def as_dict(self) -> dict:
        return asdict(self)
