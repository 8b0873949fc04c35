"""The container's application/jsonlines contract (Batch Transform, SplitType=Line), over real HTTP.

Each record is answered on its own line, in order, with exactly what the same body sent alone as
application/json answers: its embedding(s) byte for byte, or its error object with the same code.
"""

from __future__ import annotations

import base64
import json

import pytest

from tests.inference_code.conftest import running_server
from tests.inference_code.test_server import _bomb_png, _truncated_jpeg, invoke, request

JSONL = "application/jsonlines"


@pytest.fixture(scope="module")
def server(tiny_service):
    with running_server(tiny_service) as (base, _app):
        yield base


def post_lines(base: str, lines: list[bytes], content_type: str = JSONL, newline: bytes = b"\n", final_newline: bool = True):
    body = newline.join(lines) + (newline if final_newline else b"")
    status, headers, payload = request(base, "POST", "/invocations", body, {"Content-Type": content_type})
    return status, headers, payload


def answer_alone(base: str, line: bytes) -> tuple[int, bytes]:
    status, _, payload = invoke(base, line)
    return status, payload


def record(payload) -> bytes:
    return json.dumps(payload).encode()


def test_each_record_answers_on_its_line_what_it_answers_alone(server, probe_images, tiny_service):
    photo = base64.b64encode(probe_images[0].data).decode()
    other = base64.b64encode(probe_images[3].data).decode()
    lines = [
        record({"text": "a photo of a dog"}),
        record({"image": photo}),
        record({"text": ""}),  # empty_text
        record({"texts": ["a cat", "word " * 200, "a bird"]}),  # batch, one truncated
        record({"image": base64.b64encode(_truncated_jpeg(probe_images)).decode()}),  # corrupt_image
        b'{"text": "unterminated',  # malformed_json
        record({"images": [photo, other]}),
        record({"text": "x" * 10_001}),  # text_too_long
        record({"texts": ["a"] * 33}),  # batch_too_large
        record({"image": base64.b64encode(_bomb_png()).decode()}),  # image_too_many_pixels
        record({"image": base64.b64encode(b"hello").decode()}),  # not_an_image
        record({"id": "7", "text": "a dog"}),  # unknown_field: records are the JSON bodies, nothing else
        b"",  # a blank line is a record too: empty_body
        record({"text": "the last record"}),
    ]
    status, headers, payload = post_lines(server, lines)
    assert status == 200
    assert headers["content-type"].startswith("application/jsonlines")
    answers = payload.split(b"\n")
    assert answers[-1] == b"" and len(answers) - 1 == len(lines)
    codes = []
    for line, answer in zip(lines, answers):
        alone_status, alone = answer_alone(server, line)
        if alone_status == 200:
            assert answer == alone  # byte for byte: the same floats in the same order
            codes.append(None)
        else:
            assert json.loads(answer) == json.loads(alone)  # the same code and message
            codes.append(json.loads(answer)["error"]["code"])
    assert codes == [None, None, "empty_text", None, "corrupt_image", "malformed_json", None, "text_too_long",
                     "batch_too_large", "image_too_many_pixels", "not_an_image", "unknown_field", "empty_body", None]
    assert headers["X-Amzn-SageMaker-Custom-Attributes"].endswith("truncated=3")
    assert f";space={tiny_service.manifest.space};" in headers["X-Amzn-SageMaker-Custom-Attributes"]


def test_more_records_than_one_model_batch_keep_their_order(server):
    texts = [f"caption number {i}" for i in range(75)]
    status, _, payload = post_lines(server, [record({"text": t}) for t in texts], newline=b"\r\n", final_newline=False)
    assert status == 200
    answers = payload.split(b"\n")[:-1]
    assert len(answers) == 75
    for text, answer in zip(texts[::7], answers[::7]):
        assert answer == answer_alone(server, record({"text": text}))[1]
    assert len(set(answers)) == 75


def test_a_record_over_the_request_limit_fails_alone(server):
    big = record({"text": "a" * 4_100_000})  # a record obeys max_request_bytes like a body
    status, _, payload = post_lines(server, [record({"text": "a dog"}), big, record({"text": "a cat"})])
    assert status == 200
    first, second, third = payload.split(b"\n")[:3]
    assert json.loads(second)["error"]["code"] == "request_too_large"
    assert len(json.loads(first)) == 64 and len(json.loads(third)) == 64


@pytest.mark.parametrize(
    "body, status, code",
    [(b"", 400, "empty_body"), (b"\n \n", 400, "empty_body"), (b'{"text": "a"}\n' * 500_000, 413, "request_too_large")],
    ids=["empty", "blank", "over-6MiB"],
)
def test_faults_of_the_whole_body_get_one_error(server, body, status, code):
    got, headers, payload = request(server, "POST", "/invocations", body, {"Content-Type": JSONL})
    assert (got, json.loads(payload)["error"]["code"]) == (status, code)
    assert "JSON Lines" in json.loads(payload)["error"]["message"] or code == "empty_body"
    ok, _, _ = invoke(server, {"text": "still healthy?"})
    assert ok == 200


def test_jsonlines_content_type_aliases(server):
    for content_type in ("application/jsonl", "application/x-jsonlines", "application/jsonlines; charset=utf-8"):
        status, _, payload = post_lines(server, [record({"text": "a dog"})], content_type=content_type)
        assert status == 200 and len(json.loads(payload.splitlines()[0])) == 64
