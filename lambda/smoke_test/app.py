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
from botocore.exceptions import BotoCoreError, ClientError

from clip_api.s3_uri import split_s3_uri
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

    @classmethod
    def from_plan(cls, plan: dict) -> "SmokeTestRequest":
        """What the workflow's SmokeTest task sends (promotion/state_machine.py), for local mode's in-process run."""
        return cls(endpoint_name=plan["endpoint_name"], model_id=plan["model_id"], version=plan["version"], smoke_test_uri=plan["smoke_test_uri"],
                   min_cosine=plan["smoke_min_cosine"], compare_endpoint=plan["compare_endpoint"], require_agreement=plan["require_agreement"],
                   min_agreement=plan["min_agreement"])


def load_cases(s3, uri: str) -> list[dict]:
    if not uri.startswith("s3://"):
        return []
    bucket, key = split_s3_uri(uri)
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["cases"]


def run_smoke_test(request: SmokeTestRequest, s3, runtime) -> smoke.SmokeResult:
    try:
        cases = load_cases(s3, request.smoke_test_uri)
    except (ClientError, BotoCoreError, ValueError, KeyError) as error:
        return smoke.SmokeResult(False, f"could not read the smoke-test references: {type(error).__name__}", 0.0)
    try:
        answers = _answers(runtime, request.endpoint_name, cases)
    except _Failed as failed:
        return smoke.SmokeResult(False, str(failed), 0.0)
    result = smoke.evaluate(cases, answers, request.min_cosine)
    if not request.compare_endpoint or not result.passed:
        return result
    try:
        serving = _answers(runtime, request.compare_endpoint, cases)
    except _Failed as failed:  # the serving endpoint failing says nothing against the new one, unless agreement is required
        if request.require_agreement:
            return smoke.SmokeResult(False, f"could not compare with {request.compare_endpoint}: {failed}", result.min_cosine)
        return smoke.SmokeResult(True, f"{result.reason}; not compared with {request.compare_endpoint}: {failed}", result.min_cosine)
    measured = smoke.agreement(answers, serving)
    return smoke.judge_agreement(result, measured, request.require_agreement, request.min_agreement, request.compare_endpoint)


class _Failed(Exception):
    pass


def _answers(runtime, endpoint: str, cases: list[dict]) -> list:
    answers = []
    for index, case in enumerate(cases):
        try:
            response = runtime.invoke_endpoint(EndpointName=endpoint, ContentType="application/json",
                                               Accept="application/json", Body=json.dumps(case["request"]))
            answers.append(json.loads(response["Body"].read()))
        except (ClientError, BotoCoreError, ValueError) as error:
            raise _Failed(f"request {index} to {endpoint} failed: {type(error).__name__}: {str(error)[:200]}") from None
    return answers


@logger.inject_lambda_context
@event_parser(model=SmokeTestRequest)
def handler(event: SmokeTestRequest, context: LambdaContext) -> dict:
    result = run_smoke_test(event, boto3.client("s3"), boto3.client("sagemaker-runtime"))
    logger.info("smoke test", extra={"endpoint": event.endpoint_name, **result.to_dict()})
    return result.to_dict()
