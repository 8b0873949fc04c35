"""`clip-api local up` with pretrained weights, offline: the stand-in hub serves the pinned TEST checkpoint, and
the demo downloads it with a progress bar, verifies it, builds it through the pipeline's local runner (first-use
golden references, the gate), promotes it and serves it at the stable URL, then prints a zero-shot example.
The same code path `make demo` takes on a networked machine with clip-vit-b-32."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, free_port
from tests.model_build.standin_hub import STANDIN_MODEL_ID
from tests.model_build.test_standin_hub import standin, standin_state  # noqa: F401  (session fixtures)


def ready(state_file) -> bool:
    try:
        return json.loads(state_file.read_text()).get("ready", False)
    except (OSError, ValueError):
        return False


def test_demo_serves_verified_pretrained_weights_through_the_stable_url(standin, tmp_path):  # noqa: F811
    api_port, moto_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"PYTHONUNBUFFERED": "1", "CLIP_API_CONFIGS_DIR": str(standin.configs), "CLIP_API_WEIGHTS_CACHE": str(tmp_path / "cache"),
                "CLIP_API_PROGRESS": "1"})
    command = [sys.executable, "-m", "clip_api.cli", "local", "up", "--models", STANDIN_MODEL_ID, "--approve", "--port", str(api_port),
               "--moto-port", str(moto_port), "--workdir", str(tmp_path / "local")]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(line.rstrip()) for line in process.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + 400
        while not ready(tmp_path / "local" / "state.json"):  # set once the first promotion served the example requests
            assert process.poll() is None, "local mode exited:\n" + "\n".join(lines[-40:])
            assert time.monotonic() < deadline, "\n".join(lines[-40:])
            time.sleep(0.5)
        output = "\n".join(lines)
        assert "weights: the files the model configs pin, verified by sha256" in output
        assert f"downloading {standin.url}" in output and f"sha256 {standin.sha} verified" in output
        assert "/6.84M [" in output  # the progress bar: size, elapsed<ETA, speed
        assert "(weights: pretrained)" in output and "first-use references computed now" in output
        assert f"http://127.0.0.1:{api_port}/standin" in output
        word = next(line for line in lines if "rendered word" in line and "%" in line)
        assert word.split(": ", 1)[1].startswith("'a photo of the word \"guitar\"'"), word  # the top label is the word shown

        request = urllib.request.Request(f"http://127.0.0.1:{api_port}/standin", data=json.dumps({"text": "a photo of a dog"}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            vector = np.asarray(json.loads(response.read()))
        from model_build.reference import OpenClipReference
        from model_build.weights import build_model, WeightsSource

        os.environ["CLIP_API_WEIGHTS_CACHE"] = str(tmp_path / "cache")  # the file the demo downloaded and verified
        try:
            built = build_model(standin.config, WeightsSource("pretrained"))
        finally:
            del os.environ["CLIP_API_WEIGHTS_CACHE"]
        expected = OpenClipReference(built.model, built.architecture).embed_texts(["a photo of a dog"])[0]
        assert vector.shape == (64,) and float(vector @ expected) >= 0.99999
    finally:
        subprocess.run([sys.executable, "-m", "clip_api.cli", "local", "down", "--workdir", str(tmp_path / "local")], cwd=REPO_ROOT, env=env)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
