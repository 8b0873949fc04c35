"""Building serving artifacts from open_clip models: weights, ONNX export, quantisation, packaging, and the
open_clip reference the validation and the benchmark compare them with.

Runs where torch and open_clip are installed (developer machines, the SageMaker Processing image).
"""
