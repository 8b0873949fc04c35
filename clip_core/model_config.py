"""Served models are data: one YAML per model under configs/models/, validated here.

Adding a model is adding a file; everything downstream (packaging, validation thresholds,
pipeline, endpoint sizing, alarms, routes) reads it through `load_model_config`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clip_core.limits import ServingLimits
from clip_core.names import ENDPOINT_NAME_PREFIX, endpoint_stem
from clip_core.paths import MODEL_CONFIGS_DIR

Variant = Literal["fp32", "int8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PinnedWeightsFile(_Strict):
    """The exact file a pretrained tag's weights are read from, pinned by its sha256 (model_build/weights.py
    downloads it, refuses any other digest, and loads it into the config's architecture)."""

    url: str = Field(pattern=r"^https?://", description="where the file is downloaded from")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the file's expected sha256")
    format: Literal["openai-torchscript", "state-dict"] = Field(description="OpenAI's TorchScript archive, or an open_clip state dict")
    sources: list[str] = Field(min_length=1, description="public material the url and digest were taken from")
    unverified: str | None = Field(default=None, description="what public material could not confirm")


class OpenClipSpec(_Strict):
    architecture: str = Field(description="open_clip model name, e.g. ViT-B-32-quickgelu")
    pretrained: str | None = Field(description="open_clip pretrained tag (e.g. openai), or null")
    weights_file: PinnedWeightsFile | None = Field(default=None, description="the tag's weights file, pinned by digest")


class ServingSpec(_Strict):
    variant: Variant = "int8"
    # int8 also stores the token embedding table as int8 (halves the text tower); the validation
    # gate decides per model whether that keeps parity (it does for B/32, not for the 64-d tiny).
    quantize_token_embedding: bool = True
    limits: ServingLimits = ServingLimits()


class ValidationSpec(_Strict):
    parity_min_cosine: dict[Variant, float]
    golden_min_cosine: float = 0.999
    zero_shot_min_top1: float = 0.0  # a floor on top of the chance-derived threshold (model_validation/evaluation.py)
    # The independent sanity checks pass when a model with no knowledge (chance) would reach their
    # score with at most this probability (binomial tail): thresholds from chance, not calibrated here.
    sanity_max_chance_probability: float = Field(default=0.001, gt=0, lt=0.5)
    allow_random_init: bool = False

    @field_validator("parity_min_cosine")
    @classmethod
    def _thresholds_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for variant, threshold in value.items():
            if not 0.0 < threshold <= 1.0:
                raise ValueError(f"parity threshold for {variant} must be in (0, 1], got {threshold}")
        return value


class RegistrySpec(_Strict):
    model_package_group: str


class EndpointSpec(_Strict):
    """SageMaker serverless limits: memory 1024-6144 MB in 1 GB steps, concurrency 1-200."""

    memory_mb: int = 4096
    max_concurrency: int = 20
    provisioned_concurrency: int | None = None
    keep_previous_endpoints: int = 1
    # After the stable URL moves to another embedding space (issue 17), clients that pin the old one
    # are served from its endpoint for this long, then told 410: time to re-embed stored vectors.
    space_grace_days: float = Field(default=30, ge=0)

    @model_validator(mode="after")
    def _within_serverless_limits(self) -> "EndpointSpec":
        if self.memory_mb not in range(1024, 6145, 1024):
            raise ValueError("memory_mb must be one of 1024, 2048, ..., 6144")
        if not 1 <= self.max_concurrency <= 200:
            raise ValueError("max_concurrency must be within 1..200")
        if self.provisioned_concurrency is not None and not (
            1 <= self.provisioned_concurrency <= self.max_concurrency
        ):
            raise ValueError("provisioned_concurrency must be within 1..max_concurrency")
        if self.keep_previous_endpoints < 0:
            raise ValueError("keep_previous_endpoints must be >= 0")
        return self


class ApiSpec(_Strict):
    """The model's API Lambda. Reserved concurrency both guarantees and caps the function's share of the
    account's Lambda concurrency; new accounts often have a quota of 10, and Lambda keeps 100 unreserved,
    so none is reserved unless a config asks (raise the quota first: see the README's deploy section)."""

    reserved_concurrency: int | None = Field(default=None, ge=1, le=1000)


class AlarmSpec(_Strict):
    model_latency_p90_ms: float
    invocation_5xx_errors: int
    invocation_4xx_errors: int
    model_setup_time_ms: float
    throttles: int


class ModelConfig(_Strict):
    model_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,40}$")
    description: str
    route: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="public URL path: POST /<route>")
    demo_only: bool = False
    open_clip: OpenClipSpec
    embedding_dim: int
    serving: ServingSpec = ServingSpec()
    validation: ValidationSpec
    registry: RegistrySpec
    endpoint: EndpointSpec = EndpointSpec()
    api: ApiSpec = ApiSpec()
    alarms: AlarmSpec

    def space_agreement_threshold(self) -> float:
        """The least cosine two builds of one embedding space (any variants) must agree to.

        Each build agrees with the reference to at least its parity threshold t (the angle between
        them is at most acos(t)), so two builds agree to at least cos(2 acos t) = 2t^2 - 1 with the
        loosest t configured: int8 at 0.998 gives 0.992."""
        loosest = min(self.validation.parity_min_cosine.values())
        return 2 * loosest * loosest - 1

    def parity_threshold(self, variant: str) -> float:
        try:
            return self.validation.parity_min_cosine[variant]  # type: ignore[index]
        except KeyError:
            raise ValueError(f"{self.model_id}: no parity threshold configured for variant {variant!r}") from None


class UnknownModelError(LookupError):
    pass


def model_config_path(model_id: str, configs_dir: Path = MODEL_CONFIGS_DIR) -> Path:
    return configs_dir / f"{model_id}.yaml"


@lru_cache(maxsize=None)
def load_model_config(model_id: str, configs_dir: Path = MODEL_CONFIGS_DIR) -> ModelConfig:
    path = model_config_path(model_id, configs_dir)
    if not path.is_file():
        known = ", ".join(list_model_ids(configs_dir)) or "none"
        raise UnknownModelError(f"no model config {path.name} under {configs_dir} (known: {known})")
    data = yaml.safe_load(path.read_text())
    config = ModelConfig.model_validate(data)
    if config.model_id != model_id:
        raise ValueError(f"{path}: model_id {config.model_id!r} does not match the file name")
    return config


def list_model_ids(configs_dir: Path = MODEL_CONFIGS_DIR) -> list[str]:
    return sorted(p.stem for p in configs_dir.glob("*.yaml"))


def load_all_model_configs(configs_dir: Path = MODEL_CONFIGS_DIR) -> list[ModelConfig]:
    configs = [load_model_config(model_id, configs_dir) for model_id in list_model_ids(configs_dir)]
    stems = [endpoint_stem(config.model_id) for config in configs]
    if len(set(stems)) != len(stems):
        same = sorted({config.model_id for config, stem in zip(configs, stems) if stems.count(stem) > 1})
        raise ValueError(f"models {same} would name their endpoints alike ({ENDPOINT_NAME_PREFIX}<model>-v<n>): rename one")
    return configs
