"""SageMaker inference-toolkit contract (model_fn, input_fn, predict_fn, output_fn).

This is what `code/inference.py` in the artifact exposes, so the artifact also runs inside AWS's
own PyTorch serving container (sagemaker-pytorch-inference on TorchServe). Our slim
bring-your-own container (`python -m inference_code serve`) is the production path; both call
the same EmbeddingService, so they answer the same embeddings and the same error codes.
"""

from __future__ import annotations

from clip_core.limits import ServingLimits
from inference_code.contract import encode_embeddings, parse_request
from inference_code.errors import RequestError
from inference_code.server import load_service
from inference_code.service import EmbeddingService

# The toolkit gives input_fn no handle on the model: the limits of the one loaded model live here.
_limits = ServingLimits()


def _toolkit_error(error: RequestError) -> Exception:
    try:
        from sagemaker_inference.errors import GenericInferenceToolkitError
    except ImportError:
        return error
    return GenericInferenceToolkitError(error.status, f"{error.code}: {error.message}")


def model_fn(model_dir: str) -> EmbeddingService:
    global _limits
    service = load_service(model_dir)
    _limits = service.limits
    return service


def input_fn(request_body, request_content_type):
    body = request_body.encode("utf-8") if isinstance(request_body, str) else bytes(request_body)
    try:
        return parse_request(body, request_content_type, _limits)
    except RequestError as error:
        raise _toolkit_error(error) from None


def predict_fn(data, model: EmbeddingService):
    try:
        vectors, _truncated = model.embed(data)
    except RequestError as error:
        raise _toolkit_error(error) from None
    return vectors, data.batch


def output_fn(prediction, accept):
    if accept and accept.split(";")[0].strip() not in ("application/json", "*/*"):
        raise _toolkit_error(RequestError(406, "not_acceptable", "responses are application/json"))
    vectors, batch = prediction
    return encode_embeddings(vectors, batch), "application/json"
