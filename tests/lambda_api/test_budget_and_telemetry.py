"""Retries inside API Gateway's 29 s, nothing user-derived in X-Ray, OPTIONS without CORS, and metrics as emitted (EMF)."""

from __future__ import annotations

import io
import json
import random

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from tests.lambda_api.conftest import FakeContext, api_event, call
from tests.lambda_api.test_handler import expect_invoke

VECTOR = [0.6, 0.8]


class Clock:
    def __init__(self):
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class SlowThrottledRuntime:
    """Throttles `throttles` times (each answer taking `throttle_s`), then hangs for `hang_s` on the next call."""

    def __init__(self, clock: Clock, throttles: int, throttle_s: float, hang_s: float):
        self.clock, self.throttles, self.throttle_s, self.hang_s = clock, throttles, throttle_s, hang_s
        self.timeouts: list[int] = []

    def client(self, read_timeout_s: int):
        self.timeouts.append(read_timeout_s)
        return self

    def invoke_endpoint(self, **kwargs):
        timeout = self.timeouts[-1]
        if self.throttles:
            self.throttles -= 1
            self.clock.sleep(self.throttle_s)
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "InvokeEndpoint")
        self.clock.sleep(min(self.hang_s, timeout))
        raise ReadTimeoutError(endpoint_url="https://runtime.sagemaker")


@pytest.mark.parametrize("throttles, throttle_s", [(1, 3.0), (3, 2.0), (6, 1.0), (0, 0.0)])
def test_every_attempt_ends_inside_the_gateway_budget(throttles, throttle_s):
    """The model hangs after some slow throttles: our 504 must come before API Gateway's own 29 s timeout."""
    from clip_lambdas.api.endpoints import API_GATEWAY_BUDGET_MS, invoke_endpoint
    from clip_lambdas.api.errors import ApiError

    clock = Clock()
    runtime = SlowThrottledRuntime(clock, throttles, throttle_s, hang_s=60)
    with pytest.raises(ApiError) as raised:
        invoke_endpoint(runtime.client, "ep", b"{}", lambda: API_GATEWAY_BUDGET_MS - 1000 * clock.now, sleep=clock.sleep)
    assert raised.value.status == 504
    assert clock.now < API_GATEWAY_BUDGET_MS / 1000 - 1.0, (clock.now, runtime.timeouts)
    assert runtime.timeouts[0] == 25 and all(t <= 25 for t in runtime.timeouts)


def test_backoff_has_jitter():
    from clip_lambdas.api.endpoints import invoke_endpoint

    def delays(seed: int) -> list[float]:
        clock = Clock()
        slept: list[float] = []
        runtime = SlowThrottledRuntime(clock, throttles=4, throttle_s=0.0, hang_s=0)


        def sleep(seconds: float) -> None:
            slept.append(seconds)
            clock.sleep(seconds)

        def client(timeout):
            if runtime.throttles == 0:
                return type("Ok", (), {"invoke_endpoint": lambda self, **kw: {"Body": io.BytesIO(b"[1]"), "CustomAttributes": ""}})()
            return runtime.client(timeout)

        invoke_endpoint(client, "ep", b"{}", lambda: 29_000 - 1000 * clock.now, sleep=sleep, rng=random.Random(seed).random)
        return slept

    runs = [delays(seed) for seed in range(5)]
    assert all(len(run) == 4 for run in runs)
    assert len({tuple(run) for run in runs}) == 5, "the same delays every time: no jitter"
    for run in runs:
        assert all(0 <= d <= min(4.0, 0.25 * 2**i) for i, d in enumerate(run)), run


def test_the_runtime_client_gets_the_attempt_timeout(api, monkeypatch):
    """A real botocore client per whole-second timeout: its read timeout is never more than what is left."""
    module, _, _ = api
    monkeypatch.setattr(module.Clients, "runtime", None)
    monkeypatch.setattr(module.Clients, "runtimes", {})
    assert module.Clients.sagemaker_runtime(7).meta.config.read_timeout == 7
    assert module.Clients.sagemaker_runtime(7) is module.Clients.sagemaker_runtime(7)
    assert module.Clients.sagemaker_runtime(25).meta.config.read_timeout == 25


def test_a_late_first_attempt_waits_only_for_what_is_left(api, monkeypatch):
    module, _, _ = api
    seen: list[int] = []

    class Recording:
        def invoke_endpoint(self, **kwargs):
            raise ReadTimeoutError(endpoint_url="https://runtime.sagemaker")

    monkeypatch.setattr(module.Clients, "sagemaker_runtime", classmethod(lambda cls, timeout=25: seen.append(timeout) or Recording()))
    status, _, body = call(module, api_event(body={"text": "a dog"}), FakeContext(remaining_ms=9_000))
    assert status == 504 and seen and seen[0] <= 7


# ---- X-Ray: embeddings never recorded ----

def test_no_embedding_is_recorded_in_traces(api, monkeypatch):
    module, runtime, _ = api
    recorded: list[tuple[str, object]] = []

    def record(method_name=None, data=None, subsegment=None, capture_response=None):
        if capture_response and data is not None:
            recorded.append((method_name, data))

    monkeypatch.setattr(module.tracer, "_add_response_as_metadata", record)
    expect_invoke(runtime, "clip-vit-b-32-v3", {"text": "a dog"})
    status, _, _ = call(module, api_event(body={"text": "a dog"}))
    assert status == 200
    assert not recorded, f"responses recorded as trace metadata: {[name for name, _ in recorded]}"


def test_capture_is_off_whatever_the_environment_says(monkeypatch):
    """POWERTOOLS_TRACER_CAPTURE_RESPONSE=true (the default) must not turn it back on: the choice is explicit in code."""
    import ast
    from pathlib import Path

    source = Path(__file__).parents[2] / "lambda" / "clip_lambdas" / "api" / "app.py"
    tree = ast.parse(source.read_text())
    traced = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(target, ast.Attribute) and target.attr in ("capture_lambda_handler", "capture_method"):
                    keywords = {k.arg: k.value for k in decorator.keywords} if isinstance(decorator, ast.Call) else {}
                    explicit_off = isinstance(keywords.get("capture_response"), ast.Constant) and keywords["capture_response"].value is False
                    traced.append((node.name, explicit_off))
    assert traced and all(off for _, off in traced), traced


# ---- OPTIONS without CORS ----

def test_options_without_cors_reveals_nothing(api):
    module, _, _ = api
    assert not module._cors_origin  # unset, or "" as the template's default sets it: CORS off either way
    for path in ("/b32", "/v1/embeddings", "/anything"):
        event = api_event(path, body=None)
        event["httpMethod"] = event["requestContext"]["httpMethod"] = "OPTIONS"
        event["headers"].pop("x-api-key", None)
        status, headers, body = call(module, event)
        assert status in (403, 404)
        text = json.dumps(body)
        assert "b32" not in text and "l14" not in text and "embeddings" not in text, text
        assert "access-control-allow-origin" not in headers


# ---- metrics: real EMF lines ----

def emf_blobs(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]


def dimension_sets(blobs: list[dict]) -> dict[str, set[frozenset]]:
    sets: dict[str, set[frozenset]] = {}
    for blob in blobs:
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                sets.setdefault(metric["Name"], set()).update(frozenset(d) for d in directive["Dimensions"])
    return sets


def test_latency_is_the_real_handling_time(api, monkeypatch, capsys):
    import time

    module, runtime, _ = api
    expect_invoke(runtime, "clip-vit-b-32-v3", {"text": "a dog"})
    real_invoke = module.invoke_endpoint

    def slow_invoke(*args, **kwargs):
        time.sleep(0.12)
        return real_invoke(*args, **kwargs)

    monkeypatch.setattr(module, "invoke_endpoint", slow_invoke)
    started = time.monotonic()
    call(module, api_event(body={"text": "a dog"}))
    elapsed_ms = 1000 * (time.monotonic() - started)
    latencies = [value for blob in emf_blobs(capsys.readouterr().out) if "Latency" in blob for value in blob["Latency"]]
    assert len(latencies) == 1
    assert 120 <= latencies[0] <= elapsed_ms, (latencies, elapsed_ms)


@pytest.mark.parametrize("service_env", [None, "clip-embedding-api-clip-vit-b-32"])
def test_every_metric_has_one_dimension_set_whatever_the_path(api, monkeypatch, capsys, service_env):
    """The dimension sets alarms must select: the same for success, client errors, 404s and throttles,
    and not changed by POWERTOOLS_SERVICE_NAME (which the template sets to the function's name)."""
    module, runtime, _ = api
    if service_env:
        monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", service_env)
    monkeypatch.setattr("clip_lambdas.api.endpoints.time.sleep", lambda s: None)
    expect_invoke(runtime, "clip-vit-b-32-v3", {"text": "a dog"})
    call(module, api_event(body={"text": "a dog"}))
    call(module, api_event(body={"text": ""}))
    call(module, api_event(raw='{"text": ' + "[" * 5000))
    call(module, api_event("/nope", {"text": "a"}))
    runtime.add_client_error("invoke_endpoint", service_error_code="ThrottlingException", service_message="slow", http_status_code=400)
    call(module, api_event(body={"text": "a dog"}), FakeContext(remaining_ms=1_000))
    blobs = emf_blobs(capsys.readouterr().out)
    sets = dimension_sets(blobs)
    model_service = {frozenset({"model", "service"})}
    assert sets["Requests"] == sets["Latency"] == sets["BatchSize"] == sets["Throttles"] == model_service, sets
    assert sets["Errors"] == {frozenset({"model", "kind", "service"})}, sets
    for blob in blobs:
        assert blob["service"] == "clip-embedding-api" and blob["model"] == "clip-vit-b-32", blob
    assert sum(blob.get("Requests", [0])[0] for blob in blobs) == 5


def test_without_cors_options_never_reaches_the_function():
    """The template half of the same rule: with CorsAllowOrigin empty, API Gateway answers OPTIONS itself."""
    from clip_core.model_config import load_all_model_configs
    from infra.stacks.serving import serving_template

    template = serving_template([c for c in load_all_model_configs() if not c.demo_only])
    assert template["Conditions"]["HasCors"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "CorsAllowOrigin"}, ""]}]}
    options = [r for r in template["Resources"].values() if r["Type"] == "AWS::ApiGateway::Method" and r["Properties"]["HttpMethod"] == "OPTIONS"]
    posts = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::ApiGateway::Method" and r["Properties"]["HttpMethod"] == "POST"]
    assert len(options) == len(posts) >= 3
    for method in options:
        assert method["Condition"] == "HasCors", "an OPTIONS method without CORS reaches the function without an API key"
        assert method["Properties"]["ApiKeyRequired"] is False
    for method in posts:
        assert method["Integration"]["Type"] == "AWS_PROXY" and method["ApiKeyRequired"] is True
    # whichever deployment the stage uses depends only on methods that exist under its own condition
    methods_with_condition = {name: r.get("Condition") for name, r in template["Resources"].items() if r["Type"] == "AWS::ApiGateway::Method"}
    for deployment in (r for r in template["Resources"].values() if r["Type"] == "AWS::ApiGateway::Deployment"):
        for name in deployment.get("DependsOn", []):
            assert methods_with_condition.get(name) in (None, deployment.get("Condition")), (name, deployment.get("Condition"))


def test_the_throttles_alarm_selects_the_dimensions_a_real_emf_line_carries(api, monkeypatch, capsys, b32_config):
    """An alarm whose dimensions differ from the emitted set by one name sees no data, ever: the bake could never fire."""
    from promotion.plan import alarm_specs

    module, runtime, _ = api
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "clip-embedding-api-clip-vit-b-32")  # as the template sets it
    monkeypatch.setattr("clip_lambdas.api.endpoints.time.sleep", lambda s: None)
    runtime.add_client_error("invoke_endpoint", service_error_code="ThrottlingException", service_message="slow", http_status_code=400)
    assert call(module, api_event(body={"text": "a dog"}), FakeContext(remaining_ms=1_000))[0] == 429
    emitted = [blob for blob in emf_blobs(capsys.readouterr().out) if "Throttles" in blob]
    assert len(emitted) == 1
    directive = emitted[0]["_aws"]["CloudWatchMetrics"][0]
    emitted_dimensions = {name: emitted[0][name] for name in directive["Dimensions"][0]}
    alarm = next(a for a in alarm_specs(b32_config, "clip-vit-b-32-v3", "arn:topic") if a["AlarmName"].endswith("-throttles"))
    metric = alarm["Metrics"][0]["MetricStat"]["Metric"]
    assert metric["Namespace"] == directive["Namespace"] and metric["MetricName"] == "Throttles"
    assert {d["Name"]: d["Value"] for d in metric["Dimensions"]} == emitted_dimensions
