"""The artifact runs wherever SageMaker could run it: without torch, inside AWS's PyTorch serving
toolkit, and from an environment that holds nothing but the serving requirements (the Dockerfile's)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from model_build.package import SERVING_FOUNDATION_FILES
from tests.conftest import REPO_ROOT, free_port, wait_for_http


def run_python(code: str, *, python: str = sys.executable, env: dict | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [python, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300, env=env, cwd=cwd
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def test_serving_path_never_imports_torch_or_open_clip(tiny_fp32):
    out = run_python(
        f"""
        import sys, json
        from inference_code.server import create_app, load_service
        from inference_code import sagemaker_handler, __main__
        service = load_service({str(tiny_fp32.directory)!r})
        create_app(service)
        response = service.handle(json.dumps({{"text": "a dog"}}).encode(), "application/json")
        assert response.status == 200
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "open_clip", "torchvision"))))
        """
    )
    assert json.loads(out) == []


def test_artifact_runs_inside_sagemaker_pytorch_inference_handler_service(tiny_fp32):
    """AWS's toolkit loads code/inference.py from the artifact; the packaged serving code answers."""
    artifact = tiny_fp32.directory
    out = run_python(
        f"""
        import json, sys
        sys.path.insert(0, {str(artifact / "code")!r})
        from sagemaker_pytorch_serving_container.handler_service import HandlerService

        class RequestProcessor:
            def __init__(self, headers): self.headers = headers
            def get_request_properties(self): return self.headers

        class Context:
            def __init__(self, headers):
                self.system_properties = {{"model_dir": {str(artifact)!r}, "gpu_id": None}}
                self.request_processor = [RequestProcessor(headers)]
                self.status = 200
                self.content_type = None
            def set_response_status(self, code, phrase): self.status = code
            def set_response_content_type(self, index, content_type): self.content_type = content_type

        json_headers = {{"Content-Type": "application/json", "Accept": "application/json"}}
        service = HandlerService()
        service.initialize(Context(json_headers))
        results = {{}}
        for name, body in [("text", {{"text": "a photo of a dog"}}), ("texts", {{"texts": ["a", "b"]}}), ("bad", {{"text": ""}})]:
            context = Context(json_headers)
            response = service.handle([{{"body": json.dumps(body).encode()}}], context)
            results[name] = {{"status": context.status, "content_type": context.content_type,
                             "body": response[0].decode() if isinstance(response[0], bytes) else response[0]}}
        import inference_code
        results["loaded_from"] = inference_code.__file__
        print(json.dumps(results))
        """
    )
    results = json.loads(out.strip().splitlines()[-1])
    assert results["loaded_from"].startswith(str(artifact / "code"))
    assert results["text"]["status"] == 200 and results["text"]["content_type"] == "application/json"
    assert len(json.loads(results["text"]["body"])) == 64
    assert len(json.loads(results["texts"]["body"])) == 2
    assert results["bad"]["status"] == 400 and "empty_text" in results["bad"]["body"]


@pytest.fixture(scope="module")
def serving_only_python(tmp_path_factory) -> str:
    """A fresh virtual environment holding only inference_code/requirements.lock, installed as the Dockerfile does."""
    env_dir = tmp_path_factory.mktemp("serving-env")
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--require-hashes", "--no-deps", "-r", str(REPO_ROOT / "inference_code" / "requirements.lock")],
        check=True, timeout=900,
    )
    return python


def test_container_entrypoint_serves_from_an_environment_with_only_serving_requirements(
    serving_only_python, tiny_fp32, tmp_path
):
    program = tmp_path / "program"  # like the image's /opt/program: only the serving package
    shutil.copytree(REPO_ROOT / "inference_code", program / "inference_code", ignore=shutil.ignore_patterns("__pycache__"))
    (program / "clip_core").mkdir()
    for name in SERVING_FOUNDATION_FILES:  # what the image copies of the foundation (inference_code/Dockerfile)
        shutil.copy2(REPO_ROOT / "clip_core" / name, program / "clip_core" / name)
    out = run_python("import importlib.util as u; print([m for m in ('torch','open_clip','boto3','sagemaker') if u.find_spec(m)])",
                     python=serving_only_python, cwd=program)
    assert out.strip() == "[]"
    port = free_port()
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(program), "HOME": str(tmp_path)}
    server = subprocess.Popen(
        [serving_only_python, "-m", "inference_code", "serve", "--model-dir", str(tiny_fp32.artifact), "--port", str(port), "--host", "127.0.0.1"],
        cwd=program, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/ping", timeout_s=60)
        from tests.inference_code.test_server import invoke

        status, _, body = invoke(base, {"texts": ["a dog", "a cat"]})
        assert status == 200 and len(json.loads(body)) == 2
        status, _, body = invoke(base, b"{broken", "application/json")
        assert status == 400 and json.loads(body)["error"]["code"] == "malformed_json"
    finally:
        server.terminate()
        server.wait(timeout=20)
