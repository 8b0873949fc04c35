"""The validation verdict and the evaluation report, as pure functions of measured figures.

evaluation.json is flat and stable so a SageMaker ConditionStep can read it with JsonGet:
  verdict.passed                    true | false
  verdict.reasons                   list of human-readable reasons (empty when passed)
  verdict.summary                   the reasons joined into one string ("passed" when none)
  metrics.parity_min_cosine         min over text and image probes (vs open_clip, same weights)
  metrics.parity_text_min_cosine    metrics.parity_text_mean_cosine
  metrics.parity_image_min_cosine   metrics.parity_image_mean_cosine
  metrics.token_ids_equal           served tokenizer ids == open_clip's on every probe text
  metrics.golden_min_cosine         vs golden references of the released weights (null if none)
  metrics.zero_shot_top1            rendered-word images matched to 'a photo of the word "X"'
  metrics.text_similarity_accuracy  share of probe triplets where a synonym beats an unrelated word in the same template
  metrics.max_norm_error            max |norm - 1| of served embeddings
  metrics.deterministic             the same inputs twice gave identical embeddings
  metrics.embedding_dim_ok          every embedding has the configured size
  metrics.latency_{text,image}_{p50,p95}_ms
  thresholds.*                      the thresholds the verdict applied (from the model config)
  verdict.golden                    which golden references applied: committed | first-use-computed | first-use-stored | none
  golden.*                          that case in words, the file, and its metadata (weights, probe set, library versions)
The two sanity checks (zero-shot, text similarity) do not depend on our own outputs: their thresholds
are the smallest scores a model with no knowledge would reach with probability under
`validation.sanity_max_chance_probability` (binomial tail at chance 1/N). They were set from chance,
not calibrated on the released weights (none can be downloaded where this was written). Neither is
sensitive to QuickGELU vs GELU (a trained stand-in scores the same with both); the served graphs'
activation is checked directly instead (an Erf/Gelu node where the weights were trained with QuickGELU).
  artifact.*                        model_id, version, variant, weights_source, weights_sha256, manifest_sha256, space
                                    (space: the embedding space id, inference_code.manifest.embedding_space; registered)
The same metrics are also written in the Model Registry's model-quality shape (model_quality.json).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from model_build.weights_source import RANDOM_INIT

REPORT_SCHEMA_VERSION = 1
MAX_NORM_ERROR = 1e-3


@dataclass(frozen=True)
class Thresholds:
    parity_min_cosine: float
    golden_min_cosine: float
    zero_shot_min_top1: float
    allow_random_init: bool
    text_similarity_min_accuracy: float = 0.0


def chance_threshold(trials: int, chance: float, max_probability: float) -> float:
    """The smallest share k/trials that a model guessing at `chance` reaches with probability <= max_probability."""
    for k in range(trials + 1):
        tail = sum(math.comb(trials, i) * chance**i * (1 - chance) ** (trials - i) for i in range(k, trials + 1))
        if tail <= max_probability:
            return k / trials
    return 1.0


@dataclass(frozen=True)
class ArtifactFacts:
    """What is known about the artifact, independent of measurements."""

    model_id: str
    version: str
    variant: str
    weights_source: str  # one of model_build.weights_source.KINDS
    weights_sha256: str
    architecture: str
    expected_architecture: str
    quick_gelu: bool
    files_ok: bool
    reference_weights_match: bool
    has_golden: bool
    golden_stale: bool = False  # a golden file exists but was made on another probe set
    config_mismatch: str | None = None  # the artifact is not a build of the config it is validated against
    golden_case: str = "none"  # committed | first-use-computed | first-use-stored | none
    golden_note: str = ""  # the case in words, for the verdict
    trained_with_quick_gelu: bool = False  # the config's released weights were trained with QuickGELU
    served_activation: str | None = None  # what the artifact's ONNX graphs compute: quick_gelu | gelu | unknown
    manifest_sha256: str = ""  # of the manifest.json validated here: registered, and checked by the container at start
    space: str = ""  # the embedding space id (inference_code.manifest.embedding_space): registered with the package


@dataclass(frozen=True)
class Metrics:
    parity_text_min_cosine: float
    parity_text_mean_cosine: float
    parity_image_min_cosine: float
    parity_image_mean_cosine: float
    token_ids_equal: bool
    golden_min_cosine: float | None
    zero_shot_top1: float
    max_norm_error: float
    deterministic: bool
    embedding_dim_ok: bool
    latency_text_p50_ms: float
    latency_text_p95_ms: float
    latency_image_p50_ms: float
    latency_image_p95_ms: float
    worst_probes: dict = field(default_factory=dict)
    text_similarity_accuracy: float | None = None

    @classmethod
    def unmeasured(cls) -> "Metrics":
        """For an artifact that cannot be compared with its config at all: every check fails."""
        return cls(0.0, 0.0, 0.0, 0.0, False, None, 0.0, 1.0, False, False, 0.0, 0.0, 0.0, 0.0)

    @property
    def parity_min_cosine(self) -> float:
        return min(self.parity_text_min_cosine, self.parity_image_min_cosine)


def decide(facts: ArtifactFacts, metrics: Metrics, thresholds: Thresholds) -> list[str]:
    """Reasons the artifact must not be registered; empty means it passes."""
    if facts.config_mismatch:
        return [facts.config_mismatch]
    reasons = []
    if not facts.files_ok:
        reasons.append("artifact files do not match the sha256 recorded in the manifest")
    if facts.architecture != facts.expected_architecture:
        reasons.append(f"architecture {facts.architecture} differs from the config's {facts.expected_architecture}")
    if not facts.reference_weights_match:
        reasons.append("the reference model could not be rebuilt with the artifact's weights (weights digest differs)")
    if metrics.parity_text_min_cosine < thresholds.parity_min_cosine:
        reasons.append(
            f"text parity: min cosine {metrics.parity_text_min_cosine:.6f} < {thresholds.parity_min_cosine} ({facts.variant})"
        )
    if metrics.parity_image_min_cosine < thresholds.parity_min_cosine:
        reasons.append(
            f"image parity: min cosine {metrics.parity_image_min_cosine:.6f} < {thresholds.parity_min_cosine} ({facts.variant})"
        )
    if not metrics.token_ids_equal:
        reasons.append("tokenizer ids differ from open_clip's")
    if facts.trained_with_quick_gelu and (not facts.quick_gelu or facts.served_activation == "gelu"):
        reasons.append("the served model uses GELU, but these weights were trained with QuickGELU (embeddings drift)")
    if facts.golden_stale:
        reasons.append("golden references were made on a different probe set: recompute them with `clip-api references`")
    if metrics.golden_min_cosine is not None and metrics.golden_min_cosine < thresholds.golden_min_cosine:
        reasons.append(
            f"golden: min cosine {metrics.golden_min_cosine:.6f} < {thresholds.golden_min_cosine}: "
            f"embeddings differ from the {facts.golden_case} reference embeddings of the expected weights"
        )
    if facts.weights_source == RANDOM_INIT and not thresholds.allow_random_init:
        reasons.append("weights are random-init and the model config does not allow it (demo/test configs only)")
    if facts.weights_source != RANDOM_INIT:
        if not facts.has_golden and not facts.golden_stale:
            reasons.append(
                "no golden reference embeddings for these weights: first-use references are made only from the file the "
                "config pins (verified by sha256); commit references with `clip-api references`"
            )
        if metrics.zero_shot_top1 < thresholds.zero_shot_min_top1:
            reasons.append(
                f"zero-shot top-1 {metrics.zero_shot_top1:.3f} < {thresholds.zero_shot_min_top1:.3f} "
                "(rendered words; the threshold is set from chance): these do not behave like CLIP's weights"
            )
        if metrics.text_similarity_accuracy is not None and metrics.text_similarity_accuracy < thresholds.text_similarity_min_accuracy:
            reasons.append(
                f"text similarity {metrics.text_similarity_accuracy:.3f} < {thresholds.text_similarity_min_accuracy:.3f} "
                "(synonym vs unrelated word; the threshold is set from chance): these do not behave like CLIP's weights"
            )
    if metrics.max_norm_error > MAX_NORM_ERROR:
        reasons.append(f"embeddings are not unit norm (max error {metrics.max_norm_error:.2e})")
    if not metrics.deterministic:
        reasons.append("the same input gave different embeddings twice")
    if not metrics.embedding_dim_ok:
        reasons.append("embedding size differs from the config's embedding_dim")
    return reasons


def build_report(facts: ArtifactFacts, metrics: Metrics, thresholds: Thresholds) -> dict:
    reasons = decide(facts, metrics, thresholds)
    measured = asdict(metrics)
    worst = measured.pop("worst_probes")
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "verdict": {
            "passed": not reasons,
            "status": "passed" if not reasons else "failed",
            "reasons": reasons,
            "summary": "; ".join(reasons) or "passed",
            "golden": facts.golden_case,
        },
        "golden": {"case": facts.golden_case, "note": facts.golden_note},
        "metrics": {"parity_min_cosine": metrics.parity_min_cosine, **measured},
        "thresholds": asdict(thresholds),
        "artifact": {
            "model_id": facts.model_id,
            "version": facts.version,
            "variant": facts.variant,
            "weights_source": facts.weights_source,
            "weights_sha256": facts.weights_sha256,
            "manifest_sha256": facts.manifest_sha256,
            "space": facts.space,
            "architecture": facts.architecture,
            "quick_gelu": facts.quick_gelu,
        },
        "worst_probes": worst,
    }


def model_quality(report: dict) -> dict:
    """The metrics in the Model Registry's model-quality JSON shape ({"value": ..., "standard_deviation": ...})."""
    metrics = report["metrics"]
    names = (
        "parity_min_cosine", "parity_text_min_cosine", "parity_text_mean_cosine", "parity_image_min_cosine",
        "parity_image_mean_cosine", "golden_min_cosine", "zero_shot_top1", "text_similarity_accuracy", "max_norm_error",
        "latency_text_p50_ms", "latency_image_p50_ms",
    )
    return {
        "embedding_quality_metrics": {
            name: {"value": metrics[name], "standard_deviation": "NaN"} for name in names if metrics.get(name) is not None
        }
    }
