"""`clip-api bench-bulk`: the local bulk path (`embed-dataset`, JSON Lines shards) vs single requests, same items, same cores.

Generates a folder of JPEG images and a JSONL manifest of texts, then measures, in one run:

- single requests: one inference server with all the machine's cores, one item per request
  (`{"image": ...}` / `{"text": ...}` to /invocations), one request at a time, as a caller of the
  single-request API sends them;
- bulk: `embed-dataset`'s local path (`run_local`) with `--workers K` servers of cores // K threads each.

Server start-up is excluded from both (reported apart); every server answers one warm-up request
first. Every bulk embedding is compared with the single-request one (bit-identical count and lowest
cosine: int8's dynamic quantization scales activations per batch, so batched answers may differ in
the last bits), so the figures are for the same work. Then the cost per million images: Batch Transform (instance price x measured
time, scaled by the instance's vCPUs relative to this machine's) vs a serverless endpoint (per-second
price x measured duration x memory, plus the per-request prices of the public path).
"""

from __future__ import annotations

import base64
import json
import os
import platform
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# List prices, us-east-1, on demand (USD), as published on aws.amazon.com/sagemaker/pricing and
# aws.amazon.com/api-gateway/pricing when written; pass your own with the --*-price options.
INSTANCE_PRICES = {"ml.m5.xlarge": (0.23, 4), "ml.m5.2xlarge": (0.461, 8), "ml.c5.xlarge": (0.204, 4), "ml.c5.2xlarge": (0.408, 8),
                   "ml.c5.4xlarge": (0.816, 16)}  # $/hour, vCPUs
SERVERLESS_PRICE_PER_GB_S = 0.00002  # SageMaker Serverless Inference compute, $ per second per GB of memory
SERVERLESS_DATA_PRICE_PER_GB = 0.016  # SageMaker Serverless Inference data processed (in + out), $ per GB
API_GATEWAY_PRICE_PER_MILLION = 3.50  # REST API requests (first 333 M a month)
LAMBDA_REQUEST_PRICE_PER_MILLION = 0.20
LAMBDA_PRICE_PER_GB_S = 0.0000166667  # x86
LAMBDA_MEMORY_GB = 0.5
TARGET_RATIO = 3.0


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def generate_images(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """Distinct JPEGs of `size` (width, height): a smooth random field plus noise, like a photograph's byte size."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    paths = []
    for index in range(count):
        coarse = rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
        pixels = np.clip(base + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"img-{index:05d}.jpg"
        Image.fromarray(pixels).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def generate_texts(path: Path, count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = ("red green small large wooden metal photo drawing of a the dog cat bridge car tree river house chair lamp "
             "on in near under beside old new bright dark city field table window").split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(4, 16)))) for _ in range(count)]
    path.write_text("".join(json.dumps({"id": f"t{index:05d}", "text": text}) + "\n" for index, text in enumerate(texts)))
    return texts


def _post(url: str, payload: dict) -> list:
    request = urllib.request.Request(url + "/invocations", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@dataclass
class Measurement:
    path: str  # "single" or "bulk"
    modality: str
    workers: int
    items: int
    seconds: float
    startup_s: float

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


@dataclass
class BulkBenchResult:
    model_id: str
    variant: str
    cpu: str
    cores: int
    date: str
    image_size: str
    measurements: list[Measurement] = field(default_factory=list)
    single_image_request_s: float = 0.0  # mean duration of one single-image request
    mean_image_bytes: float = 0.0
    mismatches: int = 0  # items missing from the bulk output or answered with an error (must be 0)
    compared: int = 0  # bulk embeddings compared with the single-request ones
    bit_identical: int = 0  # ... of which equal bit for bit
    min_cosine: float = 1.0  # the lowest cosine between a bulk embedding and its single-request one

    def best(self, modality: str, path: str) -> Measurement:
        candidates = [m for m in self.measurements if m.modality == modality and m.path == path]
        return max(candidates, key=lambda m: m.items_per_s)

    def ratio(self, modality: str) -> float:
        return self.best(modality, "bulk").items_per_s / self.best(modality, "single").items_per_s


def run_bulk_bench(artifact: Path, model_id: str, images: int = 256, texts: int = 512, image_size: tuple[int, int] = (512, 384),
                   workers: tuple[int, ...] = (1, 2), workdir: Path | None = None, log=print) -> BulkBenchResult:
    from clip_api import bulk
    from clip_api.embed_dataset import LocalServers, ResolvedModel, run_local

    manifest = bulk.artifact_manifest(Path(artifact))
    cores = os.cpu_count() or 1
    result = BulkBenchResult(model_id=model_id, variant=manifest.get("variant", ""), cpu=cpu_model(), cores=cores,
                             date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), image_size=f"{image_size[0]}x{image_size[1]}")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        image_paths = generate_images(tmp / "images", images, image_size)
        text_list = generate_texts(tmp / "texts.jsonl", texts)
        result.mean_image_bytes = float(np.mean([p.stat().st_size for p in image_paths])) if image_paths else 0.0
        sources = {"image": (str(tmp / "images"), [{"image": base64.b64encode(p.read_bytes()).decode()} for p in image_paths]),
                   "text": (str(tmp / "texts.jsonl"), [{"text": t} for t in text_list])}
        sources = {k: v for k, v in sources.items() if v[1]}
        single: dict[str, np.ndarray] = {}

        log(f"single requests: one server, {cores} threads, one item per request")
        started = time.monotonic()
        with LocalServers(Path(artifact), 1, tmp) as servers:
            startup = time.monotonic() - started
            url = servers.urls[0]
            for modality, (_, payloads) in sources.items():
                _post(url, payloads[0])  # warm-up
                began = time.monotonic()
                single[modality] = np.asarray([_post(url, payload) for payload in payloads], dtype=np.float32)
                seconds = time.monotonic() - began
                result.measurements.append(Measurement("single", modality, 1, len(payloads), seconds, startup))
                if modality == "image":
                    result.single_image_request_s = seconds / len(payloads)
                log(f"  {modality}: {len(payloads)} in {seconds:.1f} s = {len(payloads) / seconds:.1f} items/s")

        model = ResolvedModel(model_id, Path(artifact))
        for count in workers:
            log(f"bulk (embed-dataset, --workers {count}, {max(1, cores // count)} threads each)")
            started = time.monotonic()
            with LocalServers(Path(artifact), count, tmp) as servers:
                startup = time.monotonic() - started
                for url in servers.urls:
                    _post(url, next(iter(sources.values()))[1][0])  # warm-up
                for modality, (source, payloads) in sources.items():
                    out = tmp / f"bulk-{modality}-{count}.parquet"
                    run = run_local(model, source, out, workers=count, progress=False, restart=True, server_urls=servers.urls, log=lambda _m: None)
                    result.measurements.append(Measurement("bulk", modality, count, run.items, run.seconds, startup))
                    rows = bulk.read_output(out)[0].to_pylist()
                    order = {f"t{i:05d}": i for i in range(len(payloads))} if modality == "text" else {p.name: i for i, p in enumerate(image_paths)}
                    result.mismatches += abs(len(rows) - len(payloads))
                    for row in rows:
                        index = order.get(row["id"])
                        if row.get("error") or index is None:
                            result.mismatches += 1
                            continue
                        vector, reference = np.asarray(row["embedding"], dtype=np.float32), single[modality][index]
                        result.compared += 1
                        result.bit_identical += int(np.array_equal(vector, reference))
                        result.min_cosine = min(result.min_cosine, float(vector @ reference / (np.linalg.norm(vector) * np.linalg.norm(reference))))
                    log(f"  {modality}: {run.items} in {run.seconds:.1f} s = {run.items / run.seconds:.1f} items/s")
    return result


# ------------------------------------------------------------------------------------------------
# Cost per million images


@dataclass
class CostAssumptions:
    instance_type: str = "ml.m5.xlarge"
    instance_price_per_h: float | None = None  # default: INSTANCE_PRICES
    instance_vcpus: int | None = None
    serverless_memory_mb: int = 4096  # configs/models/clip-vit-b-32.yaml endpoint.memory_mb


def costs(result: BulkBenchResult, assumptions: CostAssumptions) -> dict:
    price, vcpus = INSTANCE_PRICES.get(assumptions.instance_type, (None, None))
    price = assumptions.instance_price_per_h if assumptions.instance_price_per_h is not None else price
    vcpus = assumptions.instance_vcpus or vcpus
    if price is None or vcpus is None:
        raise ValueError(f"no list price known for {assumptions.instance_type}: pass --instance-price and --instance-vcpus")
    bulk_rate = result.best("image", "bulk").items_per_s * vcpus / result.cores  # linear in vCPUs, same per-vCPU speed
    batch_hours = 1e6 / bulk_rate / 3600
    memory_gb = assumptions.serverless_memory_mb / 1024
    compute = 1e6 * result.single_image_request_s * memory_gb * SERVERLESS_PRICE_PER_GB_S
    request_gb = 1e6 * (result.mean_image_bytes * 4 / 3 + 12_000) / 1e9  # base64 in, ~12 kB of JSON floats out
    data = request_gb * SERVERLESS_DATA_PRICE_PER_GB
    public = API_GATEWAY_PRICE_PER_MILLION + LAMBDA_REQUEST_PRICE_PER_MILLION + 1e6 * result.single_image_request_s * LAMBDA_MEMORY_GB * LAMBDA_PRICE_PER_GB_S
    return {
        "batch_transform": {"instance_type": assumptions.instance_type, "price_per_h": price, "vcpus": vcpus,
                            "images_per_s_per_instance": bulk_rate, "instance_hours": batch_hours, "usd": batch_hours * price},
        "serverless": {"memory_mb": assumptions.serverless_memory_mb, "price_per_gb_s": SERVERLESS_PRICE_PER_GB_S,
                       "request_s": result.single_image_request_s, "compute_usd": compute, "data_usd": data, "usd": compute + data,
                       "with_public_api_usd": compute + data + public},
    }


def render(result: BulkBenchResult, cost: dict) -> str:
    lines = [f"CPU: {result.cpu} ({result.cores} vCPUs) · {result.model_id} {result.variant} · {result.date}",
             "", "| path | modality | workers | items | seconds | items/s |", "|---|---|---|---:|---:|---:|"]
    for m in result.measurements:
        lines.append(f"| {m.path} | {m.modality} | {m.workers} | {m.items} | {m.seconds:.1f} | {m.items_per_s:.1f} |")
    lines.append("")
    for modality in sorted({m.modality for m in result.measurements}):
        ratio = result.ratio(modality)
        lines.append(f"{modality}s: bulk / single = {ratio:.2f}x (target >= {TARGET_RATIO:g}x: {'met' if ratio >= TARGET_RATIO else 'NOT met'})")
    lines.append(f"bulk vs single-request embeddings: {result.bit_identical} of {result.compared} bit-identical, lowest cosine {result.min_cosine:.6f}; "
                 f"missing or errored: {result.mismatches}")
    bt, sl = cost["batch_transform"], cost["serverless"]
    lines += ["", "Cost per million images:",
              f"  Batch Transform {bt['instance_type']} (${bt['price_per_h']:.3f}/h, {bt['vcpus']} vCPUs; assumed {bt['images_per_s_per_instance']:.1f} images/s "
              f"= measured bulk rate x {bt['vcpus']}/{result.cores} vCPUs): {bt['instance_hours']:.2f} instance-hours = ${bt['usd']:.2f}",
              f"  Serverless endpoint {sl['memory_mb']} MB (${sl['price_per_gb_s']}/GB-s x {sl['request_s'] * 1000:.0f} ms measured per single-image request): "
              f"${sl['compute_usd']:.2f} compute + ${sl['data_usd']:.2f} data = ${sl['usd']:.2f}; "
              f"through the public API (+ API Gateway, Lambda): ${sl['with_public_api_usd']:.2f}"]
    return "\n".join(lines)


def to_json(result: BulkBenchResult, cost: dict) -> dict:
    return {**asdict(result), "measurements": [{**asdict(m), "items_per_s": m.items_per_s} for m in result.measurements],
            "ratios": {modality: result.ratio(modality) for modality in sorted({m.modality for m in result.measurements})}, "cost": cost}


def default_artifact(model_id: str, variant: str, out_dir: Path, log=print) -> Path:
    """The benchmark's random-init package (as `clip-api bench` builds it), packaged once and reused."""
    directory = out_dir / model_id / variant
    if not (directory / "artifact" / "manifest.json").is_file():
        from clip_core.model_config import load_model_config
        from model_build.package import package_model
        from model_build.weights_source import RANDOM_INIT, WeightsSource

        log(f"packaging {model_id} {variant} (random init) into {directory} ...")
        package_model(load_model_config(model_id), directory, WeightsSource(RANDOM_INIT), variant=variant, seed=0)
    return directory / "artifact"
