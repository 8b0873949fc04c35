"""The request/response contract of /invocations, as pure functions.

Request bodies (Content-Type application/json):
  {"text": "..."}            -> [float, ...]
  {"texts": ["...", ...]}    -> [[float, ...], ...]
  {"image": "<base64>"}      -> [float, ...]
  {"images": ["<base64>"]}   -> [[float, ...], ...]
A raw image body (Content-Type image/jpeg, image/png, image/webp, image/gif, image/bmp or
application/x-image) is the same as {"image": ...}. Every violation is a RequestError with a
stable code; nothing here touches the model.

JSON Lines (Content-Type application/jsonlines; SageMaker Batch Transform with SplitType=Line):
one record per line, each record one of the JSON bodies above, answered on its own line in the
same order with what that body alone would answer: its embedding(s), or its error object
{"error": {"code", "message"}} with the same limits and codes. A bad record never fails the others;
only faults of the whole body (too large, empty, not answered in time) get one error status.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from typing import Literal

from clip_core.limits import ServingLimits
from inference_code.errors import RequestError, bad_request, listed, too_large

JSON_CONTENT_TYPES = ("application/json",)
JSONLINES_CONTENT_TYPES = ("application/jsonlines", "application/jsonl", "application/x-jsonlines")
IMAGE_CONTENT_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "application/x-image")
REQUEST_KEYS = ("text", "texts", "image", "images")
_DATA_URI = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)
_ASCII_WHITESPACE = b" \t\n\r\v\f"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # only inside JSON strings: json.dumps escapes nothing else there


class JsonNumber:
    """A JSON number, kept as its text: no request field is numeric, so it is never converted."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


@dataclass(frozen=True)
class ParsedRequest:
    kind: Literal["text", "image"]
    items: tuple  # str for text, bytes for image
    batch: bool  # answer with an array of arrays


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_request(body: bytes, content_type: str | None, limits: ServingLimits) -> ParsedRequest:
    if len(body) > limits.max_request_bytes:
        raise request_too_large(len(body), limits)
    kind = media_type(content_type)
    if kind in IMAGE_CONTENT_TYPES:
        if not body:
            raise bad_request("empty_body", "the request body is empty")
        return ParsedRequest(kind="image", items=(body,), batch=False)
    if kind not in JSON_CONTENT_TYPES and kind != "":
        raise RequestError(
            415,
            "unsupported_media_type",
            f"Content-Type {kind!r} is not supported; send application/json, or a raw image as one of "
            + ", ".join(IMAGE_CONTENT_TYPES),
        )
    return parse_json_request(body, limits)


def is_jsonlines(content_type: str | None) -> bool:
    return media_type(content_type) in JSONLINES_CONTENT_TYPES


def split_records(body: bytes, limits: ServingLimits) -> list[bytes]:
    """The records of a JSON Lines body: one per line (LF or CRLF), a final newline optional.
    A blank line is a record (answered empty_body), so answers always line up with requests."""
    if len(body) > limits.max_jsonlines_bytes:
        raise jsonlines_too_large(len(body), limits)
    if not body.strip():
        raise bad_request("empty_body", "the request body is empty; send one JSON object per line")
    lines = body.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def jsonlines_too_large(size: int | None, limits: ServingLimits) -> RequestError:
    said = f"{size} bytes" if size is not None else f"more than {limits.max_jsonlines_bytes} bytes"
    return too_large(
        "request_too_large",
        f"the JSON Lines body is {said}; at most {limits.max_jsonlines_bytes} bytes are accepted "
        f"(set MaxPayloadInMB to at most {limits.max_jsonlines_bytes // (1024 * 1024)})",
    )


def parse_record(line: bytes, limits: ServingLimits) -> ParsedRequest:
    """One JSON Lines record: the same checks as a whole application/json body."""
    if len(line) > limits.max_request_bytes:
        raise request_too_large(len(line), limits)
    return parse_json_request(line, limits)


def parse_json_request(body: bytes, limits: ServingLimits) -> ParsedRequest:
    return parse_payload(load_json(body), limits)


def load_json(body: bytes) -> object:
    """A JSON body's value, with the contract's codes for a body that is not JSON (empty, too deep, malformed)."""
    if not body.strip():
        raise bad_request("empty_body", "the request body is empty; send a JSON object such as {\"text\": \"a photo of a dog\"}")
    try:
        # No field of ours is a number: numbers stay markers, so a 5,000-digit integer (valid JSON,
        # past Python's int-conversion limit) is reported as the wrong type, not as bad JSON.
        return json.loads(body, parse_int=JsonNumber, parse_float=JsonNumber, parse_constant=JsonNumber)
    except RecursionError:
        raise bad_request(
            "json_too_deep", "the request body nests JSON arrays or objects too deeply; a request is one object of strings or arrays of strings"
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise bad_request("malformed_json", "the request body is not valid JSON (UTF-8, UTF-16 or UTF-32)") from None


def parse_payload(payload: object, limits: ServingLimits) -> ParsedRequest:
    """A parsed JSON body checked against the contract: exactly one known field, its items valid (images decoded)."""
    if not isinstance(payload, dict):
        raise bad_request("invalid_request", "the request body must be a JSON object")
    unknown = sorted(set(payload) - set(REQUEST_KEYS))
    if unknown:
        raise bad_request("unknown_field", f"unknown field(s) {listed(unknown)}; expected exactly one of {list(REQUEST_KEYS)}")
    present = [key for key in REQUEST_KEYS if key in payload]
    if len(present) != 1:
        raise bad_request("invalid_request", f"expected exactly one of {list(REQUEST_KEYS)}, got {present or 'none'}")
    key = present[0]
    value = payload[key]
    if key in ("text", "image"):
        items = [value]
    else:
        if not isinstance(value, list):
            raise bad_request("invalid_type", f"'{key}' must be a JSON array")
        if not value:
            raise bad_request("empty_batch", f"'{key}' must hold at least one item")
        if len(value) > limits.max_batch_size:
            raise too_large("batch_too_large", f"'{key}' holds {len(value)} items; at most {limits.max_batch_size} are accepted")
        items = value
    batch = key in ("texts", "images")
    if key.startswith("text"):
        return ParsedRequest("text", tuple(check_text(t, _where(key, i, batch), limits) for i, t in enumerate(items)), batch)
    return ParsedRequest("image", tuple(decode_image(v, _where(key, i, batch), limits) for i, v in enumerate(items)), batch)


def encode_request(parsed: ParsedRequest) -> bytes:
    """The canonical JSON body of a parsed request, so that parse_json_request(encode_request(p)) == p: compact,
    UTF-8 (a lone surrogate, which UTF-8 cannot carry, stays the JSON escape it came as: the body is valid UTF-8 for
    anything between the Lambda and the container), images as padded standard base64."""
    if parsed.kind == "text":
        values = list(parsed.items)
    else:
        values = [binascii.b2a_base64(item, newline=False).decode("ascii") for item in parsed.items]
    body = {f"{parsed.kind}s": values} if parsed.batch else {parsed.kind: values[0]}
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text).encode("utf-8")


def _where(key: str, index: int, batch: bool) -> str:
    return f"{key}[{index}]" if batch else key


def check_text(value: object, where: str, limits: ServingLimits) -> str:
    if not isinstance(value, str):
        raise bad_request("invalid_type", f"'{where}' must be a string")
    if not value.strip():
        raise bad_request("empty_text", f"'{where}' is empty")
    if len(value) > limits.max_text_chars:
        raise too_large(
            "text_too_long",
            f"'{where}' has {len(value)} characters; at most {limits.max_text_chars} are accepted "
            "(texts past 77 tokens are truncated anyway)",
        )
    return value


def decode_image(value: object, where: str, limits: ServingLimits) -> bytes:
    if not isinstance(value, str):
        raise bad_request("invalid_type", f"'{where}' must be a base64 string")
    prefix = _DATA_URI.match(value)
    encoded = value[prefix.end() :] if prefix else value
    if not encoded.strip():
        raise bad_request("empty_image", f"'{where}' is empty")
    if len(encoded) // 4 * 3 > limits.max_image_bytes + 2:
        raise too_large("image_too_large", f"'{where}' decodes to more than {limits.max_image_bytes} bytes")
    try:
        return binascii.a2b_base64(encoded, strict_mode=True)
    except (binascii.Error, ValueError):
        pass  # line-wrapped base64 (as `base64` and many encoders write it) is common: strip and retry
    try:
        return binascii.a2b_base64(encoded.encode("ascii").translate(None, _ASCII_WHITESPACE), strict_mode=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise bad_request("invalid_base64", f"'{where}' is not valid base64") from None


def request_too_large(size: int, limits: ServingLimits) -> RequestError:
    return too_large(
        "request_too_large",
        f"the request body is {size} bytes; at most {limits.max_request_bytes} bytes are accepted "
        "(the SageMaker serverless payload limit is 4 MB; a base64 image must stay under about "
        f"{limits.max_image_bytes // 1_000_000} MB raw)",
    )


def with_item_index(error: RequestError, where: str) -> RequestError:
    return RequestError(error.status, error.code, f"'{where}': {error.message}")


def encode_embeddings(vectors, batch: bool) -> bytes:
    rows = vectors.tolist()
    return json.dumps(rows if batch else rows[0], separators=(",", ":")).encode()


def encode_lines(answers: list[bytes]) -> bytes:
    """One answer per record, each on its line (a JSON array or an error object), newline-terminated."""
    return b"".join(answer + b"\n" for answer in answers)


def encode_attributes(model_id: str, version: str, variant: str, truncated: tuple[bool, ...] = (), space: str = "") -> str:
    """Metadata for SageMaker's X-Amzn-SageMaker-Custom-Attributes header (visible ASCII, <= 1024 chars).
    `space` is the artifact's embedding space (inference_code.manifest.embedding_space): the API returns it as X-Clip-Space."""
    indices = ",".join(str(i) for i, flag in enumerate(truncated) if flag)
    named = f";space={space}" if space else ""
    return f"model={model_id};version={version};variant={variant}{named};truncated={indices or 'none'}"


def decode_attributes(attributes: str) -> dict[str, str]:
    """What encode_attributes wrote, as InvokeEndpoint's CustomAttributes returns it: {"model": ..., "space": ...}."""
    pairs = (item.split("=", 1) for item in attributes.split(";") if "=" in item)
    return {key.strip(): value.strip() for key, value in pairs}
