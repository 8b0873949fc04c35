"""The model-build half of the loop: one SageMaker Pipeline per model config (package, validate, register)."""
