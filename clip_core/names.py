"""Names that several layers must agree on, defined once: the AWS resources this project creates (the
templates create them, IAM policies scope to them, the Lambdas, the workflow and local mode find them)
and the environment variables that carry them to the code that runs."""

from __future__ import annotations

PROJECT = "clip-embedding-api"

BOOTSTRAP_STACK = f"{PROJECT}-bootstrap"
SERVING_STACK = f"{PROJECT}-serving"
CICD_STACK = f"{PROJECT}-cicd"
POINTER_TABLE = f"{PROJECT}-serving-pointer"
PLANNER_FUNCTION = f"{PROJECT}-promotion-planner"
SMOKE_TEST_FUNCTION = f"{PROJECT}-smoke-test"
STATE_MACHINE = f"{PROJECT}-promotion"
TOPIC = f"{PROJECT}-promotions"

# CloudWatch: every API metric is in this namespace with a `service` dimension (and a `model` one).
METRICS_NAMESPACE = "ClipEmbeddingApi"
METRICS_SERVICE = PROJECT


def model_resource_name(model_id: str) -> str:
    """A model's own API Lambda and its SageMaker pipeline."""
    return f"{PROJECT}-{model_id}"


def artifact_bucket_name(account: str, region: str) -> str:
    return f"{PROJECT}-{account}-{region}"


# SageMaker models, endpoint configs and endpoints: <stem>-v<version>, with IAM scoped to clip-* (infra/stacks).
ENDPOINT_NAME_PREFIX = "clip-"


def endpoint_stem(model_id: str) -> str:
    """clip-vit-b-32 for model clip-vit-b-32 (not clip-clip-vit-b-32), clip-foo for model foo."""
    return model_id if model_id.startswith(ENDPOINT_NAME_PREFIX) else ENDPOINT_NAME_PREFIX + model_id


def endpoint_prefixes(model_id: str) -> tuple[str, ...]:
    """The prefixes of a model's endpoint names: today's, then the one used before (clip-<model_id>-v), so the
    endpoints an earlier release created are still found and retired."""
    return tuple(dict.fromkeys((f"{endpoint_stem(model_id)}-v", f"{ENDPOINT_NAME_PREFIX}{model_id}-v")))


def is_model_endpoint(name: str, prefixes: tuple[str, ...]) -> bool:
    """One of the prefixes, then the version number only: clip-a-v2-v1 is model clip-a-v2's, not clip-a's."""
    return any(name.startswith(prefix) and name[len(prefix):].isdigit() for prefix in prefixes)


# Environment variables: written by the templates (or local mode), read by the code they configure.
POINTER_TABLE_ENV = "SERVING_POINTER_TABLE"  # the Lambdas: the serving pointer table
MODEL_ID_ENV = "MODEL_ID"  # the API Lambda: the model it serves
SERVED_MODELS_ENV = "SERVED_MODELS"  # the API Lambda: every model the API serves (GET /models, /v1/embeddings)
CORS_ALLOW_ORIGIN_ENV = "CORS_ALLOW_ORIGIN"  # the API Lambda
METRICS_NAMESPACE_ENV = "POWERTOOLS_METRICS_NAMESPACE"  # Powertools' own variable
REQUIRE_IMAGE_DIGEST_ENV = "REQUIRE_IMAGE_DIGEST"  # the planner: "false" only in local mode (no registry)
BUCKET_ENV = "CLIP_API_BUCKET"  # the CLI and pipelines: the artifact bucket
SERVING_THREADS_ENV = "CLIP_API_THREADS"  # the serving container: cores it may use (default: all)
