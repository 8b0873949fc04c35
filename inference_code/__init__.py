"""Torch-free serving of CLIP embeddings from a packaged ONNX artifact.

Nothing in this package may import torch or open_clip: the serving image holds only
onnxruntime, numpy, pillow, the tokenizer's dependencies and an ASGI server.
"""
