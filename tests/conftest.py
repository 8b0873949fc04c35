"""Shared fixtures: packaged artifacts (built once per session), open_clip references, a live server."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from clip_core.model_config import load_model_config

TESTS_DIR = Path(__file__).parent
REPO_ROOT = TESTS_DIR.parent


@pytest.fixture(scope="session", autouse=True)
def moto_behaves_like_aws_where_we_depend_on_it():
    from local_mode import moto_fixes

    moto_fixes.apply()


@pytest.fixture(scope="session")
def tiny_config():
    return load_model_config("clip-tiny")


@pytest.fixture(scope="session")
def b32_config():
    return load_model_config("clip-vit-b-32")


def _package(tmp_path_factory, config, variant, seed=0, architecture=None, name=None):
    from model_build.package import package_model
    from model_build.progress import Progress
    from model_build.weights_source import RANDOM_INIT, WeightsSource

    out = tmp_path_factory.mktemp(name or f"{config.model_id}-{variant}")
    return package_model(
        config, out, WeightsSource(RANDOM_INIT), variant=variant, seed=seed, architecture=architecture,
        progress=Progress(5, enabled=False),
    )


@pytest.fixture(scope="session")
def package_random(tmp_path_factory):
    """Package any config at seeded random init: package_random(config, variant, seed=0, architecture=None)."""
    return lambda config, variant, **kwargs: _package(tmp_path_factory, config, variant, **kwargs)


@pytest.fixture(scope="session")
def tiny_fp32(package_random, tiny_config):
    return package_random(tiny_config, "fp32")


@pytest.fixture(scope="session")
def tiny_int8(package_random, tiny_config):
    return package_random(tiny_config, "int8")


@pytest.fixture(scope="session")
def b32_fp32(package_random, b32_config):
    return package_random(b32_config, "fp32")


@pytest.fixture(scope="session")
def b32_int8(package_random, b32_config):
    return package_random(b32_config, "int8")


def _reference(config, seed=0):
    from model_build.reference import OpenClipReference
    from model_build.weights import build_model
    from model_build.weights_source import RANDOM_INIT, WeightsSource

    built = build_model(config, WeightsSource(RANDOM_INIT), seed=seed)
    return OpenClipReference(built.model, built.architecture)


@pytest.fixture(scope="session")
def tiny_reference(tiny_config):
    return _reference(tiny_config)


@pytest.fixture(scope="session")
def b32_reference(b32_config):
    return _reference(b32_config)


@pytest.fixture(scope="session")
def probe_texts():
    from model_validation.probes import probe_texts

    return probe_texts()


@pytest.fixture(scope="session")
def probe_images():
    from model_validation.probes import probe_images

    return probe_images()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def tiny_server(tiny_fp32):
    """The BYOC server on the tiny fp32 artifact, in this process (uvicorn in a thread)."""
    import uvicorn

    from inference_code.server import create_app, load_service

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(load_service(tiny_fp32.directory)), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_for_http(base + "/ping")
    yield base
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """No network to the model hub, answered at once (huggingface_hub reads HF_HUB_OFFLINE at import)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hf-cache"


@pytest.fixture
def aws_env(monkeypatch):
    """Fake credentials and a region: nothing can reach a real account."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("CLIP_API_BUCKET", "clip-test-bucket")


@pytest.fixture
def moto_aws(aws_env):
    """moto's in-process AWS with the artifact bucket created."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="clip-test-bucket")
        yield
