"""Smoke-test comparison and the smoke-test Lambda against stubbed SageMaker runtime answers."""

from __future__ import annotations

import base64
import io
import json
import math

import boto3
import numpy as np
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from clip_core import smoke_cases
from promotion import smoke
from clip_lambdas.smoke_test.app import SmokeTestRequest, run_smoke_test

UNIT = [1.0, 0.0, 0.0]
CASES = [{"request": {"text": "a dog"}, "expected": UNIT}, {"request": {"text": "a cat"}, "expected": [0.0, 1.0, 0.0]}]


def test_evaluate_passes_identical_answers():
    result = smoke.evaluate(CASES, [UNIT, [0.0, 1.0, 0.0]], 0.999)
    assert result.passed and result.min_cosine == pytest.approx(1.0)


@pytest.mark.parametrize(
    "answers, fragment",
    [
        ([UNIT, [math.sqrt(0.5), math.sqrt(0.5), 0.0]], "min cosine 0.707"),
        ([UNIT, [0.0, 2.0, 0.0]], "norm 2.0000"),
        ([UNIT, [0.0, 1.0]], "expected a 3-d embedding"),
        ([UNIT, {"error": {"code": "x"}}], "expected a 3-d embedding"),
    ],
)
def test_evaluate_fails_with_a_reason(answers, fragment):
    result = smoke.evaluate(CASES, answers, 0.999)
    assert not result.passed and fragment in result.reason


def test_no_references_fail():
    assert not smoke.evaluate([], [], 0.9).passed


def _body(payload) -> StreamingBody:
    raw = json.dumps(payload).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


@pytest.fixture
def references(moto_aws):
    s3 = boto3.client("s3")
    s3.put_object(Bucket="clip-test-bucket", Key="run/evaluation/smoke_test.json", Body=smoke_cases.dumps(CASES))
    return s3


REQUEST = SmokeTestRequest(endpoint_name="clip-tiny-v1", model_id="clip-tiny", version=1,
                           smoke_test_uri="s3://clip-test-bucket/run/evaluation/smoke_test.json", min_cosine=0.999)


def test_smoke_lambda_invokes_the_endpoint_and_compares(references):
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
    with Stubber(runtime) as stub:
        for case, answer in zip(CASES, [UNIT, [0.0, 1.0, 0.0]]):
            stub.add_response("invoke_endpoint", {"Body": _body(answer), "ContentType": "application/json"},
                              {"EndpointName": "clip-tiny-v1", "ContentType": "application/json", "Accept": "application/json",
                               "Body": json.dumps(case["request"])})
        result = run_smoke_test(REQUEST, references, runtime)
        stub.assert_no_pending_responses()
    assert result.passed, result.reason


def test_smoke_lambda_reports_endpoint_errors(references):
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
    with Stubber(runtime) as stub:
        stub.add_client_error("invoke_endpoint", service_error_code="ModelError", service_message="container crashed", http_status_code=424)
        result = run_smoke_test(REQUEST, references, runtime)
    assert not result.passed and "request 0 to " in result.reason and "failed: ModelError" in result.reason and "container crashed" in result.reason


def test_smoke_lambda_without_references(moto_aws):
    result = run_smoke_test(REQUEST.model_copy(update={"smoke_test_uri": "s3://clip-test-bucket/absent.json"}), boto3.client("s3"), None)
    assert not result.passed and "could not read" in result.reason


def test_validation_writes_smoke_references_that_open_clip_computes(tiny_fp32, tiny_config, tiny_reference, tmp_path):
    """The references Validate writes (what the packaged ONNX serving code answered) against an independent
    implementation: open_clip in torch fp32 eager on the same seeded weights, embedding the same requests."""
    from model_validation.validate import validate_artifact

    result = validate_artifact(tiny_fp32.directory, tiny_config)
    result.write(tmp_path / "evaluation.json")
    cases = json.loads((tmp_path / smoke_cases.SMOKE_FILE).read_text())["cases"]
    assert [c["request"].get("text") for c in cases[:3]] == list(smoke_cases.SMOKE_TEXTS) and list(cases[3]["request"]) == ["image"]
    texts = [c["request"]["text"] for c in cases[:3]]
    reference = np.concatenate([tiny_reference.embed_texts(texts), tiny_reference.embed_images([base64.b64decode(cases[3]["request"]["image"])])])
    expected_by_open_clip = [{"request": c["request"], "expected": vector.tolist()} for c, vector in zip(cases, reference)]
    written = [c["expected"] for c in cases]
    agreement = smoke.evaluate(expected_by_open_clip, written, tiny_config.parity_threshold("fp32"))  # unit norm, each one's own cosine
    assert agreement.passed, agreement.reason


TILTED = [[0.99, math.sqrt(1 - 0.99**2), 0.0], [0.0, 1.0, 0.0]]  # the first answer 0.99 away from the validated one


def _compared(references, serving_answers, require: bool, serving_error: bool = False):
    """The new endpoint answers exactly as validated; the serving one as given (or fails)."""
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
    request = REQUEST.model_copy(update={"compare_endpoint": "clip-tiny-v0", "require_agreement": require, "min_agreement": 0.992})
    with Stubber(runtime) as stub:
        for case, answer in zip(CASES, [UNIT, [0.0, 1.0, 0.0]]):
            stub.add_response("invoke_endpoint", {"Body": _body(answer)}, {"EndpointName": "clip-tiny-v1", "ContentType": "application/json",
                                                                          "Accept": "application/json", "Body": json.dumps(case["request"])})
        if serving_error:
            stub.add_client_error("invoke_endpoint", service_error_code="ModelError", http_status_code=424)
        else:
            for case, answer in zip(CASES, serving_answers):
                stub.add_response("invoke_endpoint", {"Body": _body(answer)}, {"EndpointName": "clip-tiny-v0", "ContentType": "application/json",
                                                                              "Accept": "application/json", "Body": json.dumps(case["request"])})
        result = run_smoke_test(request, references, runtime)
        stub.assert_no_pending_responses()
    return result


def test_a_version_declaring_the_serving_space_must_embed_like_the_serving_endpoint(references):
    agreeing = _compared(references, [UNIT, [0.0, 1.0, 0.0]], require=True)
    assert agreeing.passed and "agreement with clip-tiny-v0: min cosine 1.000000" in agreeing.reason
    disagreeing = _compared(references, TILTED, require=True)
    assert not disagreeing.passed and "declares the embedding space of clip-tiny-v0" in disagreeing.reason and "0.990000" in disagreeing.reason


def test_a_version_of_another_space_only_reports_the_agreement(references):
    result = _compared(references, TILTED, require=False)
    assert result.passed and "min cosine 0.990000" in result.reason
    assert _compared(references, None, require=False, serving_error=True).passed  # the old endpoint failing is no fault of the new one


def test_a_failing_endpoint_of_the_same_space_does_not_hold_back_its_fix(references):
    result = _compared(references, None, require=True, serving_error=True)
    assert result.passed and "not compared with clip-tiny-v0" in result.reason


def _answering(references, attributes: str, space: str):
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
    with Stubber(runtime) as stub:
        for case, answer in zip(CASES, [UNIT, [0.0, 1.0, 0.0]]):
            stub.add_response("invoke_endpoint", {"Body": _body(answer), "CustomAttributes": attributes},
                              {"EndpointName": "clip-tiny-v1", "ContentType": "application/json", "Accept": "application/json",
                               "Body": json.dumps(case["request"])})
        return run_smoke_test(REQUEST.model_copy(update={"space": space}), references, runtime)


def test_the_endpoint_must_report_the_space_its_package_declares(references):
    assert _answering(references, "model=m;version=v;variant=int8;space=aaaaaaaaaaaa;truncated=none", "aaaaaaaaaaaa").passed
    mislabelled = _answering(references, "model=m;version=v;variant=int8;space=bbbbbbbbbbbb;truncated=none", "aaaaaaaaaaaa")
    assert not mislabelled.passed and "reports embedding space bbbbbbbbbbbb" in mislabelled.reason
    assert not _answering(references, "model=m;version=v;variant=int8;truncated=none", "aaaaaaaaaaaa").passed  # says none


def test_the_comparison_is_skipped_and_said_when_the_lambda_is_short_of_time(references):
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
    request = REQUEST.model_copy(update={"compare_endpoint": "clip-tiny-v0", "require_agreement": True})
    with Stubber(runtime) as stub:
        for case, answer in zip(CASES, [UNIT, [0.0, 1.0, 0.0]]):
            stub.add_response("invoke_endpoint", {"Body": _body(answer)}, {"EndpointName": "clip-tiny-v1", "ContentType": "application/json",
                                                                          "Accept": "application/json", "Body": json.dumps(case["request"])})
        result = run_smoke_test(request, references, runtime, remaining_ms=lambda: 10_000)
        stub.assert_no_pending_responses()  # the serving endpoint was not called
    assert result.passed and "too little time left" in result.reason
