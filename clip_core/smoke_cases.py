"""The smoke-test cases file: written by the validation step beside evaluation.json (a few requests in the
public contract and the embeddings the validated artifact answered, which matched open_clip), read by the
smoke-test Lambda, which replays them against a new endpoint (promotion/smoke.py compares)."""

from __future__ import annotations

import base64
import json

SMOKE_FILE = "smoke_test.json"
SMOKE_TEXTS = ("a photo of a dog", "an astronaut floating above the earth", "日本語のテキスト 🐶")
FORMAT_VERSION = 1


def smoke_requests(image: bytes) -> list[dict]:
    return [{"text": text} for text in SMOKE_TEXTS] + [{"image": base64.b64encode(image).decode()}]


def dumps(cases: list[dict]) -> str:
    return json.dumps({"format_version": FORMAT_VERSION, "cases": cases})


def loads(text: str | bytes) -> list[dict]:
    document = json.loads(text)
    if document.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"smoke-test cases of format {document.get('format_version')!r}; this code reads format {FORMAT_VERSION}")
    return document["cases"]
