"""clip_api.client and the official `openai` client against the local stable URL: the real API Lambda
handler behind local_mode's API Gateway, reading its serving pointer from (moto's) DynamoDB and calling
SageMaker's runtime API, which local_mode's RuntimeRouter answers from the tiny-model container.

Every embedding must equal, bit for bit, the container's own answer to a single-item request."""

from __future__ import annotations

import base64
import io
import json
import sys
import urllib.request

import boto3
import numpy as np
import pytest

from clip_api.client import ClipClient, InvalidInputError, RateLimitedError

POINTER_TABLE = "clip-embedding-api-serving-pointer"
ENDPOINT = "clip-tiny-v1"


class _Functions:
    """The gateway reads each function's environment from Lambda; here the environment is set by the fixture."""

    def get_function_configuration(self, FunctionName):  # noqa: N803 - boto3's spelling
        return {"FunctionName": FunctionName, "Environment": {"Variables": {}}}


@pytest.fixture
def stable_url(monkeypatch, aws_env, tiny_server):
    """(gateway URL, runtime router): API Gateway -> API Lambda handler -> SageMaker runtime -> tiny container."""
    from moto import mock_aws

    from clip_core.model_config import load_model_config
    from clip_lambdas import api as api_package
    from local_mode.api_gateway import LocalApiGateway
    from local_mode.runtime_router import RuntimeRouter
    from promotion.pointer import KEY, ServingPointer

    router = RuntimeRouter().start()
    router.routes.set(ENDPOINT, int(tiny_server.rsplit(":", 1)[1]))
    for name, value in {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": router.url, "SERVED_MODELS": "clip-tiny", "MODEL_ID": "clip-tiny",
                        "SERVING_POINTER_TABLE": POINTER_TABLE, "POWERTOOLS_TRACE_DISABLED": "1",
                        "POWERTOOLS_METRICS_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    # The handler reads SERVED_MODELS when it is imported: import a fresh copy serving clip-tiny (and
    # put back whatever copy other tests use afterwards).
    monkeypatch.delitem(sys.modules, "clip_lambdas.api.app", raising=False)
    if hasattr(api_package, "app"):
        monkeypatch.delattr(api_package, "app")
    gateway = None
    try:
        with mock_aws():  # DynamoDB only: the runtime client's endpoint is the router's loopback URL, which moto passes through
            dynamodb = boto3.client("dynamodb", region_name="us-east-1")
            dynamodb.create_table(TableName=POINTER_TABLE, BillingMode="PAY_PER_REQUEST", AttributeDefinitions=[{"AttributeName": KEY, "AttributeType": "S"}],
                                  KeySchema=[{"AttributeName": KEY, "KeyType": "HASH"}])
            dynamodb.put_item(TableName=POINTER_TABLE, Item=ServingPointer("clip-tiny", ENDPOINT, 1, "arn:aws:sagemaker:us-east-1:123456789012:model-package/clip-tiny/1").to_item())
            gateway = LocalApiGateway([load_model_config("clip-tiny")], _Functions(), "clip-embedding-api-{model_id}", port=0).start()
            yield gateway.url, router
    finally:
        if gateway:
            gateway.stop()
        router.stop()
        # Drop the copy serving clip-tiny: the next import (or monkeypatch's undo) gives other tests theirs.
        sys.modules.pop("clip_lambdas.api.app", None)
        if hasattr(api_package, "app"):
            delattr(api_package, "app")


def single(tiny_server, payload) -> np.ndarray:
    request = urllib.request.Request(tiny_server + "/invocations", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return np.asarray(json.loads(response.read()), dtype=np.float32)


def _png(seed: int, size=(96, 128)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_client_through_the_stable_url_equals_single_container_requests(stable_url, tiny_server):
    url, router = stable_url
    texts = [f"a photo of item {i}" for i in range(40)]
    images = [_png(i) for i in range(5)]
    client = ClipClient(url + "/tiny", api_key="k-1", concurrency=2, progress=False)
    text_vectors = client.embed_texts(texts)
    image_vectors = client.embed_images(images)
    assert text_vectors.shape == (40, 64) and image_vectors.shape == (5, 64)
    assert client.requests_sent == 2 + 1  # 32 + 8 texts, 5 images
    for i, text in enumerate(texts):
        assert np.array_equal(text_vectors[i], single(tiny_server, {"text": text})), i
    for i, image in enumerate(images):
        assert np.array_equal(image_vectors[i], single(tiny_server, {"image": base64.b64encode(image).decode()})), i
    # The container's error code comes back through the handler, typed
    with pytest.raises(InvalidInputError) as raised:
        client.embed_texts(["fine", ""])
    assert (raised.value.status, raised.value.code) == (400, "empty_text")


def test_every_answer_through_the_stable_url_names_the_manifests_space(stable_url, tiny_fp32):
    """Gateway -> API Lambda -> runtime -> container: X-Clip-Space (and /v1/embeddings' `space`) is the artifact manifest's space."""
    from inference_code.manifest import embedding_space, load_manifest

    url, _ = stable_url
    space = embedding_space(load_manifest(tiny_fp32.directory))
    for path, payload in (("/tiny", {"texts": ["a dog", "a cat"]}), ("/v1/embeddings", {"model": "tiny", "input": ["a dog"]})):
        request = urllib.request.Request(url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json", "x-api-key": "k-1"})
        with urllib.request.urlopen(request) as response:
            assert response.status == 200 and response.headers["X-Clip-Space"] == space, path
            body = json.loads(response.read())
    assert body["space"] == space


def test_an_endpoint_that_is_gone_comes_back_typed(stable_url):
    """The pointer names an endpoint the runtime no longer knows: after its retries the client raises the API's 503, typed."""
    url, router = stable_url
    router.routes.remove(ENDPOINT)
    with pytest.raises(RateLimitedError) as raised:
        ClipClient(url + "/tiny", progress=False, max_retries=1, backoff_base_s=0.01, backoff_max_s=0.1).embed_texts(["a dog"])
    assert (raised.value.status, raised.value.code) == (503, "model_unavailable")


@pytest.mark.parametrize("model", ["clip-tiny", "tiny"])
def test_the_official_openai_client_works_for_texts(stable_url, tiny_server, model):
    import openai  # the `test` extra installs it
    url, _ = stable_url
    client = openai.OpenAI(base_url=url + "/v1", api_key="k-1", max_retries=0)
    texts = ["a photo of a dog", "a diagram of a bridge", "zwei Katzen"]
    response = client.embeddings.create(model=model, input=texts, encoding_format="float")
    assert [item.index for item in response.data] == [0, 1, 2] and response.model == "clip-tiny"
    for item, text in zip(response.data, texts):
        assert np.array_equal(np.asarray(item.embedding, dtype=np.float32), single(tiny_server, {"text": text}))
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model="no-such-model", input=["a dog"], encoding_format="float")
    assert (raised.value.status_code, raised.value.code) == (400, "unknown_model")


def test_the_openai_clients_default_base64_encoding_is_refused_with_a_clear_code(stable_url):
    """The API answers floats only: without encoding_format="float" the client asks for base64 (when numpy
    is installed) and gets a 400 naming the field, never misdecoded numbers."""
    import openai

    url, _ = stable_url
    client = openai.OpenAI(base_url=url + "/v1", api_key="k-1", max_retries=0)
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model="clip-tiny", input=["a dog"], encoding_format="base64")
    assert raised.value.status_code == 400 and "encoding_format" in str(raised.value), raised.value
