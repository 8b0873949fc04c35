"""A local API Gateway (REST, proxy integration) in front of the real API Lambda handler.

Each request becomes an API Gateway proxy event for the function that serves its route; the
handler runs in-process with that function's *current* configuration read from the control plane
(moto), so a promotion's configuration switch takes effect exactly as in AWS. Requests are
handled one at a time, as one Lambda execution environment would. What the handler writes to stdout
(its log, its EMF metrics: CloudWatch Logs in AWS) goes to `lambda_log` when one is given.

This process is that execution environment, for the promotion's in-process planner and smoke test
too: a handler reads its configuration from the process environment, so the gateway (alone) puts it
there, as the Lambda runtime does: `runtime_environment` when it starts (what the runtime provides;
local mode: the control plane's and the SageMaker runtime router's endpoints, credentials, Powertools
settings), the function's variables before each call.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

from clip_core.model_config import ModelConfig
from local_mode.http_handler import QuietHandler
from local_mode.output import thread_stdout_to

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
DRAIN_CAP_BYTES = 2 * MAX_BODY_BYTES  # read at most this much of an oversized body before closing
BODY_TIMEOUT_S = 30
_DIGITS = re.compile(r"[0-9]{1,12}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,8}")


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


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: when dozens of clients connect at once (64 in
    # `clip-api loadtest`), the connections past it are reset; the gateway's own limit is its lock.
    request_queue_size = 128


class LocalApiGateway:
    def __init__(self, models: list[ModelConfig], lambda_client, function_name_format: str, host: str = "127.0.0.1", port: int = 8000,
                 lambda_log: Path | None = None, runtime_environment: dict[str, str] | None = None):
        self.functions = {f"/{m.route}": function_name_format.format(model_id=m.model_id) for m in models}
        self.functions["/v1/embeddings"] = function_name_format.format(model_id=models[0].model_id)
        self.lambda_client = lambda_client
        self._lock = threading.Lock()
        self.server = _Server((host, port), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.lambda_log = lambda_log
        self.runtime_environment = dict(runtime_environment or {})
        self._lambda_output = None

    def invoke(self, method: str, path: str, headers: dict, body: str) -> dict:
        function = self.functions.get(path)
        if function is None:
            return {"statusCode": 403, "headers": {"Content-Type": "application/json"}, "body": json.dumps({"message": "Missing Authentication Token"})}
        with self._lock:
            variables = self.lambda_client.get_function_configuration(FunctionName=function).get("Environment", {}).get("Variables", {})
            os.environ.update({k: v for k, v in variables.items() if isinstance(v, str)})
            with thread_stdout_to(self._lambda_output):  # the import too: Powertools' Logger keeps the stdout it was made with
                from clip_lambdas.api.app import handler

                context = LambdaContext(function, time.monotonic(), aws_request_id=str(uuid.uuid4()))
                return handler(proxy_event(method, path, headers, body), context)

    def _handler(self):
        gateway = self

        class Handler(QuietHandler):
            timeout = BODY_TIMEOUT_S  # a client that stops sending holds its thread this long at most

            def _reject(self, status: int, message: str) -> None:
                """Answer and close: after a framing error the rest of the stream cannot be trusted."""
                self.close_connection = True
                self.respond(status, {"Content-Type": "application/json", "Connection": "close"}, json.dumps({"message": message}).encode())

            def _body(self) -> bytes | None:
                """The request body per RFC 9112 section 6, or None once an error has been answered."""
                encodings = self.headers.get_all("Transfer-Encoding") or []
                lengths = [value.strip() for value in self.headers.get_all("Content-Length") or []]
                if encodings and lengths:  # request smuggling's classic: refuse rather than pick one
                    return self._reject(400, "Bad Request: both Transfer-Encoding and Content-Length")
                if encodings:
                    codings = [c.strip().lower() for c in ",".join(encodings).split(",") if c.strip()]
                    if codings != ["chunked"]:
                        return self._reject(400, f"Bad Request: unsupported Transfer-Encoding {','.join(codings)!r}")
                    return self._chunked()
                if not lengths:
                    return b""
                if len(set(lengths)) != 1 or not _DIGITS.fullmatch(lengths[0]):
                    return self._reject(400, "Bad Request: invalid Content-Length")
                length = int(lengths[0])
                if length > MAX_BODY_BYTES:
                    self._drain(length)
                    return self._reject(413, "Request Too Long")
                body = self.rfile.read(length)
                if len(body) < length:
                    return self._reject(400, "Bad Request: the body is shorter than its Content-Length")
                return body

            def _chunked(self) -> bytes | None:
                body = bytearray()
                while True:
                    line = self.rfile.readline(1024)
                    size = line.split(b";", 1)[0].strip()
                    if not line.endswith(b"\n") or not _HEX.fullmatch(size):
                        return self._reject(400, "Bad Request: malformed chunk")
                    size = int(size, 16)
                    if size == 0:
                        break
                    if len(body) + size > MAX_BODY_BYTES:
                        return self._reject(413, "Request Too Long")
                    chunk = self.rfile.read(size)
                    if len(chunk) < size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                        return self._reject(400, "Bad Request: malformed chunk")
                    body += chunk
                for _ in range(100):  # trailer fields, then the empty line
                    line = self.rfile.readline(8192)
                    if line in (b"\r\n", b"\n", b""):
                        return bytes(body)
                return self._reject(400, "Bad Request: too many trailer fields")

            def _drain(self, length: int) -> None:
                """Read (and drop) what the client sends, up to a cap, so it sees the 413 rather than a reset."""
                left = min(length, DRAIN_CAP_BYTES)
                self.connection.settimeout(min(self.timeout, 2.0))  # a client that sends nothing more gets its 413 soon
                try:
                    while left > 0:
                        chunk = self.rfile.read1(min(left, 65536))
                        if not chunk:
                            break
                        left -= len(chunk)
                except (TimeoutError, OSError):
                    pass

            def _any(self) -> None:
                try:
                    raw = self._body()
                except (TimeoutError, OSError):
                    return self._reject(408, "Request Timeout")
                if raw is None:
                    return None
                body = raw.decode("utf-8", errors="replace")
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
        os.environ.update(self.runtime_environment)
        if self.lambda_log is not None:
            self.lambda_log.parent.mkdir(parents=True, exist_ok=True)
            self._lambda_output = self.lambda_log.open("a", buffering=1)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._lambda_output is not None:
            with self._lock:
                self._lambda_output.close()
                self._lambda_output = None
