"""ONNX Runtime sessions for the two CLIP towers, returning L2-normalised float32 embeddings."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort


class DegenerateEmbeddingError(RuntimeError):
    """The model produced a zero or non-finite vector: it cannot be normalised."""


def l2_normalise(features: np.ndarray) -> np.ndarray:
    features = features.astype(np.float32, copy=False)
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    if not np.all(np.isfinite(features)) or np.any(norms == 0):
        raise DegenerateEmbeddingError("the model produced a zero or non-finite embedding")
    return features / norms


def session_options(threads: int | None = None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or int(os.environ.get("CLIP_API_THREADS", "0")) or (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    return options


class OnnxEncoder:
    """One tower. Calls are serialised: one model copy per container, concurrency comes from the endpoint."""

    def __init__(self, path: Path | str, options: ort.SessionOptions | None = None):
        self._session = ort.InferenceSession(str(path), sess_options=options or session_options(), providers=["CPUExecutionProvider"])
        self._input_name = self._session.get_inputs()[0].name
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            features = self._session.run(None, {self._input_name: batch})[0]
        return l2_normalise(features)
