"""Hostile and malformed input at the API Lambda: every client mistake is a 4xx with the endpoint's code,
decided before an endpoint invocation is paid for; an internal error is a 500 logged once without user data."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import pytest
from PIL import Image

from tests.lambda_api.conftest import api_event, call
from tests.lambda_api.test_handler import expect_invoke

VECTOR = [0.6, 0.8]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


DEEP_CASES = [
    ('{"text": ' + "[" * 5_000 + "]" * 5_000 + "}", 400, "json_too_deep"),
    ("[" * 100_000 + "]" * 100_000, 400, "json_too_deep"),
    ('{"texts": ' + "[" * 100_000, 400, "json_too_deep"),  # unbalanced: json.loads would recurse before seeing the end
    ("{" * 5_000, 400, "malformed_json"),  # not even JSON: an object key is missing
    ('{"a":' * 5_000 + "1" + "}" * 5_000, 400, "json_too_deep"),
    ('{"text": ' + "1" * 5_000 + "}", 400, "invalid_type"),  # valid JSON; Python's int() refuses > 4,300 digits
    ('{"texts": ["a dog", ' + "9" * 100_000 + "]}", 400, "invalid_type"),
    ('{"txt": ' + "1" * 5_000 + "}", 400, "unknown_field"),
    ('{"text": -' + "1" * 5_000 + "}", 400, "invalid_type"),
    ('{"text": "a", "n": 1' + "0" * 5_000 + ".5e3}", 400, "unknown_field"),
    ('{"text": "a dog"' + " " * 10 + "]", 400, "malformed_json"),
]


@pytest.mark.parametrize("raw, status, code", DEEP_CASES, ids=[f"case{i}" for i in range(len(DEEP_CASES))])
def test_hostile_json_is_a_4xx_with_a_stable_code(api, raw, status, code):
    module, _, _ = api  # no endpoint response queued: an invocation would fail the test
    got, headers, body = call(module, api_event(raw=raw))
    assert (got, body["error"]["code"]) == (status, code), body
    assert headers["content-type"] == "application/json"


def test_hostile_json_through_the_openai_route(api):
    module, _, _ = api
    for raw, code in [('{"model": "b32", "input": ' + "[" * 50_000 + "]" * 50_000 + "}", "json_too_deep"),
                      ('{"model": "b32", "input": ' + "7" * 5_000 + "}", "invalid_type")]:
        status, _, body = call(module, api_event("/v1/embeddings", raw=raw))
        assert (status, body["error"]["code"]) == (400, code), body


def test_nesting_the_contract_allows_still_passes(api):
    module, runtime, _ = api
    expect_invoke(runtime, "clip-vit-b-32-v3", {"texts": ["a [dog]", "{not: json} [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]}, answer=[VECTOR, VECTOR])
    status, _, body = call(module, api_event(body={"texts": ["a [dog]", "{not: json} " + "[" * 36]}))
    assert status == 200 and body == [VECTOR, VECTOR]


@pytest.mark.parametrize("shape", ["[" * 1_999_000 + "]" * 1_999_000, "[[]" * 1_300_000 + "]" * 10, "[[]," * 990_000 + "[]]",
                                   "{\"a\":" * 700_000 + "1" + "}" * 700_000, "[" + "[[]]," * 790_000 + "[]]",
                                   '["' + "A" * 3_900_000 + '"]'])
def test_parsing_work_is_bounded_for_the_largest_bodies(shape):
    """About 4 MB (the largest body admitted) of any shape: our checks cost no more than Python's own
    json.loads of the same bytes (which Powertools ran before), deep or not."""
    import json
    import time

    from clip_lambdas.api.app import parse_request_json
    from clip_lambdas.api.errors import ApiError

    started = time.perf_counter()
    try:
        json.loads(shape)
    except (RecursionError, ValueError):
        pass
    baseline = time.perf_counter() - started
    started = time.perf_counter()
    try:
        parse_request_json(shape)
    except (ApiError, ValueError):
        pass
    assert time.perf_counter() - started < 0.2 + 2 * baseline, baseline


def test_an_internal_error_is_a_500_logged_once_without_user_data(api, monkeypatch, capsys):
    module, runtime, _ = api
    secret = "my private caption 4242"

    def broken(attributes):
        raise KeyError(f"something about {secret}")

    monkeypatch.setattr(module, "_served_headers", broken)
    expect_invoke(runtime, "clip-vit-b-32-v3", {"text": secret})
    log = io.StringIO()
    previous = module.logger.registered_handler.setStream(log)
    try:
        status, _, body = call(module, api_event(body={"text": secret}))
    finally:
        module.logger.registered_handler.setStream(previous)
    assert status == 500 and body["error"] == {"code": "internal_error", "message": "internal error"}
    out = capsys.readouterr().out + log.getvalue()
    logged = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"level"' in line]
    errors = [entry for entry in logged if entry["level"] == "ERROR"]
    assert len(errors) == 1 and errors[0]["error_type"] == "KeyError", errors
    assert secret not in out


# ---- images: what the endpoint would reject from the header, rejected in the Lambda with the same code ----

def _png_with_size(width: int, height: int) -> bytes:
    data = bytearray(_encode(Image.new("RGB", (8, 6), (10, 20, 30)), "PNG"))
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))  # Pillow checks the IHDR's CRC
    return bytes(data)


def _gif_with_size(width: int, height: int) -> bytes:
    data = bytearray(_encode(Image.new("P", (8, 6)), "GIF"))
    struct.pack_into("<HH", data, 6, width, height)
    return bytes(data)


def _bmp_with_size(width: int, height: int) -> bytes:
    data = bytearray(_encode(Image.new("RGB", (8, 6)), "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def _jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(_encode(Image.new("RGB", (8, 6)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _webp_lossless_with_size(width: int, height: int) -> bytes:
    data = bytearray(_encode(Image.new("RGBA", (8, 6)), "WEBP", lossless=True))
    assert data[12:16] == b"VP8L"
    bits = struct.unpack_from("<I", data, 21)[0] & ~((1 << 28) - 1)
    struct.pack_into("<I", data, 21, bits | (width - 1) | ((height - 1) << 14))
    return bytes(data)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


CRAFTED = {
    "hello": b"hello",
    "text file": b"a photo of a dog\n" * 10,
    "pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n",
    "tiff": _encode(Image.new("RGB", (8, 6)), "TIFF"),
    "riff not webp": b"RIFF\x10\x00\x00\x00WAVEfmt ",
    "png 8000x6000": _png_with_size(8000, 6000),
    "png 4000x10": _png_with_size(4000, 10),
    "png 0x10": _png_with_size(0, 10),
    "gif 9000x9000": _gif_with_size(9000, 9000),
    "gif 3000x20": _gif_with_size(3000, 20),
    "bmp 10000x5000": _bmp_with_size(10_000, 5_000),
    "bmp 10000x-5000 (top-down)": _bmp_with_size(10_000, -5_000),
    "bmp 6000x10": _bmp_with_size(6_000, 10),
    "jpeg 9000x8000": _jpeg_with_size(9_000, 8_000),
    "jpeg 2000x20": _jpeg_with_size(2_000, 20),
    "webp 16000x16000": _webp_lossless_with_size(16_000, 16_000),
    "webp 5000x60": _webp_lossless_with_size(5_000, 60),
}


def container_decision(data: bytes, config) -> str:
    """What the endpoint's container decides for these bytes: 'ok' or its error code."""
    from inference_code.errors import RequestError
    from inference_code.preprocess import ImagePreprocessor

    limits = config.serving.limits
    preprocessor = ImagePreprocessor(limits=limits)
    try:
        preprocessor(data)
    except RequestError as error:
        return error.code
    return "ok"


def lambda_decision(data: bytes, config) -> str:
    from clip_lambdas.api.app import check_image
    from clip_lambdas.api.errors import ApiError

    try:
        check_image(data, "image", config)
    except ApiError as error:
        return error.code
    return "ok"


def corpus(probe_images) -> dict[str, bytes]:
    images = {f"probe {p.name}": p.data for p in probe_images}
    base = next(p for p in probe_images if p.name.startswith("photo-")).data if any(p.name.startswith("photo-") for p in probe_images) else probe_images[0].data
    photo = Image.open(io.BytesIO(base))
    photo.load()
    for fmt, kwargs in [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}), ("GIF", {}), ("BMP", {}), ("WEBP", {}),
                        ("WEBP", {"lossless": True})]:
        for mode in ("RGB", "L", "RGBA", "P", "1", "CMYK"):
            try:
                images[f"{fmt} {mode} {kwargs}"] = _encode(photo.convert(mode), fmt, **kwargs)
            except (OSError, ValueError, KeyError):
                pass  # a mode the format cannot hold
    images["truncated jpeg"] = images["JPEG RGB {}"][:200]
    images["truncated png"] = images["PNG RGB {}"][:40]
    return {**images, **CRAFTED}


def test_lambda_rejects_only_what_the_endpoint_rejects_and_with_its_code(b32_config, probe_images):
    decisions = {name: (lambda_decision(data, b32_config), container_decision(data, b32_config)) for name, data in corpus(probe_images).items()}
    disagreements = {name: pair for name, pair in decisions.items() if pair[0] != "ok" and pair[0] != pair[1]}
    assert not disagreements, disagreements
    rejected_here = {name: pair[0] for name, pair in decisions.items() if pair[0] != "ok"}
    # everything crafted is decided in the Lambda, so the endpoint is never paid for it
    assert set(CRAFTED) <= set(rejected_here), {name: decisions[name] for name in CRAFTED if name not in rejected_here}
    assert {"not_an_image", "image_too_many_pixels", "image_aspect_ratio"} <= set(rejected_here.values())


def test_header_sizes_are_the_sizes_pillow_reads(probe_images):
    from clip_lambdas.api.image_header import read_header

    checked = 0
    for name, data in corpus(probe_images).items():
        header = read_header(data)
        if header.size is None:
            continue
        try:
            image = Image.open(io.BytesIO(data))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            continue  # Pillow refuses it outright (the agreement test covers what the endpoint then says)
        assert header.format == image.format and header.size == image.size, name
        checked += 1
    assert checked >= 40


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_hostile_images_never_reach_the_endpoint(api, name):
    module, _, _ = api
    status, _, body = call(module, api_event(body={"images": [b64(CRAFTED[name])]}))
    assert 400 <= status < 500 and body["error"]["code"] in ("not_an_image", "image_too_many_pixels", "image_aspect_ratio"), body
    assert "images[0]" in body["error"]["message"]


def test_the_issue_example_is_not_an_image(api):
    module, _, _ = api
    status, _, body = call(module, api_event(body={"image": b64(b"hello")}))
    assert (status, body["error"]["code"]) == (400, "not_an_image")
    status, _, body = call(module, api_event("/v1/embeddings", {"model": "b32", "input": [{"image": b64(b"hello")}]}))
    assert (status, body["error"]["code"]) == (400, "not_an_image")


def test_a_real_image_still_reaches_the_endpoint(api, probe_images):
    module, runtime, _ = api
    image = b64(probe_images[0].data)
    expect_invoke(runtime, "clip-vit-b-32-v3", {"image": image})
    status, _, body = call(module, api_event(body={"image": image}))
    assert status == 200 and body == VECTOR


@pytest.mark.parametrize("raw, status, code", DEEP_CASES, ids=[f"case{i}" for i in range(len(DEEP_CASES))])
def test_the_container_answers_the_same_code_for_the_same_body(raw, status, code):
    """One contract: a body the Lambda refuses is refused by the endpoint's parser with the same status and code."""
    from clip_core.limits import ServingLimits
    from inference_code.contract import parse_request
    from inference_code.errors import RequestError

    with pytest.raises(RequestError) as refused:
        parse_request(raw.encode(), "application/json", ServingLimits())
    assert (refused.value.status, refused.value.code) == (status, code)
