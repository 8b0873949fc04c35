"""The local control plane (moto on loopback) serves this machine's clients, never a web page in the user's browser."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import boto3
import pytest

from local_mode.control_plane import ControlPlane
from tests.conftest import free_port


@pytest.fixture(scope="module")
def control_plane():
    environment = dict(os.environ)
    plane = ControlPlane(free_port()).start()
    try:
        assert dict(os.environ) == environment  # its clients are given its URL (ControlPlane.session), never through our environment
        yield plane
    finally:
        plane.stop()


def request(plane, method: str, headers: dict, host: str | None = None) -> tuple[int, dict, bytes]:
    """A browser-shaped call: the SageMaker approval a hostile page would try."""
    body = json.dumps({"ModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/clip-tiny/1", "ModelApprovalStatus": "Approved"}).encode()
    request = urllib.request.Request(plane.url + "/", data=body if method == "POST" else None, method=method, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "SageMaker.UpdateModelPackage",
        "Authorization": "AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/sagemaker/aws4_request, SignedHeaders=host, Signature=x", **headers})
    if host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.mark.parametrize("method, headers, host", [
    ("OPTIONS", {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,x-amz-target,authorization"}, None),
    ("POST", {"Origin": "https://evil.example"}, None),
    ("POST", {"Origin": "null"}, None),
    ("POST", {"Origin": "http://127.0.0.1:1"}, None),
    ("POST", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}, None),
    ("POST", {}, "rebound.evil.example"),
])
def test_cross_origin_requests_are_refused(control_plane, method, headers, host):
    status, response_headers, body = request(control_plane, method, headers, host)
    assert status == 403, body
    assert not any(k.lower().startswith("access-control-allow") for k in response_headers), response_headers
    assert b"cross-origin" in body


def test_this_machines_clients_still_work(control_plane):
    sts = boto3.client("sts", endpoint_url=control_plane.url, region_name="us-east-1", aws_access_key_id="local", aws_secret_access_key="local")
    assert sts.get_caller_identity()["Account"] == "123456789012"
    session = control_plane.session({"sagemaker-runtime": "http://127.0.0.1:1"})
    assert session.client("sts").get_caller_identity()["Account"] == "123456789012"
    assert session.client("sagemaker-runtime").meta.endpoint_url == "http://127.0.0.1:1"  # a service named apart: its own endpoint
    s3 = boto3.client("s3", endpoint_url=control_plane.url, region_name="us-east-1", aws_access_key_id="local", aws_secret_access_key="local")
    s3.create_bucket(Bucket="origin-test")
    s3.put_object(Bucket="origin-test", Key="k", Body=b"v")
    assert s3.get_object(Bucket="origin-test", Key="k")["Body"].read() == b"v"
    status, _, _ = request(control_plane, "POST", {"Origin": control_plane.url, "Sec-Fetch-Site": "same-origin"})
    assert status != 403  # the control plane's own origin (moto answers the call itself)
