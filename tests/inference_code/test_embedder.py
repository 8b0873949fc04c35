"""An item's embedding depends on the item and the artifact only: not on the batch it is sent in,
nor on how many threads compute it. The int8 variants quantise activations with one scale per
input tensor, so batched runs break this; the embedder runs rows alone (inference_code/encoders.py)."""

from __future__ import annotations

import numpy as np
import pytest

from inference_code.embedder import ClipEmbedder
from inference_code.encoders import Parallelism

SETTINGS = [(1, 1), (2, 1), (2, 2)]  # (cores, threads per model run)


@pytest.fixture(scope="module", params=["tiny_fp32", "tiny_int8"])
def artifact(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def embedders(artifact):
    return {setting: ClipEmbedder(artifact.directory, threads=setting[0], intra_op_threads=setting[1]) for setting in SETTINGS}


def _mixed_texts(probe_texts):
    # short and long texts, plain and emoji, together: per-tensor scales would differ from each alone
    return list(probe_texts[:6]) + ["a", "🙂 " * 40, "x" * 300]


def test_text_embedding_is_the_same_alone_in_a_batch_and_on_any_thread_count(embedders, probe_texts):
    texts = _mixed_texts(probe_texts)
    alone = np.stack([embedders[(1, 1)].embed_texts([text]).vectors[0] for text in texts])
    for setting, embedder in embedders.items():
        batched = embedder.embed_texts(texts).vectors
        assert np.array_equal(batched, alone), setting
        assert np.array_equal(embedder.embed_texts(texts[::-1]).vectors[::-1], alone), setting


def test_image_embedding_is_the_same_alone_in_a_batch_and_on_any_thread_count(embedders, probe_images):
    images = [probe.data for probe in probe_images[:6]]
    alone = np.stack([embedders[(1, 1)].embed_image_bytes([data])[0] for data in images])
    for setting, embedder in embedders.items():
        assert np.array_equal(embedder.embed_image_bytes(images), alone), setting
        assert np.array_equal(embedder.embed_image_bytes(images[::-1])[::-1], alone), setting


def test_parallelism_splits_the_cores_into_rows_at_once():
    assert Parallelism.from_environment(threads=4, intra_op_threads=1) == Parallelism(workers=4, intra_op_threads=1)
    assert Parallelism.from_environment(threads=4, intra_op_threads=2) == Parallelism(workers=2, intra_op_threads=2)
    assert Parallelism.from_environment(threads=2, intra_op_threads=8) == Parallelism(workers=1, intra_op_threads=2)


def test_parallelism_reads_the_environment_then_the_artifacts_default(monkeypatch):
    monkeypatch.setenv("CLIP_API_THREADS", "6")
    assert Parallelism.from_environment(default_intra_op_threads=0) == Parallelism(workers=1, intra_op_threads=6)  # 0: all cores
    assert Parallelism.from_environment(default_intra_op_threads=2) == Parallelism(workers=3, intra_op_threads=2)
    monkeypatch.setenv("CLIP_API_INTRA_OP_THREADS", "3")
    assert Parallelism.from_environment(default_intra_op_threads=0) == Parallelism(workers=2, intra_op_threads=3)


def test_the_l14_config_runs_one_row_on_all_cores_and_b32_rows_side_by_side():
    from clip_core.model_config import load_model_config

    assert load_model_config("clip-vit-l-14").serving.limits.intra_op_threads == 0
    assert load_model_config("clip-vit-b-32").serving.limits.intra_op_threads == 1
