"""Dynamic int8 quantisation of the exported towers with ONNX Runtime.

Weights of MatMul/Gemm become int8 (per output channel), activations are quantised on the fly.
Convolutions (the ViT patch embedding) stay fp32: ConvInteger is slow on CPU and the patch
embedding is a small share of the compute. The result is only ever registered after the
validation gate compares it with fp32 open_clip.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process


def quantize_int8(source: Path, target: Path, per_channel: bool = True) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(
            str(prepared),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=["MatMul", "Gemm"],
        )
