"""The API handler with canonical API Gateway events; SageMaker calls stubbed with botocore's Stubber."""

from __future__ import annotations

import base64
import json

import pytest
from botocore.exceptions import ReadTimeoutError

from tests.lambda_api.conftest import FakeContext, api_event, call, endpoint_body

VECTOR = [0.6, 0.8]
ATTRIBUTES = "model=clip-vit-b-32;version=abc123def456;variant=int8;truncated=none"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()


def expect_invoke(stub, endpoint: str, body: dict, answer=VECTOR, attributes: str = ATTRIBUTES):
    """The endpoint is sent `body` in the contract's canonical encoding (compact, UTF-8), whatever the client's spelling."""
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    stub.add_response(
        "invoke_endpoint",
        {"Body": endpoint_body(answer), "ContentType": "application/json", "CustomAttributes": attributes},
        {"EndpointName": endpoint, "ContentType": "application/json", "Accept": "application/json", "Body": raw},
    )


def test_text_request_reaches_the_endpoint_the_promotion_set(api, monkeypatch, b32_config):
    """The endpoint called is the one the promotion workflow's pointer item names."""
    from promotion.plan import LiveState, PackageInfo, Settings, plan_promotion
    from promotion.pointer import ServingPointer

    module, runtime, set_pointer = api
    package = PackageInfo("arn:aws:sagemaker:us-east-1:1:model-package/clip-vit-b-32/4", "clip-vit-b-32", 4, "Approved",
                          "1.dkr.ecr.us-east-1.amazonaws.com/clip-embedding-api-serve@sha256:" + "ab" * 32, "s3://b/m.tar.gz",
                          container_environment={"CLIP_API_MANIFEST_SHA256": "ab" * 32}, space="0123456789ab")
    live = LiveState(ServingPointer("clip-vit-b-32", "clip-vit-b-32-v3", 3))
    plan = plan_promotion(b32_config, package, live, Settings("r", "t"), 1_800_000_000).to_dict()
    written = ServingPointer.from_item("clip-vit-b-32", plan["new_pointer"])
    set_pointer(written.model_id, written.endpoint_name, written.version)
    expect_invoke(runtime, "clip-vit-b-32-v4", {"text": "a photo of a dog"})
    status, headers, body = call(module, api_event(body={"text": "a photo of a dog"}))
    assert status == 200 and body == VECTOR
    assert headers["x-clip-model"] == "clip-vit-b-32" and headers["x-clip-version"] == "abc123def456"


def test_batch_forms_pass_through(api):
    module, runtime, _ = api
    expect_invoke(runtime, "clip-vit-b-32-v3", {"images": [PNG, PNG]}, answer=[VECTOR, VECTOR])
    status, _, body = call(module, api_event(body={"images": [PNG, PNG]}))
    assert status == 200 and body == [VECTOR, VECTOR]


@pytest.mark.parametrize(
    "event_args, status, code",
    [
        ({"raw": '{"text": "unterminated'}, 400, "malformed_json"),
        ({"body": {"image": "%%%not base64%%%"}}, 400, "invalid_base64"),
        ({"body": {"text": ""}}, 400, "empty_text"),
        ({"body": {"text": "x" * 10_001}}, 413, "text_too_long"),
        ({"body": {"texts": ["a"] * 33}}, 413, "batch_too_large"),
        ({"body": {"texts": []}}, 400, "empty_batch"),
        ({"body": {}}, 400, "invalid_request"),
        ({"body": {"text": "a", "image": PNG}}, 400, "invalid_request"),
        ({"body": {"txt": "typo"}}, 400, "unknown_field"),
        ({"body": {"text": 42}}, 400, "invalid_type"),
        ({"body": {"texts": "a dog"}}, 400, "invalid_type"),
        ({"body": {"text": "a dog"}, "content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({"body": {"text": "a dog"}, "content_type": None}, 415, "unsupported_media_type"),
        ({"body": {"image": "QUFB" * 1_100_000}}, 413, "request_too_large"),
    ],
)
def test_bad_input_never_reaches_the_endpoint(api, event_args, status, code):
    module, _, _ = api  # the runtime stub has no responses queued: any endpoint call would fail the test
    got_status, headers, body = call(module, api_event(**event_args))
    assert (got_status, body["error"]["code"]) == (status, code), body
    assert headers["content-type"] == "application/json"
    if code == "request_too_large":
        assert "4 MB" in body["error"]["message"] and "3 MB" in body["error"]["message"]


def model_error(stub, status: int, body: str):
    stub.add_client_error("invoke_endpoint", service_error_code="ModelError", service_message="Received client error from primary",
                          http_status_code=424, response_meta={}, modeled_fields={"OriginalStatusCode": status, "OriginalMessage": body})


def test_endpoint_4xx_is_passed_through_with_its_code(api):
    module, runtime, _ = api
    model_error(runtime, 400, json.dumps({"error": {"code": "not_an_image", "message": "the bytes are not an image"}}))
    status, _, body = call(module, api_event(body={"image": PNG}))
    assert status == 400 and body["error"] == {"code": "not_an_image", "message": "the bytes are not an image"}


@pytest.mark.parametrize(
    "error_code, http_status, status, code, retry_after",
    [
        ("ThrottlingException", 400, 429, "throttled", "2"),
        ("ModelNotReadyException", 429, 503, "model_unavailable", "5"),
        ("ServiceUnavailable", 503, 503, "model_unavailable", "5"),
        ("ValidationException", 400, 503, "model_unavailable", "30"),
    ],
)
def test_endpoint_unavailability_maps_to_retryable_statuses(api, error_code, http_status, status, code, retry_after):
    module, runtime, _ = api
    runtime.add_client_error("invoke_endpoint", service_error_code=error_code,
                             service_message="Endpoint clip-vit-b-32-v3 of account 123456789012 not found", http_status_code=http_status)
    got_status, headers, body = call(module, api_event(body={"text": "a dog"}), FakeContext(remaining_ms=1_000))  # no time to retry
    assert (got_status, body["error"]["code"]) == (status, code)
    assert headers["retry-after"] == retry_after
    assert "clip-vit-b-32-v3" not in json.dumps(body) and "123456789012" not in json.dumps(body)


def test_model_5xx_is_a_502_without_internals(api):
    module, runtime, _ = api
    model_error(runtime, 500, "Traceback (most recent call last): File /opt/program/inference_code/server.py")
    status, _, body = call(module, api_event(body={"text": "a dog"}))
    assert status == 502 and body["error"]["code"] == "model_error" and "Traceback" not in json.dumps(body)


def test_throttling_is_retried_within_the_budget(api, monkeypatch):
    module, runtime, _ = api
    monkeypatch.setattr("clip_lambdas.api.endpoints.time.sleep", lambda s: None)
    runtime.add_client_error("invoke_endpoint", service_error_code="ThrottlingException", service_message="slow down", http_status_code=400)
    expect_invoke(runtime, "clip-vit-b-32-v3", {"text": "a dog"})
    status, _, body = call(module, api_event(body={"text": "a dog"}))
    assert status == 200 and body == VECTOR


def test_timeout_is_a_504(api, monkeypatch):
    module, _, _ = api

    class SlowRuntime:
        def invoke_endpoint(self, **kwargs):
            raise ReadTimeoutError(endpoint_url="https://runtime.sagemaker")

    monkeypatch.setattr(module.Clients, "runtime", SlowRuntime())
    status, headers, body = call(module, api_event(body={"text": "a dog"}))
    assert status == 504 and body["error"]["code"] == "timeout" and headers["retry-after"]


def test_no_serving_version_yet_is_a_503(api):
    module, _, set_pointer = api
    set_pointer("clip-vit-b-32", "")  # what a first promotion that rolled back leaves
    status, _, body = call(module, api_event(body={"text": "a dog"}))
    assert status == 503 and body["error"]["code"] == "model_unavailable"
    status, _, body = call(module, api_event("/l14", {"text": "a dog"}))  # no pointer item at all
    assert status == 503 and body["error"]["code"] == "model_unavailable"


V4_VECTOR = [0.8, 0.6]
V4_ATTRIBUTES = "model=clip-vit-b-32;version=fedcba654321;variant=int8;truncated=none"


def served(module) -> tuple[int, object, str]:
    """(status, body, X-Clip-Version) of a text request: which endpoint answered, not only that one did."""
    status, headers, body = call(module, api_event(body={"text": "a dog"}))
    return status, body, headers.get("x-clip-version")


def test_a_switch_reaches_the_function_after_the_cache_ttl(api, monkeypatch):
    module, runtime, set_pointer = api
    expect_invoke(runtime, "clip-vit-b-32-v3", {"text": "a dog"}, answer=VECTOR)
    assert served(module) == (200, VECTOR, "abc123def456")
    set_pointer("clip-vit-b-32", "clip-vit-b-32-v4", version=4)
    expect_invoke(runtime, "clip-vit-b-32-v3", {"text": "a dog"}, answer=VECTOR)  # cached: the previous endpoint still serves
    assert served(module) == (200, VECTOR, "abc123def456")
    monkeypatch.setattr(module.Clients.endpoints(), "ttl_s", 0.0)
    expect_invoke(runtime, "clip-vit-b-32-v4", {"text": "a dog"}, answer=V4_VECTOR, attributes=V4_ATTRIBUTES)
    assert served(module) == (200, V4_VECTOR, "fedcba654321")


def test_a_first_deployment_serves_at_once_not_after_the_cache_ttl(api):
    module, runtime, set_pointer = api
    set_pointer("clip-vit-b-32", "")
    status, headers, body = call(module, api_event(body={"text": "a dog"}))
    assert (status, body["error"]["code"], headers["retry-after"]) == (503, "model_unavailable", "30")
    set_pointer("clip-vit-b-32", "clip-vit-b-32-v1", version=1)  # the first promotion switches
    expect_invoke(runtime, "clip-vit-b-32-v1", {"text": "a dog"}, answer=V4_VECTOR, attributes=V4_ATTRIBUTES)
    assert served(module) == (200, V4_VECTOR, "fedcba654321")


def test_an_unreadable_pointer_table_keeps_the_last_endpoint_or_answers_503(api, monkeypatch):
    module, runtime, _ = api
    expect_invoke(runtime, "clip-vit-b-32-v3", {"text": "a dog"}, answer=VECTOR)
    assert served(module) == (200, VECTOR, "abc123def456")
    directory = module.Clients.endpoints()
    monkeypatch.setattr(directory, "ttl_s", 0.0)
    monkeypatch.setattr(directory, "table", "no-such-table")
    expect_invoke(runtime, "clip-vit-b-32-v3", {"text": "a dog"}, answer=VECTOR)
    assert served(module) == (200, VECTOR, "abc123def456")  # stale but serving
    status, headers, body = call(module, api_event("/l14", {"text": "a dog"}))  # never read: nothing to fall back on
    assert (status, body["error"]["code"], headers["retry-after"]) == (503, "model_unavailable", "10")


def test_openai_style_texts_and_images(api):
    module, runtime, set_pointer = api
    expect_invoke(runtime, "clip-vit-b-32-v3", {"texts": ["a dog", "a cat"]}, answer=[VECTOR, VECTOR])
    status, _, body = call(module, api_event("/v1/embeddings", {"model": "clip-vit-b-32", "input": ["a dog", "a cat"]}))
    assert status == 200 and body["object"] == "list" and body["model"] == "clip-vit-b-32"
    assert [item["index"] for item in body["data"]] == [0, 1] and body["data"][0]["embedding"] == VECTOR
    # another model: its endpoint comes from that model's serving pointer
    set_pointer("clip-vit-l-14", "clip-vit-l-14-v2", version=2)
    expect_invoke(runtime, "clip-vit-l-14-v2", {"images": [PNG]}, answer=[VECTOR])
    status, _, body = call(module, api_event("/v1/embeddings", {"model": "l14", "input": {"image": PNG}}))
    assert status == 200 and body["model"] == "clip-vit-l-14" and len(body["data"]) == 1


def test_openai_style_unknown_model_and_mixed_input(api):
    module, _, _ = api
    status, _, body = call(module, api_event("/v1/embeddings", {"model": "gpt-4", "input": "a dog"}))
    assert status == 400 and body["error"]["code"] == "unknown_model"
    status, headers, body = call(module, api_event("/v1/embeddings", {"model": "b32", "input": ["a dog", {"image": PNG}]}))
    assert (status, body["error"]["code"], headers["content-type"]) == (400, "invalid_type", "application/json")  # no endpoint call queued


def test_unknown_route_is_a_json_404(api):
    module, _, _ = api
    status, _, body = call(module, api_event("/nope", {"text": "a"}))
    assert status == 404 and body["error"]["code"] == "not_found" and "/v1/embeddings" in body["error"]["message"]


def test_metrics_are_embedded_metric_format(api, capsys):
    module, runtime, _ = api
    expect_invoke(runtime, "clip-vit-b-32-v3", {"text": "a dog"})
    call(module, api_event(body={"text": "a dog"}))
    call(module, api_event(body={"text": ""}))
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    names = {m["Name"] for blob in blobs for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"Requests", "Latency", "BatchSize", "Errors"} <= names
    error_blob = next(b for b in blobs if "Errors" in b)
    assert error_blob["kind"] == "empty_text" and error_blob["model"] == "clip-vit-b-32"
