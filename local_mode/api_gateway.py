"""A local API Gateway (REST, proxy integration) in front of the real API Lambda handler.

Each request becomes an API Gateway proxy event for the function that serves its route; the
handler runs in-process with that function's *current* configuration read from the control plane
(moto), so a promotion's configuration switch takes effect exactly as in AWS. Requests are
handled one at a time, as one Lambda execution environment would.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import ThreadingHTTPServer

from clip_api.model_config import ModelConfig
from local_mode.http_handler import QuietHandler

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit


@dataclass
class LambdaContext:
    function_name: str
    started: float
    timeout_ms: int = 29_000
    memory_limit_in_mb: int = 512
    aws_request_id: str = ""

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self.timeout_ms - 1000 * (time.monotonic() - self.started)))


def proxy_event(method: str, path: str, headers: dict, body: str) -> dict:
    request_id = str(uuid.uuid4())
    return {
        "resource": path, "path": path, "httpMethod": method, "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": None, "stageVariables": None, "body": body, "isBase64Encoded": False,
        "requestContext": {"resourcePath": path, "httpMethod": method, "path": f"/local{path}", "stage": "local", "requestId": request_id,
                           "accountId": "123456789012", "apiId": "local", "identity": {"sourceIp": headers.get("X-Forwarded-For", "127.0.0.1")},
                           "requestTimeEpoch": int(time.time() * 1000)},
    }


class LocalApiGateway:
    def __init__(self, models: list[ModelConfig], lambda_client, function_name_format: str, host: str = "127.0.0.1", port: int = 8000):
        self.functions = {f"/{m.route}": function_name_format.format(model_id=m.model_id) for m in models}
        self.functions["/v1/embeddings"] = function_name_format.format(model_id=models[0].model_id)
        self.lambda_client = lambda_client
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def invoke(self, method: str, path: str, headers: dict, body: str) -> dict:
        function = self.functions.get(path)
        if function is None:
            return {"statusCode": 403, "headers": {"Content-Type": "application/json"}, "body": json.dumps({"message": "Missing Authentication Token"})}
        with self._lock:
            variables = self.lambda_client.get_function_configuration(FunctionName=function).get("Environment", {}).get("Variables", {})
            os.environ.update({k: v for k, v in variables.items() if isinstance(v, str)})
            from embedding_api.app import handler

            return handler(proxy_event(method, path, headers, body), LambdaContext(function, time.monotonic(), aws_request_id=str(uuid.uuid4())))

    def _handler(self):
        gateway = self

        class Handler(QuietHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self.rfile.read(length)
                    return self.respond(413, {"Content-Type": "application/json"}, b'{"message": "Request Too Long"}')
                body = self.rfile.read(length).decode("utf-8", errors="replace")
                try:
                    result = gateway.invoke(self.command, self.path.split("?")[0], dict(self.headers.items()), body)
                except Exception as error:  # noqa: BLE001 - API Gateway answers 502 when the integration fails
                    return self.respond(502, {"Content-Type": "application/json"}, json.dumps({"message": f"Internal server error ({type(error).__name__})"}).encode())
                headers = dict(result.get("headers") or {})
                for key, values in (result.get("multiValueHeaders") or {}).items():
                    headers.setdefault(key, values[0])
                self.respond(result["statusCode"], headers, (result.get("body") or "").encode())

            do_POST = do_GET = do_OPTIONS = _any  # noqa: N815

        return Handler

    def start(self) -> "LocalApiGateway":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
