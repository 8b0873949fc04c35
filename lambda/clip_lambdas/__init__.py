"""The Lambda functions' code, one subpackage per function (handlers `clip_lambdas.<function>.app.handler`):
the public API (`api`), the promotion planner and the smoke test. infra/lambda_bundle.py zips what their handlers import."""
