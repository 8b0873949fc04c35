"""The released-weights path, offline: a stand-in hub on 127.0.0.1 serves a seeded stand-in checkpoint in
OpenAI's release format under a TEST config that pins its sha256, and the real code downloads it
(progress, resume), verifies it, refuses a tampered file, makes first-use golden references, passes
the gate, and fails wrong weights and a wrong activation. The local-mode test (tests/local_mode/
test_standin_demo.py) runs the same path through `clip-api local up`."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from clip_core.model_config import load_model_config
from model_validation.golden import GoldenReferences, first_use_golden_path
from model_build.package import package_model
from model_build.progress import Progress
from model_validation.validate import validate_artifact
from model_build.weights import (
    WeightsDigestMismatch, WeightsSource, WeightsUnavailableError, build_model, fetch_pinned_file, pinned_file_path,
    pretrained_available,
)
from tests.model_build.standin_hub import (
    ARCHIVE_NAME, STANDIN_MODEL_ID, StandinHub, train_standin_state, write_openai_archive, write_standin_configs,
)

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def standin_state(request, tmp_path_factory):
    """Trained once per session, or kept in pytest's cache where it runs (CI runs with -p no:cacheprovider)."""
    import open_clip

    key = hashlib.sha256((HERE / "standin_hub.py").read_bytes() + (HERE.parent.parent / "model_validation" / "probes.py").read_bytes()
                         + torch.__version__.encode() + open_clip.__version__.encode()).hexdigest()[:16]
    cache = getattr(request.config, "cache", None)
    directory = Path(cache.mkdir("clip-standin")) if cache is not None else tmp_path_factory.mktemp("clip-standin")
    path = directory / f"state-{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    state = train_standin_state()
    torch.save(state, path)
    return state


@pytest.fixture(scope="session")
def standin(tmp_path_factory, standin_state):
    root = tmp_path_factory.mktemp("standin")
    sha = write_openai_archive(standin_state, root / "files" / ARCHIVE_NAME)
    torch.manual_seed(123)
    from model_build.weights import register_repo_architectures
    import open_clip

    register_repo_architectures()
    random_state = open_clip.create_model("clip-tiny").state_dict()
    random_sha = write_openai_archive(random_state, root / "files" / "random" / ARCHIVE_NAME)
    path, random_path = f"/clip/models/{sha}/{ARCHIVE_NAME}", f"/clip/models/{random_sha}/{ARCHIVE_NAME}"
    data = (root / "files" / ARCHIVE_NAME).read_bytes()
    with StandinHub({path: data, random_path: (root / "files" / "random" / ARCHIVE_NAME).read_bytes()}) as hub:
        configs = root / "configs"
        write_standin_configs(configs, hub.base_url + path, sha)
        yield SimpleNamespace(hub=hub, path=path, url=hub.base_url + path, sha=sha, data=data, configs=configs,
                              config=load_model_config(STANDIN_MODEL_ID, configs / "models"),
                              random_url=hub.base_url + random_path, random_sha=random_sha)


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIP_API_WEIGHTS_CACHE", str(tmp_path / "cache"))
    for name in ("CLIP_API_OFFLINE", "HF_HUB_OFFLINE", "CLIP_API_PROGRESS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "cache"


def pinned(config, url: str, sha256: str):
    weights_file = config.open_clip.weights_file.model_copy(update={"url": url, "sha256": sha256})
    return config.model_copy(update={"open_clip": config.open_clip.model_copy(update={"weights_file": weights_file})})


def test_download_shows_progress_lands_in_the_cache_verified_and_is_reused(standin, cache, capfd):
    standin.hub.requests.clear()
    path = fetch_pinned_file(standin.config.open_clip.weights_file, progress=True)
    assert path == cache / ARCHIVE_NAME and hashlib.sha256(path.read_bytes()).hexdigest() == standin.sha
    bar = capfd.readouterr().err
    size = f"{len(standin.data) / 2**20:.2f}M"
    assert f"{size}/{size}" in bar and re.search(r"\d B/s|[kMG]B/s", bar) and re.search(r"<\d\d:\d\d", bar), bar[-300:]  # size, speed, ETA
    assert fetch_pinned_file(standin.config.open_clip.weights_file) == path
    assert standin.hub.requests == [(standin.path, None)]  # the second call read the cache
    assert pretrained_available(standin.config)[0]


def test_an_interrupted_download_resumes_where_it_stopped(standin, cache):
    standin.hub.requests.clear()
    standin.hub.cut_after = len(standin.data) // 3
    with pytest.raises(WeightsUnavailableError, match="run again to resume"):
        fetch_pinned_file(standin.config.open_clip.weights_file, progress=False)
    part = cache / f"{ARCHIVE_NAME}.part"
    assert part.stat().st_size == len(standin.data) // 3
    path = fetch_pinned_file(standin.config.open_clip.weights_file, progress=False)
    assert standin.hub.requests[-1] == (standin.path, f"bytes={len(standin.data) // 3}-")
    assert path.read_bytes() == standin.data and not part.exists()


def test_a_tampered_download_is_refused_naming_both_digests(standin, cache):
    tampered = bytearray(standin.data)
    tampered[len(tampered) // 2] ^= 0x01
    standin.hub.files[standin.path] = bytes(tampered)
    try:
        with pytest.raises(WeightsDigestMismatch) as caught:
            build_model(standin.config, WeightsSource("pretrained"))
        message = str(caught.value)
        assert standin.sha in message and hashlib.sha256(tampered).hexdigest() in message and "refused" in message
        assert not any(cache.iterdir())  # deleted, never loaded or kept
        # a tampered file already in the cache is never used: the pinned one is fetched instead
        (cache / ARCHIVE_NAME).write_bytes(bytes(tampered))
        standin.hub.files[standin.path] = standin.data
        lines = []
        assert fetch_pinned_file(standin.config.open_clip.weights_file, progress=False, log=lines.append).read_bytes() == standin.data
        assert hashlib.sha256(tampered).hexdigest() in lines[0] and standin.sha in lines[0]
    finally:
        standin.hub.files[standin.path] = standin.data


def test_unreachable_or_offline_weights_fail_naming_the_alternatives(standin, cache, monkeypatch):
    from tests.conftest import free_port

    unreachable = pinned(standin.config, f"http://127.0.0.1:{free_port()}/clip/models/{standin.sha}/{ARCHIVE_NAME}", standin.sha)
    with pytest.raises(WeightsUnavailableError) as caught:
        build_model(unreachable, WeightsSource("pretrained"))
    for text in ("could not be downloaded", str(pinned_file_path(unreachable.open_clip.weights_file)), "--weights random-init", "s3://"):
        assert text in str(caught.value)
    assert pretrained_available(unreachable)[0] is False
    monkeypatch.setenv("CLIP_API_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="offline"):
        build_model(standin.config, WeightsSource("pretrained"))
    assert pretrained_available(standin.config) == (False, "offline (CLIP_API_OFFLINE/HF_HUB_OFFLINE) and the weights are not in the cache")


def package(config, tmp_path, architecture=None):
    return package_model(config, tmp_path / "out", WeightsSource("pretrained"), architecture=architecture, progress=Progress(4, enabled=False))


def test_verified_weights_pass_the_gate_with_first_use_golden_references_and_a_committed_file_wins(standin, cache, tmp_path):
    artifact = package(standin.config, tmp_path)
    weights = artifact.manifest.weights
    assert weights.source == "pretrained" and weights.checkpoint_sha256 == standin.sha and weights.checkpoint == standin.url
    absent = tmp_path / "no-committed.golden.npz"

    first = validate_artifact(artifact.directory, standin.config, golden_file=absent)
    report = first.report
    assert first.passed, report["verdict"]["reasons"]
    assert report["verdict"]["golden"] == "first-use-computed" and "computed now" in report["golden"]["note"]
    metrics, thresholds = report["metrics"], report["thresholds"]
    assert metrics["golden_min_cosine"] >= 0.99999
    assert thresholds["zero_shot_min_top1"] == 0.5 and metrics["zero_shot_top1"] >= 0.5  # 6/12: P(chance) < 0.001
    assert thresholds["text_similarity_min_accuracy"] == 15 / 16 and metrics["text_similarity_accuracy"] >= 15 / 16
    stored = first_use_golden_path(STANDIN_MODEL_ID, standin.sha)
    assert stored.parent == cache / "golden"
    metadata = GoldenReferences.load(stored).metadata
    assert metadata["origin"] == "first-use" and metadata["weights_file_sha256"] == standin.sha
    assert metadata["weights_sha256"] == weights.sha256 and len(metadata["probe_set_sha256"]) == 64
    assert {"open_clip", "torch", "numpy", "pillow"} <= set(metadata["library_versions"])

    again = validate_artifact(artifact.directory, standin.config, golden_file=absent)
    assert again.passed and again.report["verdict"]["golden"] == "first-use-stored"

    # a stored first-use file that no longer matches (another library moved the embeddings) fails the gate
    moved = GoldenReferences.load(stored)
    GoldenReferences(np.roll(moved.text, 1, axis=0), moved.image, moved.metadata).save(stored)
    drifted = validate_artifact(artifact.directory, standin.config, golden_file=absent)
    assert any(r.startswith("golden: min cosine") and "first-use-stored" in r for r in drifted.report["verdict"]["reasons"])

    committed = tmp_path / "committed.golden.npz"
    from clip_api.cli import main

    GoldenReferences(moved.text, moved.image, {**moved.metadata, "origin": "committed"}).save(committed)
    wins = validate_artifact(artifact.directory, standin.config, golden_file=committed)
    assert wins.passed and wins.report["verdict"]["golden"] == "committed"  # the drifted first-use file is not consulted
    GoldenReferences(moved.text, np.roll(moved.image, 1, axis=0), moved.metadata).save(committed)
    mismatch = validate_artifact(artifact.directory, standin.config, golden_file=committed)
    assert any(r.startswith("golden: min cosine") and "committed" in r for r in mismatch.report["verdict"]["reasons"])


def test_wrong_weights_that_verify_still_fail_the_independent_checks(standin, cache, tmp_path):
    """A config that pins random weights: the download verifies and first-use golden references are made from
    them, so only the checks that do not depend on our own outputs can catch it, and they do."""
    wrong = pinned(standin.config, standin.random_url, standin.random_sha)
    result = validate_artifact(package(wrong, tmp_path).directory, wrong, golden_file=tmp_path / "absent.npz")
    reasons = result.report["verdict"]["reasons"]
    assert result.report["verdict"]["golden"] == "first-use-computed"
    assert any(r.startswith("zero-shot top-1") for r in reasons) and any(r.startswith("text similarity") for r in reasons), reasons
    assert result.report["metrics"]["parity_min_cosine"] >= 0.99999  # the serving path is faithful: the weights are wrong


def test_gelu_instead_of_quick_gelu_fails_on_the_served_graphs(standin, cache, tmp_path):
    """Measured on the stand-in: zero-shot and text similarity score the same with GELU (trained models are robust
    to the swap), so the served graphs' activation is what catches it, with parity against open_clip."""
    import open_clip

    from clip_core.paths import OPEN_CLIP_CONFIGS_DIR

    spec = json.loads((OPEN_CLIP_CONFIGS_DIR / "clip-tiny.json").read_text())
    (tmp_path / "clip-tiny-gelu.json").write_text(json.dumps({**spec, "quick_gelu": False}))
    open_clip.add_model_config(tmp_path / "clip-tiny-gelu.json")
    result = validate_artifact(package(standin.config, tmp_path, architecture="clip-tiny-gelu").directory, standin.config,
                               golden_file=tmp_path / "absent.npz")
    reasons = result.report["verdict"]["reasons"]
    assert "the served model uses GELU, but these weights were trained with QuickGELU (embeddings drift)" in reasons, reasons
