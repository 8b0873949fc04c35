from __future__ import annotations

import copy
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

POINTER_TABLE = "clip-embedding-api-serving-pointer"
EVENT = json.loads((Path(__file__).parent.parent / "events" / "api_gateway_rest_post.json").read_text())
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "ClipEmbeddingApi")


@dataclass
class FakeContext:
    remaining_ms: int = 28_000
    function_name: str = "clip-embedding-api-clip-vit-b-32"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:clip-embedding-api-clip-vit-b-32"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def api_event(path: str = "/b32", body=None, content_type: str | None = "application/json", raw: str | None = None) -> dict:
    event = copy.deepcopy(EVENT)
    event["path"] = event["resource"] = event["requestContext"]["resourcePath"] = path
    event["body"] = raw if raw is not None else json.dumps(body)
    headers = {k: v for k, v in event["headers"].items() if k != "Content-Type"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    event["headers"] = headers
    event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    return event


def endpoint_body(payload) -> StreamingBody:
    raw = json.dumps(payload).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


@pytest.fixture
def api(monkeypatch, aws_env):
    """The handler with its SageMaker runtime under a botocore Stubber and its serving pointers in moto's DynamoDB.

    Yields (module, runtime stub, set_pointer): set_pointer(model_id, endpoint) is what a promotion writes.
    """
    from moto import mock_aws

    from clip_lambdas.api import app as module
    from promotion.pointer import KEY, ServingPointer

    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(TableName=POINTER_TABLE, BillingMode="PAY_PER_REQUEST", AttributeDefinitions=[{"AttributeName": KEY, "AttributeType": "S"}],
                              KeySchema=[{"AttributeName": KEY, "KeyType": "HASH"}])

        def set_pointer(model_id: str, endpoint: str, version: int = 3) -> None:
            dynamodb.put_item(TableName=POINTER_TABLE, Item=ServingPointer(model_id, endpoint, version, f"arn:{model_id}/{version}").to_item())

        set_pointer("clip-vit-b-32", "clip-vit-b-32-v3")
        monkeypatch.setenv("SERVING_POINTER_TABLE", POINTER_TABLE)
        runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
        monkeypatch.setattr(module.Clients, "runtime", runtime)
        monkeypatch.setattr(module.Clients, "dynamodb", dynamodb)
        monkeypatch.setattr(module.Clients, "directory", None)
        with Stubber(runtime) as runtime_stub:
            yield module, runtime_stub, set_pointer
            runtime_stub.assert_no_pending_responses()


def call(module, event: dict, context: FakeContext | None = None) -> tuple[int, dict, object]:
    response = module.handler(event, context or FakeContext())
    body = response["body"]
    try:
        body = json.loads(body)
    except (TypeError, ValueError):
        pass
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    for key, values in (response.get("multiValueHeaders") or {}).items():
        headers.setdefault(key.lower(), values[0])
    return response["statusCode"], headers, body
