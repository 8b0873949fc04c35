"""Copied into the artifact as code/inference.py: the module SageMaker's inference toolkit loads."""

from inference_code.sagemaker_handler import input_fn, model_fn, output_fn, predict_fn

__all__ = ["model_fn", "input_fn", "predict_fn", "output_fn"]
