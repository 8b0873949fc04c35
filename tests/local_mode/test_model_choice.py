"""Weights: pretrained where they can be had; otherwise local mode says so and serves the tiny model."""

from local_mode.up import LocalSettings, choose_models
from model_build.weights_source import RANDOM_INIT


def test_without_weights_it_says_so_and_serves_the_tiny_model(monkeypatch):
    monkeypatch.setattr("model_build.weights.pretrained_available", lambda config: (False, "the Hugging Face hub is unreachable"))
    lines = []
    configs, weights = choose_models(LocalSettings(), lines.append)
    assert [c.model_id for c in configs] == ["clip-tiny"] and weights == RANDOM_INIT
    assert any("clip-vit-b-32 cannot be had here: the Hugging Face hub is unreachable" in line for line in lines)
    assert len(lines) == 1 and "serving the tiny demo model instead" in lines[0]  # the fallback, stated in one line


def test_with_weights_it_serves_the_requested_models_pretrained(monkeypatch):
    monkeypatch.setattr("model_build.weights.pretrained_available", lambda config: (True, "cached"))
    configs, weights = choose_models(LocalSettings(), lambda _: None)
    assert [c.model_id for c in configs] == ["clip-vit-b-32"] and weights == "pretrained"  # B/32 by default
    configs, _ = choose_models(LocalSettings(models=("clip-vit-b-32", "clip-vit-l-14")), lambda _: None)
    assert [c.model_id for c in configs] == ["clip-vit-b-32", "clip-vit-l-14"]  # L/14 with --models


def test_random_weights_keep_the_full_size_models(monkeypatch):
    configs, weights = choose_models(LocalSettings(models=("clip-vit-b-32", "clip-vit-l-14"), random_weights=True), lambda _: None)
    assert [c.model_id for c in configs] == ["clip-vit-b-32", "clip-vit-l-14"] and weights == RANDOM_INIT
