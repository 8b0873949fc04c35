"""`clip-api validate`: measure an artifact exactly as an endpoint would serve it, and decide.

The artifact is loaded through its own packaged code/inference.py (model_fn, input_fn,
predict_fn, output_fn, JSON in and out), not through this repository's copy of the serving code,
so what is measured is what would be deployed. The reference is open_clip in torch fp32 eager
mode on the same weights, rebuilt from the manifest and checked against its weights digest.
Golden references come from `model_validation.golden.choose_golden` (committed file, else first-use
references of the verified pinned weights); the verdict names the case. Two sanity checks that do
not depend on our own outputs (rendered-word zero-shot and text similarity, thresholds from chance)
and a look at the served graphs' activation complete it.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from clip_core.model_config import ModelConfig
from clip_core.smoke_cases import SMOKE_FILE
from clip_core.smoke_cases import dumps as dump_smoke_cases
from clip_core.smoke_cases import smoke_requests
from inference_code.manifest import MANIFEST_FILE, Manifest, load_manifest, sha256_file, verify_files
from model_build.reference import OpenClipReference, cosine_rows
from model_build.weights import trained_with_quick_gelu
from model_build.weights_source import WeightsSource, canonical_kind
from model_validation.evaluation import ArtifactFacts, Metrics, Thresholds, build_report, chance_threshold, model_quality
from model_validation.golden import choose_golden, golden_path
from model_validation.parity import ModalityParity, measure_parity
from model_validation.probes import (
    SIMILARITY_TRIPLETS,
    ZERO_SHOT_PROMPT,
    ZERO_SHOT_WORDS,
    ProbeImage,
    probe_images,
    probe_texts,
    similarity_texts,
)

_SERVING_MODULES = ("inference", "inference_code", "clip_core")


def _is_serving_module(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in _SERVING_MODULES)


@contextlib.contextmanager
def packaged_inference_module(artifact_dir: Path) -> Iterator[object]:
    """Import the artifact's code/inference.py and the serving package beside it, isolated from ours."""
    code_dir = str((artifact_dir / "code").resolve())
    saved = {name: module for name, module in sys.modules.items() if _is_serving_module(name)}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, code_dir)
    try:
        module = importlib.import_module("inference")
        if not str(Path(sys.modules["inference_code"].__file__).resolve()).startswith(code_dir):
            raise RuntimeError("the packaged serving code was shadowed by another copy")
        yield module
    finally:
        sys.path.remove(code_dir)
        for name in [name for name in sys.modules if _is_serving_module(name)]:
            del sys.modules[name]
        sys.modules.update(saved)


class EndpointClient:
    """Calls the four toolkit functions as SageMaker would, JSON bytes in and out."""

    def __init__(self, module, artifact_dir: Path):
        self.module = module
        self.model = module.model_fn(str(artifact_dir))

    def invoke(self, payload: dict) -> np.ndarray:
        data = self.module.input_fn(json.dumps(payload), "application/json")
        body, _content_type = self.module.output_fn(self.module.predict_fn(data, self.model), "application/json")
        return np.asarray(json.loads(body), dtype=np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        step = self.model.limits.max_batch_size
        return np.concatenate([self.invoke({"texts": texts[i : i + step]}) for i in range(0, len(texts), step)])

    def embed_images(self, images: list[bytes]) -> np.ndarray:
        """Batches packed under the endpoint's request-size limit, as a real client must."""
        budget = int(self.model.limits.max_request_bytes * 0.9)
        results, batch, size = [], [], 0
        for data in images:
            encoded = base64.b64encode(data).decode()
            if batch and (size + len(encoded) > budget or len(batch) == self.model.limits.max_batch_size):
                results.append(self.invoke({"images": batch}))
                batch, size = [], 0
            batch.append(encoded)
            size += len(encoded)
        results.append(self.invoke({"images": batch}))
        return np.concatenate(results)

    def token_ids(self, texts: list[str]) -> np.ndarray:
        return self.model.embedder.tokenizer(texts).ids


@dataclass(frozen=True)
class ValidationResult:
    report: dict
    model_quality: dict
    smoke_cases: list = ()

    @property
    def passed(self) -> bool:
        return self.report["verdict"]["passed"]

    def write(self, report_path: Path, quality_path: Path | None = None) -> None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(self.report, indent=2))
        (quality_path or report_path.with_name("model_quality.json")).write_text(json.dumps(self.model_quality, indent=2))
        report_path.with_name(SMOKE_FILE).write_text(dump_smoke_cases(list(self.smoke_cases)))


def rebuild_reference(manifest: Manifest, config: ModelConfig):
    """open_clip with the artifact's weights and the *config's* architecture."""
    from model_build.weights import build_model

    weights = manifest.weights
    built = build_model(config, WeightsSource.recorded(weights.source, weights.checkpoint), seed=weights.seed or 0)
    return built, OpenClipReference(built.model, built.architecture)


def _latencies(call, repeats: int) -> tuple[float, float]:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - started))
    ordered = sorted(times)
    return statistics.median(times), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def zero_shot_top1(client: EndpointClient, images: list[ProbeImage]) -> float:
    words = {f"word-{word}": word for word in ZERO_SHOT_WORDS}
    word_images = [image for image in images if image.name in words]
    if not word_images:
        return 0.0
    prompts = client.embed_texts([ZERO_SHOT_PROMPT.format(word) for word in ZERO_SHOT_WORDS])
    picked = np.argmax(client.embed_images([image.data for image in word_images]) @ prompts.T, axis=1)
    truth = [ZERO_SHOT_WORDS.index(words[image.name]) for image in word_images]
    return float(np.mean(picked == np.array(truth)))


def text_similarity_accuracy(client: EndpointClient) -> float:
    """Share of triplets where the synonym is closer to the anchor than the unrelated word (chance: 1/2)."""
    vectors = client.embed_texts(similarity_texts()).reshape(len(SIMILARITY_TRIPLETS), 3, -1)
    anchor, synonym, unrelated = vectors[:, 0], vectors[:, 1], vectors[:, 2]
    return float(np.mean(np.sum(anchor * synonym, axis=1) > np.sum(anchor * unrelated, axis=1)))


def served_activation(artifact_dir: Path) -> str:
    """What the artifact's ONNX graphs compute between MLP layers: QuickGELU exports as x*Sigmoid(1.702x), GELU as Erf (or Gelu)."""
    import onnx

    from inference_code.manifest import IMAGE_ENCODER_FILE, TEXT_ENCODER_FILE

    ops: set[str] = set()
    for name in (IMAGE_ENCODER_FILE, TEXT_ENCODER_FILE):
        ops |= {node.op_type for node in onnx.load(str(Path(artifact_dir) / name), load_external_data=False).graph.node}
    if ops & {"Erf", "Gelu", "FastGelu", "BiasGelu"}:
        return "gelu"
    return "quick_gelu" if "Sigmoid" in ops else "unknown"


def sanity_thresholds(config: ModelConfig, variant: str) -> Thresholds:
    chance_p = config.validation.sanity_max_chance_probability
    return Thresholds(
        parity_min_cosine=config.parity_threshold(variant),
        # served vectors are compared: an int8 variant is held to its own parity threshold, not above it
        golden_min_cosine=min(config.validation.golden_min_cosine, config.parity_threshold(variant)),
        zero_shot_min_top1=max(config.validation.zero_shot_min_top1, chance_threshold(len(ZERO_SHOT_WORDS), 1 / len(ZERO_SHOT_WORDS), chance_p)),
        allow_random_init=config.validation.allow_random_init,
        text_similarity_min_accuracy=chance_threshold(len(SIMILARITY_TRIPLETS), 0.5, chance_p),
    )


def validate_artifact(
    artifact_dir: Path,
    config: ModelConfig,
    golden_file: Path | None = None,
    texts: list[str] | None = None,
    images: list[ProbeImage] | None = None,
    latency_repeats: int = 10,
) -> ValidationResult:
    artifact_dir = Path(artifact_dir)
    manifest = load_manifest(artifact_dir)
    manifest_sha256 = sha256_file(artifact_dir / MANIFEST_FILE)
    thresholds = sanity_thresholds(config, manifest.variant)
    if manifest.model_id != config.model_id or manifest.embedding_dim != config.embedding_dim:
        mismatch = f"the artifact is a build of {manifest.model_id} ({manifest.embedding_dim}-d), not of {config.model_id} ({config.embedding_dim}-d)"
        facts = _facts(manifest, config, files_ok=False, reference_weights_match=False, has_golden=False, config_mismatch=mismatch)
        report = build_report(facts, Metrics.unmeasured(), thresholds)
        return ValidationResult(report=report, model_quality=model_quality(report))
    if verify_files(artifact_dir, manifest):
        # The serving code refuses to load a changed artifact; the gate says why instead of measuring nothing.
        facts = _facts(manifest, config, files_ok=False, reference_weights_match=False, has_golden=False, manifest_sha256=manifest_sha256)
        report = build_report(facts, Metrics.unmeasured(), thresholds)
        return ValidationResult(report=report, model_quality=model_quality(report))
    texts = texts if texts is not None else probe_texts()
    images = images if images is not None else probe_images()
    named_images = [(image.name, image.data) for image in images]
    built, reference = rebuild_reference(manifest, config)
    choice = choose_golden(config, built, reference, texts, images, committed=golden_file or golden_path(config.model_id))
    golden = choice.golden

    with packaged_inference_module(artifact_dir) as module:
        client = EndpointClient(module, artifact_dir)
        parity = measure_parity(reference, client.embed_texts, client.embed_images, texts, named_images, client.token_ids)
        text_vectors, image_vectors = parity.served_text, parity.served_image
        deterministic = bool(
            np.array_equal(text_vectors, client.embed_texts(texts)) and np.array_equal(image_vectors, client.embed_images([d for _, d in named_images]))
        )
        golden_min = None
        golden_stale = choice.stale
        if golden is not None and not golden_stale:
            golden_min = float(min(cosine_rows(text_vectors, golden.text).min(), cosine_rows(image_vectors, golden.image).min()))
        zero_shot = zero_shot_top1(client, images)
        similarity = text_similarity_accuracy(client)
        text_p50, text_p95 = _latencies(lambda: client.invoke({"text": "a photo of a dog"}), latency_repeats)
        photo = next((d for n, d in named_images if n.startswith("photo-")), named_images[0][1])
        image_p50, image_p95 = _latencies(lambda: client.embed_images([photo]), latency_repeats)
        small_image = next((d for n, d in named_images if n == "shapes-png"), named_images[-1][1])
        smoke_cases = [{"request": request, "expected": client.invoke(request).tolist()} for request in smoke_requests(small_image)]

    all_vectors = np.concatenate([text_vectors, image_vectors])
    metrics = Metrics(
        parity_text_min_cosine=parity.text.min,
        parity_text_mean_cosine=parity.text.mean,
        parity_image_min_cosine=parity.image.min,
        parity_image_mean_cosine=parity.image.mean,
        token_ids_equal=parity.token_ids_equal,
        golden_min_cosine=golden_min,
        zero_shot_top1=zero_shot,
        max_norm_error=float(np.abs(np.linalg.norm(all_vectors, axis=1) - 1).max()),
        deterministic=deterministic,
        embedding_dim_ok=all_vectors.shape[1] == config.embedding_dim,
        latency_text_p50_ms=text_p50,
        latency_text_p95_ms=text_p95,
        latency_image_p50_ms=image_p50,
        latency_image_p95_ms=image_p95,
        worst_probes={"text": _worst(parity.text), "image": _worst(parity.image)},
        text_similarity_accuracy=similarity,
    )
    facts = _facts(
        manifest,
        config,
        files_ok=True,  # verified before anything was loaded
        manifest_sha256=manifest_sha256,
        reference_weights_match=built.weights.sha256 == manifest.weights.sha256,
        has_golden=golden_min is not None,
        golden_stale=golden_stale,
        golden_case=choice.case,
        golden_note=choice.note,
        trained_with_quick_gelu=trained_with_quick_gelu(config),
        served_activation=served_activation(artifact_dir),
    )
    report = build_report(facts, metrics, thresholds)
    return ValidationResult(report=report, model_quality=model_quality(report), smoke_cases=smoke_cases)


def _facts(manifest: Manifest, config: ModelConfig, **measured) -> ArtifactFacts:
    """`measured` includes manifest_sha256 where the artifact was read (the digest the container will be held to)."""
    return ArtifactFacts(
        model_id=manifest.model_id,
        version=manifest.version,
        variant=manifest.variant,
        weights_source=canonical_kind(manifest.weights.source),
        weights_sha256=manifest.weights.sha256,
        architecture=manifest.architecture,
        expected_architecture=config.open_clip.architecture,
        quick_gelu=manifest.quick_gelu,
        space=manifest.space,  # verified against the manifest's fields when it was read
        **measured,
    )


def _worst(parity: ModalityParity) -> list[dict]:
    return [{"probe": name[:80], "cosine": cosine} for name, cosine in parity.worst(3)]
