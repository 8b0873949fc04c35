"""The API Lambda reads each request once: the body decoded once (base64 when API Gateway sent it so), the serving
contract's parser run once (each image base64-decoded once), and the endpoint sent exactly what was checked."""

from __future__ import annotations

import base64
import json

import pytest

from tests.lambda_api.conftest import api_event, call
from tests.lambda_api.test_handler import PNG, VECTOR, expect_invoke

ENDPOINT = "clip-vit-b-32-v3"


def base64_event(path: str, raw: bytes) -> dict:
    """As API Gateway sends a body it treats as binary."""
    event = api_event(path, raw=base64.b64encode(raw).decode())
    event["isBase64Encoded"] = True
    return event


@pytest.mark.parametrize("path, raw, forwarded, answer", [
    ("/b32", '{"text": "caf\u00e9 \U0001f415"}'.encode(), {"text": "caf\u00e9 \U0001f415"}, VECTOR),
    ("/b32", json.dumps({"images": [PNG, PNG]}).encode(), {"images": [PNG, PNG]}, [VECTOR, VECTOR]),
    ("/v1/embeddings", json.dumps({"model": "b32", "input": [{"image": PNG}]}).encode(), {"images": [PNG]}, [VECTOR]),
])
def test_a_base64_encoded_event_reaches_the_endpoint_as_the_decoded_validated_json(api, path, raw, forwarded, answer):
    module, runtime, _ = api
    expect_invoke(runtime, ENDPOINT, forwarded, answer=answer)
    status, _, body = call(module, base64_event(path, raw))
    assert status == 200, body


def test_a_base64_encoded_event_is_validated_after_decoding(api):
    module, _, _ = api  # no endpoint answer queued: an invocation would fail the test
    status, _, body = call(module, base64_event("/b32", b'{"text": ""}'))
    assert (status, body["error"]["code"]) == (400, "empty_text")
    status, _, body = call(module, base64_event("/b32", b'{"image": "' + b"QUFB" * 1_100_000 + b'"}'))
    assert (status, body["error"]["code"]) == (413, "request_too_large")


def test_what_is_forwarded_is_the_canonical_encoding_of_what_was_validated(api, b32_config):
    """Spacing, escapes, a data URI and line-wrapped base64 are the client's spelling: the endpoint gets the contract's."""
    from inference_code.contract import encode_request, parse_json_request

    module, runtime, _ = api
    images = '[ "data:image/png;base64,' + PNG + '", "' + PNG[:8] + '\\n' + PNG[8:] + '" ]'
    raw = '{ "images" :\n  ' + images + ' ,\t"space": null }'
    canonical = encode_request(parse_json_request(('{"images": ' + images + '}').encode(), b32_config.serving.limits))
    assert canonical == ('{"images":["' + PNG + '","' + PNG + '"]}').encode()
    expect_invoke(runtime, ENDPOINT, {"images": [PNG, PNG]}, answer=[VECTOR, VECTOR])
    status, _, body = call(module, api_event(raw=raw))
    assert status == 200, body
    expect_invoke(runtime, ENDPOINT, {"text": "a \"quoted\" caf\u00e9"})
    status, _, _ = call(module, api_event(raw='{"text":   "a \\"quoted\\" caf\\u00e9"}'))
    assert status == 200


@pytest.mark.parametrize("path, request_body, images", [
    ("/b32", {"images": [PNG, PNG, PNG]}, 3),
    ("/b32", {"image": PNG}, 1),
    ("/v1/embeddings", {"model": "b32", "input": [{"image": PNG}, {"image": PNG}]}, 2),
])
def test_each_image_is_base64_decoded_once_per_request(api, monkeypatch, path, request_body, images):
    import inference_code.contract as contract

    module, runtime, _ = api
    decoded = []
    decode_image = contract.decode_image

    def counting(value, where, limits):
        decoded.append(where)
        return decode_image(value, where, limits)

    monkeypatch.setattr(contract, "decode_image", counting)
    forwarded = {"images": [PNG] * images} if path == "/v1/embeddings" or "images" in request_body else request_body
    answer = [VECTOR] * images if "images" in forwarded else VECTOR
    expect_invoke(runtime, ENDPOINT, forwarded, answer=answer)
    status, _, body = call(module, api_event(path, request_body))
    assert status == 200, body
    assert len(decoded) == images and len(set(decoded)) == images, decoded


@pytest.mark.parametrize("raw", ["", "   ", "[1]", '{"text": null}', '{"text": "a", "image": null}', '{"texts": [' + "[" * 40 + "]" * 40 + "]}",
                                 '{"texts": [' + '"a",' * 40 + "5]}", '{"images": ["' + PNG + '", "%%"]}', '{"text": "a", "n": 1}'])
def test_the_lambda_refuses_a_body_as_the_container_does(api, b32_config, raw):
    """The container's parser decides: the same status and code, and the endpoint is never called for it."""
    from inference_code.contract import parse_request
    from inference_code.errors import RequestError

    module, _, _ = api
    with pytest.raises(RequestError) as refused:
        parse_request(raw.encode(), "application/json", b32_config.serving.limits)
    status, _, body = call(module, api_event(raw=raw))
    assert (status, body["error"]["code"]) == (refused.value.status, refused.value.code)


def test_a_body_marked_base64_that_is_not_is_a_clear_400(api):
    module, _, _ = api  # nothing forwarded: no endpoint answer is queued
    for body in ("eyJ0ZXh0IjoiYSJ9x", "eyJ0ZXh0IjoiU0VDUkVUIn0=x", "eyJ0ZXh0IjoiU0VDUkVUIn0\u00e9"):
        event = api_event("/b32", raw=body)
        event["isBase64Encoded"] = True
        status, _, answer = call(module, event)
        assert (status, answer["error"]["code"]) == (400, "invalid_base64"), body


@pytest.mark.parametrize("payload, status, code", [
    ({"model": "b32", "input": [1] * 200_000}, 413, "batch_too_large"),
    ({"model": "b32", "input": ["a", {"image": PNG}]}, 400, "invalid_type"),
    ({"model": "b32", "input": [{"image": PNG, **{f"k{i}": 1 for i in range(100_000)}}]}, 400, "unknown_field"),
    ({"model": "b32", "input": "a", **{f"k{i}": 1 for i in range(100_000)}}, 400, "unknown_field"),
    ({"model": "b32", "input": "a", "\ud800": 1}, 400, "unknown_field"),
])
def test_openai_envelopes_that_would_cost_an_error_per_item_are_refused_first(api, payload, status, code):
    """Pydantic collects one error per item of each list branch of the input union: ~2 M items took gigabytes and
    tens of seconds before an answer. The envelope is checked first, in work bounded by the batch limit."""
    import tracemalloc

    module, _, _ = api
    raw = json.dumps(payload)
    tracemalloc.start()
    result, _, body = call(module, api_event("/v1/embeddings", raw=raw))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (result, body["error"]["code"]) == (status, code)
    assert peak < 40 * len(raw) + 20_000_000  # the parse itself, not an error object per item


@pytest.mark.parametrize("path, payload", [
    ("/b32", {"text": "a", "\u00e9" * 300_000: 1}),
    ("/v1/embeddings", {"model": "\u00e9" * 300_000, "input": "a"}),
    ("/v1/embeddings", {"model": "b32", "input": "a", "\u00e9" * 300_000: 1}),
])
def test_error_messages_echo_a_few_dozen_characters_of_the_request_at_most(api, path, payload):
    """An echoed 600 KB field name came back as a 2 MB message: a larger one would exceed Lambda's 6 MB response."""
    module, _, _ = api
    status, _, body = call(module, api_event(path, raw=json.dumps(payload, ensure_ascii=False)))
    assert status == 400 and len(body["error"]["message"]) < 300, body["error"]["code"]
