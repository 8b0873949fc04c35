"""Smoke-test Lambda: replay the validated requests against the new endpoint and compare embeddings.

Input: {"endpoint_name", "model_id", "version", "smoke_test_uri", "min_cosine", "compare_endpoint",
"require_agreement", "min_agreement"}: with a compare_endpoint, the same requests go to it too and
the two endpoints' embeddings are compared (the embedding-space gate, promotion/smoke.py).
Output: {"passed": bool, "reason": str, "min_cosine": float}: a failed comparison is a result,
not an error, so the workflow can say why it rolled back.
"""

from __future__ import annotations

import json

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser import BaseModel, event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from clip_core import smoke_cases
from clip_core.s3_uri import split_s3_uri
from inference_code.contract import decode_attributes
from promotion import smoke

logger = Logger(service="clip-smoke-test")


class SmokeTestRequest(BaseModel):
    endpoint_name: str
    model_id: str
    version: int
    smoke_test_uri: str
    min_cosine: float
    compare_endpoint: str = ""
    require_agreement: bool = False
    min_agreement: float = 0.99
    space: str = ""  # the package's declared embedding space: the endpoint must report the same

    @classmethod
    def from_plan(cls, plan: dict) -> "SmokeTestRequest":
        """What the workflow's SmokeTest task sends (promotion/state_machine.py), for local mode's in-process run."""
        return cls(endpoint_name=plan["endpoint_name"], model_id=plan["model_id"], version=plan["version"], smoke_test_uri=plan["smoke_test_uri"],
                   min_cosine=plan["smoke_min_cosine"], compare_endpoint=plan["compare_endpoint"], require_agreement=plan["require_agreement"],
                   min_agreement=plan["min_agreement"], space=plan["space"])


def load_cases(s3, uri: str) -> list[dict]:
    if not uri.startswith("s3://"):
        return []
    bucket, key = split_s3_uri(uri)
    return smoke_cases.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


COMPARE_MIN_REMAINING_MS = 30_000  # the comparison is skipped (and said) when less of the Lambda's time is left


def run_smoke_test(request: SmokeTestRequest, s3, runtime, remaining_ms=lambda: float("inf")) -> smoke.SmokeResult:
    try:
        cases = load_cases(s3, request.smoke_test_uri)
    except (ClientError, BotoCoreError, ValueError, KeyError) as error:
        return smoke.SmokeResult(False, f"could not read the smoke-test references: {type(error).__name__}", 0.0)
    try:
        answers, reported = _answers(runtime, request.endpoint_name, cases)
    except _Failed as failed:
        return smoke.SmokeResult(False, str(failed), 0.0)
    if request.space and reported != {request.space}:
        # The container computes its space from its own (integrity-checked) manifest: a package label that
        # disagrees would send pinned clients vectors of another space.
        return smoke.SmokeResult(False, f"the endpoint reports embedding space {', '.join(sorted(reported)) or 'none'}, "
                                        f"but the package declares {request.space}", 0.0)
    result = smoke.evaluate(cases, answers, request.min_cosine)
    if not request.compare_endpoint or not result.passed:
        return result
    if remaining_ms() < COMPARE_MIN_REMAINING_MS:
        return smoke.SmokeResult(True, f"{result.reason}; not compared with {request.compare_endpoint}: too little time left", result.min_cosine)
    try:
        serving, _ = _answers(runtime, request.compare_endpoint, cases)
    except _Failed as failed:
        # A failing serving endpoint is when a fixed build of its space is needed most: the new one matched its own
        # validated references and reports the declared space, so it is not held back; the reason says why.
        return smoke.SmokeResult(True, f"{result.reason}; not compared with {request.compare_endpoint}: {failed}", result.min_cosine)
    measured = smoke.agreement(answers, serving)
    return smoke.judge_agreement(result, measured, request.require_agreement, request.min_agreement, request.compare_endpoint)


class _Failed(Exception):
    pass


def _answers(runtime, endpoint: str, cases: list[dict]) -> tuple[list, set[str]]:
    """The endpoint's parsed answers, and the embedding spaces its custom attributes reported."""
    answers, spaces = [], set()
    for index, case in enumerate(cases):
        try:
            response = runtime.invoke_endpoint(EndpointName=endpoint, ContentType="application/json",
                                               Accept="application/json", Body=json.dumps(case["request"]))
            answers.append(json.loads(response["Body"].read()))
        except (ClientError, BotoCoreError, ValueError) as error:
            raise _Failed(f"request {index} to {endpoint} failed: {type(error).__name__}: {str(error)[:200]}") from None
        spaces.add(decode_attributes(response.get("CustomAttributes", "")).get("space", ""))
    return answers, spaces - {""}


@logger.inject_lambda_context
@event_parser(model=SmokeTestRequest)
def handler(event: SmokeTestRequest, context: LambdaContext) -> dict:
    # a cold compare endpoint must not run the function past its timeout: short reads, few retries, a time check
    runtime = boto3.client("sagemaker-runtime", config=Config(connect_timeout=5, read_timeout=25, retries={"total_max_attempts": 2}))
    result = run_smoke_test(event, boto3.client("s3"), runtime, context.get_remaining_time_in_millis)
    logger.info("smoke test", extra={"endpoint": event.endpoint_name, **result.to_dict()})
    return result.to_dict()
