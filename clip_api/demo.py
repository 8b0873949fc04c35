"""`clip-api demo`: package a model offline, serve it on the container contract, send example requests.

Pretrained weights are used when they can be had; on a machine without network the tiny model
(or, with --random-weights, the full-size architecture at random init) is served instead, and the
output says so.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from clip_api.model_config import load_model_config

DEFAULT_DIR = Path(".artifacts/demo")


def _post(url: str, payload: dict) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _wait(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the inference server exited during start-up")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s:g} s")


def package_for_demo(model_id: str, out_dir: Path, random_weights: bool):
    from model_build.package import package_model
    from model_build.weights import WeightsSource, WeightsUnavailableError

    config = load_model_config(model_id)
    if config.demo_only or random_weights:
        source = WeightsSource("random")
    else:
        source = WeightsSource("pretrained")
    try:
        return package_model(config, out_dir / model_id, source)
    except WeightsUnavailableError as exc:
        print(f"! {exc}\n! falling back, as asked for a demo: the tiny random-init model (demo only)", file=sys.stderr)
        return package_model(load_model_config("clip-tiny"), out_dir / "clip-tiny", WeightsSource("random"))


def run_demo(model_id: str = "clip-tiny", port: int = 8080, out_dir: Path = DEFAULT_DIR, random_weights: bool = False, keep_serving: bool = False) -> int:
    from model_build.probes import probe_images

    print(f"1. packaging {model_id} into {out_dir} (offline)")
    result = package_for_demo(model_id, out_dir, random_weights)
    manifest = result.manifest
    print(f"   {manifest.model_id} version {manifest.version}, {manifest.variant}, weights: {manifest.weights.source}")
    print(f"2. serving {result.artifact} on http://127.0.0.1:{port} (GET /ping, POST /invocations)")
    server = subprocess.Popen([sys.executable, "-m", "inference_code", "serve", "--model-dir", str(result.artifact), "--host", "127.0.0.1", "--port", str(port)])
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(base + "/ping", server)
        print("3. example requests")
        status, body = _post(base + "/invocations", {"text": "a photo of a dog"})
        vector = json.loads(body)
        print(f'   POST {{"text": "a photo of a dog"}} -> {status}, {len(vector)} floats, first {[round(v, 4) for v in vector[:4]]}')
        photo = probe_images()[0]
        status, body = _post(base + "/invocations", {"image": base64.b64encode(photo.data).decode()})
        print(f"   POST {{\"image\": <base64 {photo.name}>}} -> {status}, {len(json.loads(body))} floats")
        status, body = _post(base + "/invocations", {"text": ""})
        print(f'   POST {{"text": ""}} -> {status} {body.decode()}')
        print(f"   try: curl -s -X POST {base}/invocations -H 'Content-Type: application/json' -d '{{\"text\": \"a cat\"}}'")
        if keep_serving:
            print("serving until Ctrl-C")
            server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.terminate()
        server.wait(timeout=20)
    return 0
