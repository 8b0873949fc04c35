"""A request may pin an embedding space (X-Clip-Space header or `space` in the body): it is answered by
an endpoint of that space while one is served, else 409 (none) or 410 (its grace period ended)."""

from __future__ import annotations

import time

import pytest

from promotion.pointer import ServingPointer, SpaceRoute
from tests.lambda_api.conftest import POINTER_TABLE, api_event, call
from tests.lambda_api.test_handler import expect_invoke

A, B, GONE = "aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"
STABLE, OLD, RETIRED = "clip-vit-b-32-v5", "clip-vit-b-32-v4", "clip-vit-b-32-v2"


@pytest.fixture
def adopted(api, monkeypatch):
    """The stable URL moved to space B; space A is served by v4 for another day; C's grace has ended."""
    module, runtime, _ = api
    now = time.time()
    pointer = ServingPointer("clip-vit-b-32", STABLE, 5, "arn/5", B, {B: SpaceRoute(STABLE, 5), A: SpaceRoute(OLD, 4, int(now + 86400)),
                                                                    GONE: SpaceRoute(RETIRED, 2, int(now - 1))}, revision=7)
    module.Clients.dynamodb.put_item(TableName=POINTER_TABLE, Item=pointer.to_item())
    return module, runtime


def pinned(body: dict, space: str | None = None, path: str = "/b32") -> dict:
    event = api_event(path, body)
    if space is not None:
        event["headers"]["X-Clip-Space"] = space
        event["multiValueHeaders"]["X-Clip-Space"] = [space]
    return event


SPACE_OF = {STABLE: B, OLD: A}


def answering(runtime, endpoint: str, body: dict):
    """The endpoint answers as its container does: naming its own space."""
    expect_invoke(runtime, endpoint, body, attributes=f"model=clip-vit-b-32;version=v;variant=int8;space={SPACE_OF[endpoint]};truncated=none")


def test_a_pinned_request_answered_in_another_space_is_a_502_not_vectors(adopted):
    module, runtime = adopted
    expect_invoke(runtime, OLD, {"text": "a dog"}, attributes=f"model=clip-vit-b-32;version=v;variant=int8;space={B};truncated=none")
    status, _, body = call(module, pinned({"text": "a dog"}, A))
    assert (status, body["error"]["code"]) == (502, "space_mismatch")


def test_an_unpinned_request_goes_to_the_stable_endpoint(adopted):
    module, runtime = adopted
    expect_invoke(runtime, STABLE, {"text": "a dog"})
    assert call(module, pinned({"text": "a dog"}))[0] == 200


@pytest.mark.parametrize("how", ["header", "body", "both"])
def test_a_request_pinning_the_old_space_is_answered_by_its_endpoint(adopted, how):
    module, runtime = adopted
    answering(runtime, OLD, {"text": "a dog"})  # a body's `space` is not sent to the container
    body = {"text": "a dog", **({"space": A} if how != "header" else {})}
    assert call(module, pinned(body, A if how != "body" else None))[0] == 200


def test_pinning_the_stable_space_is_the_stable_endpoint_and_v1_embeddings_pins_too(adopted):
    module, runtime = adopted
    answering(runtime, STABLE, {"text": "a dog"})
    assert call(module, pinned({"text": "a dog"}, B))[0] == 200
    expect_invoke(runtime, OLD, {"texts": ["a dog"]}, answer=[[1.0, 0.0]],
                  attributes=f"model=clip-vit-b-32;version=v;variant=int8;space={A};truncated=none")
    status, _, body = call(module, pinned({"model": "b32", "input": ["a dog"], "space": A}, path="/v1/embeddings"))
    assert status == 200 and body["data"][0]["embedding"] == [1.0, 0.0]


@pytest.mark.parametrize("space, status, code, names", [
    ("dddddddddddd", 409, "space_unavailable", [A, B]),
    (GONE, 410, "space_retired", [A, B]),
])
def test_a_space_not_served_is_refused_naming_the_available_ones(adopted, space, status, code, names):
    module, _ = adopted
    got, _, body = call(module, pinned({"text": "a dog"}, space))
    assert (got, body["error"]["code"]) == (status, code)
    assert all(name in body["error"]["message"] for name in names)


@pytest.mark.parametrize("space, body_space, code", [("not-hex", None, "invalid_space"), (A, B, "space_conflict")])
def test_a_malformed_or_conflicting_pin_is_a_400(adopted, space, body_space, code):
    module, _ = adopted
    body = {"text": "a dog", **({"space": body_space} if body_space else {})}
    status, _, answer = call(module, pinned(body, space))
    assert (status, answer["error"]["code"]) == (400, code)
