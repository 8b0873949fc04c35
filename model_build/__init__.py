"""Building serving artifacts from open_clip models: weights, ONNX export, quantisation, packaging.

Runs where torch and open_clip are installed (developer machines, the SageMaker Processing image).
"""
