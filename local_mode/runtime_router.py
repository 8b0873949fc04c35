"""A local stand-in for the SageMaker runtime API: InvokeEndpoint routed to real local inference servers.

boto3 reaches it through AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, so the unchanged Lambda code calls it.
A container's 4xx/5xx comes back as SageMaker's ModelError (HTTP 424 with OriginalStatusCode and
OriginalMessage), an unknown endpoint as ValidationException, as the real service answers.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_PATH = re.compile(r"^/endpoints/(?P<name>[^/]+)/invocations$")


class EndpointRoutes:
    def __init__(self):
        self._routes: dict[str, int] = {}
        self._lock = threading.Lock()

    def set(self, endpoint: str, port: int) -> None:
        with self._lock:
            self._routes[endpoint] = port

    def remove(self, endpoint: str) -> None:
        with self._lock:
            self._routes.pop(endpoint, None)

    def get(self, endpoint: str) -> int | None:
        with self._lock:
            return self._routes.get(endpoint)

    def names(self) -> set[str]:
        with self._lock:
            return set(self._routes)


def _handler(routes: EndpointRoutes):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, code: str, payload: dict) -> None:
            self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", "x-amzn-ErrorType": code})

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            match = _PATH.match(self.path.split("?")[0])
            port = routes.get(match["name"]) if match else None
            if port is None:
                name = match["name"] if match else self.path
                return self._error(400, "ValidationException", {"message": f"Endpoint {name} not found."})
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                connection.request("POST", "/invocations", body=body, headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
                answer = connection.getresponse()
                payload = answer.read()
            except OSError as error:
                return self._error(424, "ModelError", {"message": "Received server error from model", "OriginalStatusCode": 503,
                                                       "OriginalMessage": str(error)})
            finally:
                connection.close()
            if answer.status != 200:
                return self._error(424, "ModelError", {"message": f"Received client error ({answer.status}) from primary",
                                                       "OriginalStatusCode": answer.status, "OriginalMessage": payload.decode(errors="replace")})
            self._send(200, payload, {"Content-Type": answer.getheader("Content-Type", "application/json"),
                                      "x-Amzn-Invoked-Production-Variant": "AllTraffic",
                                      "X-Amzn-SageMaker-Custom-Attributes": answer.getheader("X-Amzn-SageMaker-Custom-Attributes", "")})

    return Handler


class RuntimeRouter:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.routes = EndpointRoutes()
        self.server = ThreadingHTTPServer((host, port), _handler(self.routes))
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "RuntimeRouter":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
