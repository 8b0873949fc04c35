"""The OpenAPI spec kept in the repo: generated from the handler, and true of its real responses."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests.lambda_api.conftest import api_event, call
from tests.lambda_api.test_handler import PNG, VECTOR, expect_invoke

SPEC_PATH = Path(__file__).parents[2] / "lambda" / "clip_lambdas" / "api" / "openapi.json"


@pytest.fixture(scope="module")
def spec():
    return json.loads(SPEC_PATH.read_text())


def test_committed_spec_matches_the_handler(api, spec):
    module, _, _ = api
    assert json.loads(json.dumps(module.openapi_spec(), sort_keys=True)) == spec, "run `clip-api openapi --write`"
    assert set(spec["paths"]) == {"/b32", "/l14", "/v1/embeddings"}
    assert spec["components"]["securitySchemes"]["apiKey"]["name"] == "x-api-key"


def assert_conforms(spec: dict, path: str, status: int, body) -> None:
    content = spec["paths"][path]["post"]["responses"][str(status)]["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**content, "components": spec["components"]}, cls=jsonschema.Draft202012Validator)


def test_real_responses_conform_to_the_spec(api, spec):
    module, runtime, _ = api
    expect_invoke(runtime, "clip-vit-b-32-v3", {"text": "a dog"})
    responses = [("/b32", *call(module, api_event(body={"text": "a dog"}))[::2])]
    expect_invoke(runtime, "clip-vit-b-32-v3", {"images": [PNG]}, answer=[VECTOR])
    responses.append(("/b32", *call(module, api_event(body={"images": [PNG]}))[::2]))
    expect_invoke(runtime, "clip-vit-b-32-v3", {"texts": ["a"]}, answer=[VECTOR])
    responses.append(("/v1/embeddings", *call(module, api_event("/v1/embeddings", {"model": "b32", "input": "a"}))[::2]))
    for bad in ({"text": ""}, {"texts": ["a"] * 40}, {"txt": 1}):
        responses.append(("/b32", *call(module, api_event(body=bad))[::2]))
    responses.append(("/b32", *call(module, api_event(body={"text": "a"}, content_type="text/plain"))[::2]))
    assert {status for _, status, _ in responses} == {200, 400, 413, 415}
    for path, status, body in responses:
        assert_conforms(spec, path, status, body)


def test_the_check_can_fail(spec):
    with pytest.raises(jsonschema.ValidationError):
        assert_conforms(spec, "/b32", 400, {"message": "not our error shape"})
    with pytest.raises(jsonschema.ValidationError):
        assert_conforms(spec, "/v1/embeddings", 200, [0.1, 0.2])
