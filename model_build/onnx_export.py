"""Exporting open_clip's two towers to ONNX with a dynamic batch axis.

The graphs return raw (unnormalised) features; the server normalises in numpy so that a zero
vector can be reported instead of silently divided by.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

OPSET = 18


class _ImageTower(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values)


class _TextTower(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids)


def _export(module: torch.nn.Module, example: torch.Tensor, input_name: str, path: Path) -> None:
    # The TorchScript exporter writes one self-contained file (all our towers are < 2 GB) and is
    # several times faster than the dynamo exporter; both were checked to match torch to ~1e-6.
    # Not under no_grad: there nn.MultiheadAttention takes its fused fast path, which has no ONNX export.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=["embeddings"],
            dynamic_axes={input_name: {0: "batch"}, "embeddings": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def export_image_tower(model: torch.nn.Module, image_size: int, path: Path) -> None:
    _export(_ImageTower(model).eval(), torch.zeros(2, 3, image_size, image_size), "pixel_values", path)


def export_text_tower(model: torch.nn.Module, context_length: int, path: Path) -> None:
    example = torch.zeros(2, context_length, dtype=torch.long)
    example[:, 0], example[:, 1] = 49406, 49407
    _export(_TextTower(model).eval(), example, "input_ids", path)
