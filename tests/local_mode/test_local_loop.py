"""End to end: `clip-api local up` as a user runs it, the stable URLs, a second approval under traffic, a failed promotion."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import numpy as np
import pytest

from clip_core.names import POINTER_TABLE
from promotion.pointer import read_pointer
from tests.conftest import REPO_ROOT, free_port


def post(url: str, payload: dict, timeout: float = 60) -> tuple[int, dict, object]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


class LocalMode:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.api_port, self.moto_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.lines: list[str] = []
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in [k for k in env if k.startswith("AWS_")]:
            env.pop(name)
        self.env = env
        self.process = subprocess.Popen(
            [sys.executable, "-m", "clip_api.cli", "local", "up", "--models", "clip-tiny", "--approve", "--port", str(self.api_port),
             "--moto-port", str(self.moto_port), "--workdir", str(workdir)],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def state(self) -> dict:
        """local mode's state file: where it serves, its promotions' outcomes, whether it is ready ({} before it is written)."""
        try:
            return json.loads((self.workdir / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def wait_until(self, condition, what: str, timeout_s: float = 300):
        """Poll `condition()` until it answers something true, and return that."""
        deadline = time.monotonic() + timeout_s
        while not (answer := condition()):
            assert self.process.poll() is None, "local mode exited:\n" + "\n".join(self.lines[-40:])
            assert time.monotonic() < deadline, f"not {what} within {timeout_s} s:\n" + "\n".join(self.lines[-40:])
            time.sleep(0.2)
        return answer

    def promotions(self) -> list[dict]:
        return self.state().get("promotions", [])

    def wait_for_promotions(self, count: int) -> list[dict]:
        """The outcomes of the first `count` promotions, once the workflow has ended for each."""
        return self.wait_until(lambda: len(self.promotions()) >= count and self.promotions(), f"{count} promotions ended")

    def cli(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "clip_api.cli", "local", *args, "--workdir", str(self.workdir)],
                                cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return result.stdout

    def control_plane(self, service: str):
        return boto3.client(service, endpoint_url=f"http://127.0.0.1:{self.moto_port}", region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local")


@pytest.fixture(scope="module")
def local_mode(tmp_path_factory):
    mode = LocalMode(tmp_path_factory.mktemp("local-mode"))
    try:
        mode.wait_until(lambda: mode.state().get("ready"), "serving")
        yield mode
    finally:
        if mode.process.poll() is None:
            subprocess.run([sys.executable, "-m", "clip_api.cli", "local", "down", "--workdir", str(mode.workdir)], cwd=REPO_ROOT, env=mode.env)
            try:
                mode.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                mode.process.kill()


def test_stable_url_serves_open_clip_embeddings(local_mode, tiny_reference, probe_images):
    status, headers, vector = post(f"{local_mode.api}/tiny", {"text": "a photo of a dog"})
    assert status == 200 and len(vector) == 64
    assert abs(np.linalg.norm(vector) - 1) < 1e-5
    reference = tiny_reference.embed_texts(["a photo of a dog"])[0]
    assert float(np.dot(vector, reference)) >= 0.99999
    photo = next(p for p in probe_images if p.name == "photo-chelsea.png")
    status, _, vector = post(f"{local_mode.api}/tiny", {"image": base64.b64encode(photo.data).decode()})
    assert status == 200 and float(np.dot(vector, tiny_reference.embed_images([photo.data])[0])) >= 0.99999
    status, _, vectors = post(f"{local_mode.api}/tiny", {"texts": ["a dog", "a cat"]})
    assert status == 200 and np.array(vectors).shape == (2, 64)
    status, _, body = post(f"{local_mode.api}/v1/embeddings", {"model": "clip-tiny", "input": ["a dog"]})
    assert status == 200 and len(body["data"][0]["embedding"]) == 64
    status, _, body = post(f"{local_mode.api}/tiny", {"image": base64.b64encode(b"not an image").decode()})
    assert status == 400 and body["error"]["code"] == "not_an_image"  # answered by the inference server, passed through


def test_second_approval_switches_without_failed_requests(local_mode):
    _, headers, _ = post(f"{local_mode.api}/tiny", {"text": "warm"})
    first_version = headers["X-Clip-Version"]
    promoted = len(local_mode.promotions())
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            status, headers, _ = post(f"{local_mode.api}/tiny", {"text": "a photo of a dog"})
            results.append((status, headers.get("X-Clip-Version", "")))

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        built = json.loads(local_mode.cli("build", "clip-tiny", "--param", "Variant=int8"))
        assert built["status"] == "Succeeded" and built["model_package_arn"].endswith("/2")
        local_mode.cli("approve", "clip-tiny", "2")
        outcome = local_mode.wait_for_promotions(promoted + 1)[-1]
        assert outcome["status"] == "SUCCEEDED" and outcome["endpoint"] == "clip-tiny-v2", outcome
        deadline = time.monotonic() + 30
        while not any(version != first_version for _, version in results[-3:]) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=60)
    statuses = [status for status, _ in results]
    assert len(results) > 20 and statuses.count(200) == len(statuses), f"failed requests during the switch: {[s for s in statuses if s != 200]}"
    versions = [version for _, version in results]
    assert versions[0] == first_version and versions[-1] != first_version
    pointer = read_pointer(local_mode.control_plane("dynamodb"), POINTER_TABLE, "clip-tiny", consistent=True)
    assert pointer.endpoint_name == "clip-tiny-v2" and pointer.version == 2


def test_failed_promotion_reports_why_and_the_old_version_keeps_serving(local_mode):
    _, headers, _ = post(f"{local_mode.api}/tiny", {"text": "before"})
    serving = headers["X-Clip-Version"]
    sagemaker, s3 = local_mode.control_plane("sagemaker"), local_mode.control_plane("s3")
    bucket = s3.list_buckets()["Buckets"][0]["Name"] if len(s3.list_buckets()["Buckets"]) == 1 else next(
        b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith("clip-embedding-api-"))
    s3.put_object(Bucket=bucket, Key="broken/model.tar.gz", Body=b"this is not a model artifact")
    arn = sagemaker.create_model_package(
        ModelPackageGroupName="clip-tiny", ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={"Containers": [{"Image": "serve:latest", "ModelDataUrl": f"s3://{bucket}/broken/model.tar.gz",
                                                "Environment": {"CLIP_API_MANIFEST_SHA256": "0" * 64}}],
                                "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]},
        CustomerMetadataProperties={"space": headers["X-Clip-Space"]},  # claims the serving space; its container never starts
    )["ModelPackageArn"]
    promoted = len(local_mode.promotions())
    local_mode.cli("approve", "clip-tiny", arn.rsplit("/", 1)[1])
    failure = local_mode.wait_for_promotions(promoted + 1)[-1]
    assert failure["package_arn"] == arn and failure["status"] == "FAILED", failure
    assert failure["reason"].startswith("rolled back") and "SmokeTestFailed" in failure["reason"] and "previous version keeps serving" in failure["reason"]
    status, headers, _ = post(f"{local_mode.api}/tiny", {"text": "after"})
    assert status == 200 and headers["X-Clip-Version"] == serving
    assert sagemaker.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Rejected"


def pinned_post(url: str, payload: dict, space: str) -> tuple[int, dict, object]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json", "X-Clip-Space": space})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_embedding_spaces_never_move_the_stable_url_unless_adopted(local_mode):
    """Issue 17 in local mode: the int8 build of v1's weights switched the stable URL (same space); other
    weights (another seed) are served to clients that pin their space only; adopting that space moves the
    stable URL, and clients pinning the old space keep getting old-space vectors."""
    sagemaker = local_mode.control_plane("sagemaker")
    spaces = {p["ModelPackageVersion"]: sagemaker.describe_model_package(ModelPackageName=p["ModelPackageArn"]).get("CustomerMetadataProperties", {}).get("space")
              for p in sagemaker.list_model_packages(ModelPackageGroupName="clip-tiny")["ModelPackageSummaryList"]}
    assert spaces[1] and spaces[1] == spaces[2]  # fp32 (v1) and int8 (v2) of one set of weights: one space, and v2 took the stable URL
    old_space = spaces[1]
    _, headers, old_vector = post(f"{local_mode.api}/tiny", {"text": "a photo of a dog"})
    stable_version = headers["X-Clip-Version"]
    assert headers["X-Clip-Space"] == old_space

    promoted = len(local_mode.promotions())
    other = json.loads(local_mode.cli("build", "clip-tiny", "--param", "RandomInitSeed=1"))
    assert other["status"] == "Succeeded"
    other_version = int(other["model_package_arn"].rsplit("/", 1)[1])
    local_mode.cli("approve", "clip-tiny", str(other_version))
    own_space = local_mode.wait_for_promotions(promoted + 1)[-1]
    assert own_space["status"] == "SUCCEEDED" and "re-embed" in own_space["reason"], own_space
    status, headers, _ = post(f"{local_mode.api}/tiny", {"text": "a photo of a dog"})
    assert status == 200 and (headers["X-Clip-Version"], headers["X-Clip-Space"]) == (stable_version, old_space)  # did not move
    new_space = sagemaker.describe_model_package(ModelPackageName=other["model_package_arn"])["CustomerMetadataProperties"]["space"]
    status, headers, new_vector = pinned_post(f"{local_mode.api}/tiny", {"text": "a photo of a dog"}, new_space)
    assert status == 200 and headers["X-Clip-Space"] == new_space and new_space != old_space and float(np.dot(old_vector, new_vector)) < 0.99
    status, _, body = pinned_post(f"{local_mode.api}/tiny", {"text": "a photo of a dog"}, "0123456789ab")
    assert status == 409 and body["error"]["code"] == "space_unavailable" and old_space in body["error"]["message"]

    adopted = json.loads(local_mode.cli("build", "clip-tiny", "--param", "RandomInitSeed=1"))
    local_mode.cli("approve", "clip-tiny", adopted["model_package_arn"].rsplit("/", 1)[1], "--adopt-space")
    assert local_mode.wait_for_promotions(promoted + 2)[-1]["status"] == "SUCCEEDED"
    status, headers, vector = post(f"{local_mode.api}/tiny", {"text": "a photo of a dog"})
    assert status == 200 and headers["X-Clip-Space"] == new_space and vector == new_vector  # the stable URL moved
    status, headers, vector = pinned_post(f"{local_mode.api}/tiny", {"text": "a photo of a dog"}, old_space)
    assert status == 200 and headers["X-Clip-Space"] == old_space and vector == old_vector  # pinned: the old space, until the grace ends
