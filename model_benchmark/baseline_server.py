"""The naive baseline the benchmark compares against: open_clip in torch fp32 eager mode, its own
tokenizer and transform, behind the same /invocations contract. Not for production use.

python -m model_benchmark.baseline_server MODEL_ID [--seed N] [--port 8080]
"""

from __future__ import annotations

import argparse
import base64
import io
import json

import open_clip
import torch
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clip_core.model_config import load_model_config
from model_build.weights import build_model
from model_build.weights_source import RANDOM_INIT, WeightsSource


def create_app(model_id: str, seed: int) -> Starlette:
    config = load_model_config(model_id)
    built = build_model(config, WeightsSource(RANDOM_INIT), seed=seed)
    model = built.model
    tokenizer = open_clip.get_tokenizer(built.architecture)
    from model_build.reference import OpenClipReference

    transform = OpenClipReference(model, built.architecture).transform  # open_clip's inference transform

    @torch.no_grad()
    def embed(payload: dict):
        if "text" in payload or "texts" in payload:
            texts = [payload["text"]] if "text" in payload else payload["texts"]
            vectors = model.encode_text(tokenizer(texts), normalize=True)
        else:
            images = [payload["image"]] if "image" in payload else payload["images"]
            pixels = torch.stack([transform(Image.open(io.BytesIO(base64.b64decode(data)))) for data in images])
            vectors = model.encode_image(pixels, normalize=True)
        rows = vectors.tolist()
        return rows if ("texts" in payload or "images" in payload) else rows[0]

    async def ping(_: Request) -> Response:
        return Response('{"status": "healthy"}', media_type="application/json")

    def invocations_sync(body: bytes) -> bytes:
        return json.dumps(embed(json.loads(body))).encode()

    async def invocations(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        return Response(await run_in_threadpool(invocations_sync, await request.body()), media_type="application/json")

    return Starlette(routes=[Route("/ping", ping), Route("/invocations", invocations, methods=["POST"])])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("model_id")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    uvicorn.run(create_app(args.model_id, args.seed), host=args.host, port=args.port, workers=1, log_level="warning")


if __name__ == "__main__":
    main()
