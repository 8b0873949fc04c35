"""Where an artifact's weights come from, in one vocabulary: the `--weights` option, the pipeline's
WeightsSource parameter, WeightsSource in code and the manifest's `weights.source` all say
pretrained | checkpoint | random-init.

`random` is the earlier spelling of random-init on the command line and in the pipeline parameter:
still accepted wherever a source is read. Standard library only, so that the pure verdict
(model_validation/evaluation.py) reads the vocabulary without importing torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PRETRAINED = "pretrained"
CHECKPOINT = "checkpoint"
RANDOM_INIT = "random-init"
KINDS = (PRETRAINED, CHECKPOINT, RANDOM_INIT)
ALIASES = {"random": RANDOM_INIT}
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def canonical_kind(name: str) -> str:
    """`name` in this vocabulary (an alias becomes the kind it stands for); a name outside it is refused."""
    kind = ALIASES.get(name, name)
    if kind not in KINDS:
        raise ValueError(f"unknown weights source {name!r}: one of {', '.join(KINDS)}")
    return kind


@dataclass(frozen=True)
class WeightsSource:
    kind: str  # one of KINDS
    location: str | None = None  # a checkpoint's path or s3:// URI

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"weights source kind {self.kind!r} is not one of {', '.join(KINDS)}")

    @classmethod
    def parse(cls, value: str) -> WeightsSource:
        """A `--weights` value: pretrained, random-init (or random), or a checkpoint path / s3:// URI."""
        kind = ALIASES.get(value, value)
        if kind in (PRETRAINED, RANDOM_INIT):
            return cls(kind)
        if value.startswith("s3://") or value.endswith(CHECKPOINT_SUFFIXES) or os.path.exists(value):
            return cls(CHECKPOINT, value)
        raise ValueError(
            f"--weights must be 'pretrained', 'random-init' (or 'random'), or a checkpoint path/s3:// URI "
            f"({', '.join(CHECKPOINT_SUFFIXES)}); got {value!r}"
        )

    @classmethod
    def recorded(cls, source: str, checkpoint: str | None) -> WeightsSource:
        """The source a manifest's `weights` records (its `source`, in either spelling, and `checkpoint`)."""
        kind = canonical_kind(source)
        return cls(kind, checkpoint if kind == CHECKPOINT else None)

    def __str__(self) -> str:
        return self.location if self.kind == CHECKPOINT else self.kind
