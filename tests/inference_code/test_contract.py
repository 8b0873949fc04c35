"""The request contract as pure functions: every bad input gets its status and stable code."""

import base64
import json

import pytest

from clip_core.limits import ServingLimits
from inference_code.contract import (ParsedRequest, decode_attributes, encode_attributes, encode_embeddings, encode_request,
                                     parse_json_request, parse_request)
from inference_code.errors import RequestError

LIMITS = ServingLimits(max_request_bytes=10_000, max_image_bytes=1_000, max_batch_size=4, max_text_chars=100)
B64 = base64.b64encode(b"\x89PNG fake bytes").decode()


def parse(body, content_type="application/json"):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return parse_request(body, content_type, LIMITS)


def error_of(body, content_type="application/json") -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse(body, content_type)
    return caught.value


def test_parsing_is_deterministic_and_keeps_no_state_between_requests():
    """The same request parses to the same value however its JSON is spelt and whatever was parsed before it:
    each parse is checked against a value written out here, so an answer carried over from an earlier request
    (a cache keyed too loosely, a shared list) fails, as an equality of two calls' outputs could not."""
    expected = ParsedRequest(kind="text", items=("a dog",), batch=False)
    spellings = [b'{"text": "a dog"}', b'{"text":"a dog"}', b' {\n  "text" : "a dog"\n} ', b'{"text": "a \\u0064og"}']
    first = parse(spellings[0])
    assert first == expected
    assert parse({"texts": ["a cat", "a bird"]}).items == ("a cat", "a bird")  # another request in between
    assert parse({"image": B64}).items == (b"\x89PNG fake bytes",)
    assert [parse(body) for body in spellings] == [expected] * len(spellings)
    assert first == expected  # not changed by the parses after it
    assert parse({"texts": ["a dog"]}) == ParsedRequest(kind="text", items=("a dog",), batch=True)  # the batch form is not the single one


def test_single_and_batch_forms():
    single = parse({"text": "a dog"})
    assert (single.kind, single.items, single.batch) == ("text", ("a dog",), False)
    batch = parse({"texts": ["a", "b"]})
    assert (batch.kind, batch.items, batch.batch) == ("text", ("a", "b"), True)
    image = parse({"image": B64})
    assert (image.kind, image.items, image.batch) == ("image", (b"\x89PNG fake bytes",), False)
    assert parse({"images": [B64, B64]}).items == (b"\x89PNG fake bytes",) * 2


def test_base64_forgiveness_data_uri_and_line_breaks():
    wrapped = "\n".join(B64[i : i + 8] for i in range(0, len(B64), 8))
    assert parse({"image": wrapped}).items[0] == b"\x89PNG fake bytes"
    assert parse({"image": "data:image/png;base64," + B64}).items[0] == b"\x89PNG fake bytes"


def test_raw_image_body_and_charset_parameter():
    assert parse(b"\xff\xd8raw", "image/jpeg").items == (b"\xff\xd8raw",)
    assert parse({"text": "x"}, "application/json; charset=utf-8").kind == "text"
    assert parse({"text": "x"}, None).kind == "text"


@pytest.mark.parametrize(
    "body, content_type, status, code",
    [
        (b"{not json", "application/json", 400, "malformed_json"),
        (b"\xff\xfe\x00garbage", "application/json", 400, "malformed_json"),
        (b"", "application/json", 400, "empty_body"),
        (b"", "image/png", 400, "empty_body"),
        ([1, 2], "application/json", 400, "invalid_request"),
        ({}, "application/json", 400, "invalid_request"),
        ({"text": "a", "image": B64}, "application/json", 400, "invalid_request"),
        ({"txt": "typo"}, "application/json", 400, "unknown_field"),
        ({"text": 42}, "application/json", 400, "invalid_type"),
        ({"text": None}, "application/json", 400, "invalid_type"),
        ({"text": ""}, "application/json", 400, "empty_text"),
        ({"text": "   \n"}, "application/json", 400, "empty_text"),
        ({"text": "x" * 101}, "application/json", 413, "text_too_long"),
        ({"texts": "not a list"}, "application/json", 400, "invalid_type"),
        ({"texts": []}, "application/json", 400, "empty_batch"),
        ({"texts": ["a"] * 5}, "application/json", 413, "batch_too_large"),
        ({"texts": ["a", 3]}, "application/json", 400, "invalid_type"),
        ({"image": "!!!not base64!!!"}, "application/json", 400, "invalid_base64"),
        ({"image": "abc"}, "application/json", 400, "invalid_base64"),
        ({"image": ""}, "application/json", 400, "empty_image"),
        ({"image": 123}, "application/json", 400, "invalid_type"),
        ({"image": "QUFB" * 400}, "application/json", 413, "image_too_large"),
        ({"images": [B64] * 5}, "application/json", 413, "batch_too_large"),
        ({"text": "a dog"}, "text/plain", 415, "unsupported_media_type"),
        ({"text": "a dog"}, "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b"x" * 10_001, "application/json", 413, "request_too_large"),
    ],
)
def test_bad_requests(body, content_type, status, code):
    error = error_of(body, content_type)
    assert (error.status, error.code) == (status, code)
    assert error.message and "Traceback" not in error.message


def test_batch_errors_name_the_item():
    error = error_of({"texts": ["ok", ""]})
    assert "texts[1]" in error.message


def test_encoding_of_embeddings_and_attributes():
    import numpy as np

    vectors = np.array([[0.6, 0.8], [1.0, 0.0]], dtype=np.float32)
    assert json.loads(encode_embeddings(vectors, batch=False)) == pytest.approx([0.6, 0.8])
    assert len(json.loads(encode_embeddings(vectors, batch=True))) == 2
    attributes = encode_attributes("clip-tiny", "abc123", "fp32", (False, True, True))
    assert attributes == "model=clip-tiny;version=abc123;variant=fp32;truncated=1,2"
    assert encode_attributes("m", "v", "int8").endswith("truncated=none")
    named = encode_attributes("clip-tiny", "abc123", "int8", (True,), space="0123456789ab")
    assert named == "model=clip-tiny;version=abc123;variant=int8;space=0123456789ab;truncated=0"
    assert decode_attributes(named) == {"model": "clip-tiny", "version": "abc123", "variant": "int8", "space": "0123456789ab", "truncated": "0"}
    assert decode_attributes("") == {}


# Hostile input (issue 13): valid JSON that used to escape as a 500 (RecursionError) or be called malformed.
def hostile_error(body: bytes) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse_request(body, "application/json", ServingLimits())
    return caught.value


@pytest.mark.parametrize("depth", [5_000, 100_000])
@pytest.mark.parametrize("opening, closing", [(b"[", b"]"), (b'{"a":', b"}")])
def test_deeply_nested_json_is_a_400_of_its_own(depth, opening, closing):
    error = hostile_error(b'{"texts": ' + opening * depth + b"1" + closing * depth + b"}")
    assert (error.status, error.code) == (400, "json_too_deep")


@pytest.mark.parametrize(
    "body, code",
    [
        (b'{"text": ' + b"9" * 5_000 + b"}", "invalid_type"),
        (b'{"texts": [' + b"9" * 5_000 + b"]}", "invalid_type"),
        (b'{"image": 1e999999}', "invalid_type"),
        (b'{"texts": NaN}', "invalid_type"),
        (b'{"text": "a", "n": ' + b"9" * 5_000 + b"}", "unknown_field"),
    ],
)
def test_huge_numbers_are_the_wrong_type_not_malformed_json(body, code):
    error = hostile_error(body)
    assert (error.status, error.code) == (400, code)


def test_ordinary_nesting_still_parses():
    assert parse_request(b'{"texts": ["a", "b"]}', "application/json", ServingLimits()).items == ("a", "b")


@pytest.mark.parametrize(
    "parsed",
    [
        ParsedRequest("text", ("a photo of a dog",), False),
        ParsedRequest("text", ('quotes " and \\ back\nslash', "naïve café 猫 🐕", "a lone \ud800 surrogate", "\u0000 control"), True),
        ParsedRequest("image", (b"\x89PNG fake bytes",), False),
        ParsedRequest("image", (b"\x00\xff" * 50, b"x", b"\xfb\xff\xbf"), True),
    ],
    ids=["text", "texts", "image", "images"],
)
def test_encode_request_round_trips_through_the_parser(parsed):
    body = encode_request(parsed)
    assert parse_json_request(body, LIMITS) == parsed
    assert encode_request(parse_json_request(body, LIMITS)) == body  # canonical: one encoding per request


def test_encode_request_is_canonical_whatever_the_client_sent():
    """However a client spells a request (spacing, escapes, a data URI, wrapped base64), the encoding is one body."""
    spellings = [
        b'{ "images" : [ "' + B64.encode() + b'" ] }',
        b'{"images":["data:image/png;base64,' + B64.encode() + b'"]}',
        b'{"images": ["' + B64[:8].encode() + b'\\n' + B64[8:].encode() + b'"]}',
    ]
    encoded = {encode_request(parse_json_request(body, LIMITS)) for body in spellings}
    assert encoded == {b'{"images":["' + B64.encode() + b'"]}'}
    assert encode_request(parse_json_request(b'{"text": "caf\\u00e9"}', LIMITS)) == '{"text":"café"}'.encode()


def test_a_lone_surrogate_is_forwarded_as_its_json_escape_in_valid_utf8():
    """JSON may carry a lone surrogate (\\ud800) that UTF-8 cannot: the canonical body keeps it escaped, so anything
    between the Lambda and the container that decodes strictly still can, and the container reads the same text."""
    parsed = parse_request(b'{"texts": ["a\\ud800b", "\\udfff", "\\ud83d\\ude00"]}', "application/json", ServingLimits())
    body = encode_request(parsed)
    body.decode("utf-8")  # strict
    assert b"\\ud800" in body and b"\\udfff" in body and "\U0001f600".encode() in body  # a real pair is one character
    assert parse_request(body, "application/json", ServingLimits()) == parsed
