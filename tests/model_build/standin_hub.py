"""A local stand-in for the place released CLIP weights are downloaded from, for offline tests.

- `train_standin_state`: the tiny CLIP architecture (QuickGELU) trained here for a few seconds until
  it behaves like CLIP on the sanity probes (rendered words to their prompts, synonyms closer than
  unrelated words): a seeded stand-in for released weights that the gate can pass for real.
- `write_openai_archive`: those weights in OpenAI's release format (a TorchScript archive with fp16
  tensors and the input_resolution/context_length/vocab_size entries), so the real loading code runs.
- `StandinHub`: an HTTP server on 127.0.0.1 serving files as a CDN does (Content-Length, Range
  requests answered 206), which can also cut a download short or serve tampered bytes.
- `write_standin_configs`: a configs directory (CLIP_API_CONFIGS_DIR) with a TEST model config that
  pins the archive's sha256 and URL, like the production configs pin OpenAI's files.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
import yaml

STANDIN_MODEL_ID = "clip-standin"
ARCHIVE_NAME = "clip-standin.pt"


def train_standin_state(seed: int = 0, max_steps: int = 400) -> dict[str, torch.Tensor]:
    import open_clip
    from PIL import Image

    from model_validation.probes import SIMILARITY_TRIPLETS, ZERO_SHOT_PROMPT, ZERO_SHOT_WORDS, render_word, similarity_texts
    from model_build.reference import OpenClipReference
    from model_build.weights import register_repo_architectures

    register_repo_architectures()
    torch.manual_seed(seed)
    model = open_clip.create_model("clip-tiny")
    reference = OpenClipReference(model, "clip-tiny")

    def pixels(word: str) -> torch.Tensor:
        buffer = io.BytesIO()
        render_word(word).save(buffer, "PNG")
        return reference.transform(Image.open(io.BytesIO(buffer.getvalue())))

    images = torch.stack([pixels(word) for word in ZERO_SHOT_WORDS])
    prompts = reference.tokenizer([ZERO_SHOT_PROMPT.format(word) for word in ZERO_SHOT_WORDS])
    triplets = reference.tokenizer(similarity_texts()).reshape(len(SIMILARITY_TRIPLETS), 3, -1)
    labels_words, labels_triplets = torch.arange(len(ZERO_SHOT_WORDS)), torch.arange(len(SIMILARITY_TRIPLETS))
    visual = [p for n, p in model.named_parameters() if n.startswith("visual.")]
    textual = [p for n, p in model.named_parameters() if not n.startswith("visual.")]
    optimizer = torch.optim.Adam([{"params": visual, "lr": 5e-4}, {"params": textual, "lr": 2e-3}])
    cross_entropy = torch.nn.functional.cross_entropy
    model.train()
    for step in range(max_steps):
        image_vectors, prompt_vectors = model.encode_image(images, normalize=True), model.encode_text(prompts, normalize=True)
        anchors, synonyms, unrelated = (model.encode_text(triplets[:, i], normalize=True) for i in range(3))
        logits = 20 * image_vectors @ prompt_vectors.T
        loss = (cross_entropy(logits, labels_words) + cross_entropy(logits.T, labels_words)) / 2
        loss = loss + cross_entropy(20 * anchors @ torch.cat([synonyms, unrelated]).T, labels_triplets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 9:
            with torch.no_grad():
                words_right = bool((logits.argmax(1) == labels_words).all())
                margin = float(((anchors * synonyms).sum(1) - (anchors * unrelated).sum(1)).min())
            if words_right and margin > 0.2:
                break
    model.eval()
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


class _Holder(torch.nn.Module):
    pass


def write_openai_archive(state: dict[str, torch.Tensor], path: Path, image_size: int = 224, context_length: int = 77) -> str:
    """Write `state` as OpenAI's release files are laid out (TorchScript, fp16); returns the file's sha256."""
    root = _Holder()
    extras = {"input_resolution": torch.tensor(image_size), "context_length": torch.tensor(context_length),
              "vocab_size": torch.tensor(state["token_embedding.weight"].shape[0])}
    for name, tensor in {**state, **extras}.items():
        *parents, leaf = name.split(".")
        module = root
        for part in parents:
            if not hasattr(module, part):
                module.add_module(part, _Holder())
            module = getattr(module, part)
        value = tensor.half() if tensor.is_floating_point() else tensor
        module.register_buffer(leaf, value.contiguous())
    scripted = torch.jit.script(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


class StandinHub:
    """Serves {url path: bytes} on 127.0.0.1. `cut_after` bytes: the next full download stops there (once)."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut_after: int | None = None
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                hub.requests.append((self.path, self.headers.get("Range")))
                data = hub.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range", "").startswith("bytes="):
                    start = int(self.headers["Range"][6:].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if hub.cut_after is not None and start == 0:
                    cut, hub.cut_after = hub.cut_after, None
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "StandinHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_standin_configs(configs_dir: Path, url: str, sha256: str) -> Path:
    """A CLIP_API_CONFIGS_DIR: the repository's open_clip architectures and tiny demo model, plus a TEST config
    that pins the stand-in archive exactly as the production configs pin OpenAI's files."""
    from clip_core.paths import CONFIGS_DIR

    shutil.copytree(CONFIGS_DIR / "open_clip", configs_dir / "open_clip", dirs_exist_ok=True)
    (configs_dir / "models").mkdir(parents=True, exist_ok=True)
    shutil.copy2(CONFIGS_DIR / "models" / "clip-tiny.yaml", configs_dir / "models" / "clip-tiny.yaml")
    production = yaml.safe_load((CONFIGS_DIR / "models" / "clip-vit-b-32.yaml").read_text())
    config = {
        **production,
        "model_id": STANDIN_MODEL_ID,
        "description": "TEST ONLY: the tiny architecture with stand-in released weights served by a local hub",
        "route": "standin",
        "open_clip": {
            "architecture": "clip-tiny",
            "pretrained": "standin",
            "weights_file": {"url": url, "sha256": sha256, "format": "openai-torchscript",
                             "sources": ["tests/model_build/standin_hub.py (written and served by the test itself)"]},
        },
        "embedding_dim": 64,
        "serving": {"variant": "fp32", "quantize_token_embedding": False},
        "registry": {"model_package_group": STANDIN_MODEL_ID},
        "endpoint": {**production["endpoint"], "memory_mb": 1024, "max_concurrency": 2, "provisioned_concurrency": None},
    }
    path = configs_dir / "models" / f"{STANDIN_MODEL_ID}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
