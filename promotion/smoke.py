"""Smoke-test judgement, as pure functions: a new endpoint's answers against the validated artifact's
(the cases file, clip_core/smoke_cases.py) and against the endpoint of its space that it replaces."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SmokeResult:
    passed: bool
    reason: str
    min_cosine: float

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reason": self.reason, "min_cosine": self.min_cosine}


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def evaluate(cases: list[dict], answers: list[object], min_cosine: float) -> SmokeResult:
    """cases: [{"request": ..., "expected": [...]}]; answers: the endpoint's parsed JSON bodies."""
    if not cases:
        return SmokeResult(False, "no smoke-test references for this version", 0.0)
    worst = 1.0
    for index, (case, answer) in enumerate(zip(cases, answers, strict=True)):
        expected = case["expected"]
        if not isinstance(answer, list) or len(answer) != len(expected):
            return SmokeResult(False, f"request {index}: expected a {len(expected)}-d embedding, got {str(answer)[:120]}", 0.0)
        norm = math.sqrt(sum(x * x for x in answer))
        if abs(norm - 1) > 1e-3:
            return SmokeResult(False, f"request {index}: embedding norm {norm:.4f} is not 1", 0.0)
        worst = min(worst, cosine(expected, answer))
    if worst < min_cosine:
        return SmokeResult(False, f"min cosine {worst:.6f} to the validated embeddings is under {min_cosine}", worst)
    return SmokeResult(True, f"{len(cases)} requests matched (min cosine {worst:.6f})", worst)


def agreement(new_answers: list[object], serving_answers: list[object]) -> float:
    """The least cosine between two endpoints' answers to the same requests (0 where one is not an embedding)."""
    worst = 1.0
    for new, serving in zip(new_answers, serving_answers, strict=True):
        if not (isinstance(new, list) and isinstance(serving, list) and len(new) == len(serving)):
            return 0.0
        worst = min(worst, cosine(new, serving))
    return worst


def judge_agreement(result: SmokeResult, measured: float, required: bool, min_agreement: float, serving: str) -> SmokeResult:
    """The embedding-space gate (issue 17): an endpoint that declares the space of the one it replaces
    must embed like it; one of another space only reports how far apart they are."""
    if not result.passed:
        return result
    said = f"; agreement with {serving}: min cosine {measured:.6f}"
    if required and measured < min_agreement:
        return SmokeResult(False, f"declares the embedding space of {serving} but agrees with it only to min cosine {measured:.6f} "
                                  f"(under {min_agreement:.6f}): its vectors would not match stored ones", result.min_cosine)
    return SmokeResult(True, result.reason + said, result.min_cosine)
