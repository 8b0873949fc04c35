"""`clip-api bench`: latency, throughput, cold start and peak memory through /invocations.

For each model (random init: the compute is the same as for the released weights) it starts, as
fresh processes on this machine, the naive baseline (open_clip torch fp32 eager, its own
tokenizer and transform) and our fp32 and int8 artifacts, sends the same requests to each, and
prints one table with ratios against the baseline measured in the same run. Times are wall-clock
on a shared machine: compare variants within one run.
"""

from __future__ import annotations

import base64
import io
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

WATCHED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
LATENCY_TEXT = "a photo of a dog playing in the snow"


@dataclass
class VariantResult:
    model_id: str
    variant: str
    cold_start_s: float = 0.0
    text_p50_ms: float = 0.0
    text_p95_ms: float = 0.0
    image_p50_ms: float = 0.0
    image_p95_ms: float = 0.0
    images_per_s: dict = field(default_factory=dict)
    texts_per_s: dict = field(default_factory=dict)
    cold_rss_mb: float = 0.0  # peak RSS up to the first image embedding: the loaded, serving footprint
    peak_rss_mb: float = 0.0  # peak RSS after every measurement, batch-32 activations included


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [flag for flag in WATCHED_FLAGS if flag in flags]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def sample_jpeg(size: tuple[int, int]) -> bytes:
    """A real photograph (scikit-image's astronaut) resized to `size`, as JPEG."""
    from model_validation.probes import photographs

    photo = next(p for p in photographs() if p.name == "photo-astronaut.png")
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo.data)).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def post(url: str, payload: bytes) -> float:
    request = urllib.request.Request(url, data=payload, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_server(command: list[str], port: int, first_request: bytes) -> tuple[subprocess.Popen, float]:
    """Start a fresh server process; cold start = process start to the first image embedding."""
    started = time.perf_counter()
    process = subprocess.Popen(command + ["--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited during start: {' '.join(command)}")
        try:
            post(url + "/invocations", first_request)
            return process, time.perf_counter() - started
        except OSError:
            time.sleep(0.02)


def measure(model_id: str, variant: str, command: list[str], port: int, requests: int, batches: tuple[int, ...]) -> VariantResult:
    latency_jpeg = base64.b64encode(sample_jpeg((1024, 768))).decode()
    batch_jpeg = base64.b64encode(sample_jpeg((512, 384))).decode()
    image_body = json.dumps({"image": latency_jpeg}).encode()
    text_body = json.dumps({"text": LATENCY_TEXT}).encode()
    process, cold = start_server(command, port, image_body)
    url = f"http://127.0.0.1:{port}/invocations"
    result = VariantResult(model_id, variant, cold_start_s=cold, cold_rss_mb=peak_rss_mb(process.pid))
    try:
        for _ in range(3):
            post(url, text_body), post(url, image_body)
        text_times = [post(url, text_body) for _ in range(requests)]
        image_times = [post(url, image_body) for _ in range(requests)]
        result.text_p50_ms, result.text_p95_ms = 1000 * statistics.median(text_times), 1000 * percentile(text_times, 0.95)
        result.image_p50_ms, result.image_p95_ms = 1000 * statistics.median(image_times), 1000 * percentile(image_times, 0.95)
        for batch in batches:
            images = json.dumps({"images": [batch_jpeg] * batch}).encode()
            texts = json.dumps({"texts": [f"{LATENCY_TEXT} {i}" for i in range(batch)]}).encode()
            post(url, images)
            result.images_per_s[batch] = batch / min(post(url, images) for _ in range(2))
            result.texts_per_s[batch] = batch / min(post(url, texts) for _ in range(2))
        result.peak_rss_mb = peak_rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return result


def _reusable(artifact_dir: Path) -> bool:
    """A package from an earlier run is reused only if this code would serve it (same manifest schema,
    files, runtime): one made by older code or under another runtime is packaged again."""
    from inference_code.manifest import ArtifactIntegrityError, verify_artifact

    try:
        verify_artifact(artifact_dir)
    except (ArtifactIntegrityError, FileNotFoundError, ValueError, KeyError, TypeError):
        return False
    return True


def run_benchmark(model_ids: list[str], variants: list[str], out_dir: Path, requests: int = 20, batches=(8, 32), port: int = 18080, seed: int = 0) -> list[VariantResult]:
    from clip_core.model_config import load_model_config
    from model_build.package import package_model
    from model_build.weights_source import RANDOM_INIT, WeightsSource

    results = []
    for model_id in model_ids:
        config = load_model_config(model_id)
        for variant in variants:
            if variant == "baseline":
                command = [sys.executable, "-m", "model_benchmark.baseline_server", model_id, "--seed", str(seed)]
            else:
                artifact = out_dir / model_id / variant
                if not _reusable(artifact / "artifact"):
                    print(f"packaging {model_id} {variant} (random init) ...", file=sys.stderr, flush=True)
                    shutil.rmtree(artifact, ignore_errors=True)
                    package_model(config, artifact, WeightsSource(RANDOM_INIT), variant=variant, seed=seed)
                command = [sys.executable, "-m", "inference_code", "serve", "--host", "127.0.0.1", "--model-dir", str(artifact / "artifact")]
            print(f"measuring {model_id} {variant} ...", file=sys.stderr, flush=True)
            results.append(measure(model_id, variant, command, port, requests, batches))
    return results


def render_table(results: list[VariantResult]) -> str:
    baselines = {r.model_id: r for r in results if r.variant == "baseline"}
    lines = [
        f"CPU: {cpu_model()}; instruction sets seen: {', '.join(cpu_flags()) or 'none of ' + ', '.join(WATCHED_FLAGS)}",
        "",
        "| model | variant | text p50 / p95 ms | image p50 / p95 ms | images/s b8 / b32 | texts/s b8 / b32 | cold start s | RSS MB loaded / peak | speed-up vs baseline (text / image b1) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = baselines.get(r.model_id)
        speedup = f"{base.text_p50_ms / r.text_p50_ms:.1f}x / {base.image_p50_ms / r.image_p50_ms:.1f}x" if base else "-"
        ips = " / ".join(f"{r.images_per_s[b]:.1f}" for b in sorted(r.images_per_s))
        tps = " / ".join(f"{r.texts_per_s[b]:.1f}" for b in sorted(r.texts_per_s))
        lines.append(
            f"| {r.model_id} | {r.variant} | {r.text_p50_ms:.1f} / {r.text_p95_ms:.1f} | {r.image_p50_ms:.1f} / {r.image_p95_ms:.1f} "
            f"| {ips} | {tps} | {r.cold_start_s:.2f} | {r.cold_rss_mb:.0f} / {r.peak_rss_mb:.0f} | {speedup} |"
        )
    return "\n".join(lines)


def save_results(results: list[VariantResult], path: Path) -> None:
    path.write_text(json.dumps({"cpu": cpu_model(), "flags": cpu_flags(), "results": [asdict(r) for r in results]}, indent=2))
