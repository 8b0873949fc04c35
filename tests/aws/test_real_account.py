"""The real-account acceptance run (`make aws-acceptance`): skipped unless CLIP_API_AWS_TESTS=1 and credentials are set.

It deploys into the account and region of your credentials, which must hold no clip-embedding-api
deployment, and deletes everything at the end, whatever happened. Its offline twins: local mode
(tests/local_mode) for the loop, tests/infra/test_acceptance.py for the preflight, teardown and
cost estimate. Before running: push the two images and export CLIP_API_SERVING_IMAGE and
CLIP_API_PROCESSING_IMAGE (README, "Deploy to AWS").
"""

from __future__ import annotations

import os
import time

import pytest

pytestmark = [
    pytest.mark.aws,
    pytest.mark.skipif(os.environ.get("CLIP_API_AWS_TESTS") != "1", reason="needs a real AWS account: set CLIP_API_AWS_TESTS=1 with credentials"),
]


def test_deploy_build_approve_serve_switch_and_tear_down():
    import boto3

    from clip_core.model_config import load_model_config
    from infra import acceptance
    from infra.deploy import deploy

    for name in ("CLIP_API_SERVING_IMAGE", "CLIP_API_PROCESSING_IMAGE"):
        assert os.environ.get(name), f"push the images and export {name} first (README, Deploy to AWS)"
    session = boto3.Session()
    problems = acceptance.preflight(session)
    assert not problems, "\n".join(problems)
    usage, started = acceptance.Usage(), time.monotonic()
    tiny = load_model_config(acceptance.MODEL_ID).model_copy(update={"demo_only": False})
    try:
        deploy(session, (tiny.model_id,), configs=[tiny])
        post = acceptance.api_client(session)
        first = acceptance.run_pipeline_and_wait(session, {"WeightsSource": "random"}, usage)
        assert acceptance.approve_and_wait(session, first)["status"] == "SUCCEEDED"
        requests = acceptance.seed_requests()
        reference = acceptance.local_embeddings(session, first, requests)
        for payload, expected in zip(requests, reference):
            status, _, served = post(tiny.route, payload)
            usage.requests += 1
            assert status == 200, (status, served)
            assert acceptance.cosine_floor(served, expected) >= acceptance.MIN_COSINE
        second = acceptance.run_pipeline_and_wait(session, {"WeightsSource": "random", "Variant": "int8"}, usage)
        with acceptance.SteadyClient(post, tiny.route) as client:
            assert acceptance.approve_and_wait(session, second)["status"] == "SUCCEEDED"
            time.sleep(10)  # past the API functions' pointer cache
        usage.requests += len(client.statuses)
        assert len(client.statuses) > 10 and client.failures == [], client.failures
    finally:
        left = acceptance.teardown(session)
        usage.serverless_gb_seconds += usage.requests * 0.2 * tiny.endpoint.memory_mb / 1024  # about 0.2 s per invocation
        print(f"acceptance run: {time.monotonic() - started:.0f} s, about ${acceptance.estimate_cost_usd(usage):.2f}; left behind: {left or 'nothing'}")
    assert left == []
