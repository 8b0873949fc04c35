"""Every answer names its embedding space: the serving container's space=<id> attribute becomes X-Clip-Space
(and `space` in /v1/embeddings' body), equal to the artifact manifest's embedding_space."""

from __future__ import annotations

import json

import pytest

from inference_code.manifest import embedding_space, load_manifest
from tests.lambda_api.conftest import api_event, call
from tests.lambda_api.test_handler import expect_invoke

ENDPOINT = "clip-vit-b-32-v3"


@pytest.fixture(scope="module")
def container_answer(tiny_fp32):
    """What the real serving container answers for {"texts": ["a dog"]}: its body and its custom attributes."""
    from inference_code.server import load_service

    response = load_service(tiny_fp32.directory).handle(b'{"texts": ["a dog"]}', "application/json")
    assert response.status == 200
    return json.loads(response.body), response.headers["X-Amzn-SageMaker-Custom-Attributes"]


def test_the_model_route_returns_the_manifests_space(api, container_answer, tiny_fp32):
    module, runtime, _ = api
    vectors, attributes = container_answer
    expect_invoke(runtime, ENDPOINT, {"texts": ["a dog"]}, answer=vectors, attributes=attributes)
    status, headers, body = call(module, api_event(body={"texts": ["a dog"]}))
    assert status == 200 and body == vectors
    assert headers["x-clip-space"] == embedding_space(load_manifest(tiny_fp32.directory)) == tiny_fp32.manifest.space


def test_v1_embeddings_returns_the_space_in_its_body_and_header(api, container_answer, tiny_fp32):
    module, runtime, _ = api
    vectors, attributes = container_answer
    expect_invoke(runtime, ENDPOINT, {"texts": ["a dog"]}, answer=vectors, attributes=attributes)
    status, headers, body = call(module, api_event("/v1/embeddings", {"model": "b32", "input": ["a dog"]}))
    assert status == 200 and body["data"][0]["embedding"] == vectors[0]
    assert body["space"] == headers["x-clip-space"] == tiny_fp32.manifest.space
    assert headers["x-clip-model"] and headers["x-clip-version"] == tiny_fp32.manifest.version


def test_an_error_after_the_endpoint_answered_names_the_space_and_one_before_does_not(api, container_answer, tiny_fp32):
    module, runtime, _ = api
    _, attributes = container_answer
    expect_invoke(runtime, ENDPOINT, {"texts": ["a dog"]}, answer="not a list of vectors", attributes=attributes)
    status, headers, body = call(module, api_event("/v1/embeddings", {"model": "b32", "input": ["a dog"]}))
    assert status == 500 and body["error"]["code"] == "internal_error"
    assert headers["x-clip-space"] == tiny_fp32.manifest.space
    status, headers, body = call(module, api_event(body={"text": ""}))  # refused before any endpoint: no space to name
    assert status == 400 and "x-clip-space" not in headers


def test_the_spec_documents_the_header_and_the_body_field():
    spec = json.loads(module_spec_path().read_text())
    for path in ("/b32", "/v1/embeddings"):
        assert "X-Clip-Space" in spec["paths"][path]["post"]["responses"]["200"]["headers"]
    schema = spec["paths"]["/v1/embeddings"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "space" in spec["components"]["schemas"][schema]["required"]


def module_spec_path():
    from tests.lambda_api.test_openapi import SPEC_PATH

    return SPEC_PATH
