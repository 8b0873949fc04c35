"""A local stand-in for the SageMaker runtime API: InvokeEndpoint routed to real local inference servers.

boto3 reaches it through AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, so the unchanged Lambda code calls it.
A container's 4xx/5xx comes back as SageMaker's ModelError (HTTP 424 with OriginalStatusCode and
OriginalMessage), an unknown endpoint as ValidationException, as the real service answers. Every
invocation is reported to the control plane's CloudWatch as SageMaker reports it (AWS/SageMaker
Invocations, Invocation4XXErrors, Invocation5XXErrors, ModelLatency per endpoint and variant), so the
promotion's bake sees the traffic and its alarms have data, as in AWS.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from http.server import ThreadingHTTPServer

from local_mode.http_handler import QuietHandler

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


class SageMakerMetrics:
    """What SageMaker publishes per invocation, written to a CloudWatch client (the local control plane's)."""

    def __init__(self, cloudwatch):
        self.cloudwatch = cloudwatch

    def invocation(self, endpoint: str, status: int, latency_s: float) -> None:
        dimensions = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": "AllTraffic"}]
        data = [("Invocations", 1.0, "None"), ("Invocation4XXErrors", float(400 <= status < 500), "None"),
                ("Invocation5XXErrors", float(status >= 500), "None"), ("ModelLatency", latency_s * 1e6, "Microseconds")]
        try:
            self.cloudwatch.put_metric_data(Namespace="AWS/SageMaker", MetricData=[
                {"MetricName": name, "Value": value, "Unit": unit, "Dimensions": dimensions} for name, value, unit in data])
        except Exception:  # noqa: BLE001 - metrics are best effort, as SageMaker's are for the caller
            pass


def _handler(routes: EndpointRoutes, router: "RuntimeRouter"):
    class Handler(QuietHandler):
        def _error(self, status: int, code: str, payload: dict) -> None:
            self.respond(status, {"Content-Type": "application/json", "x-amzn-ErrorType": code}, json.dumps(payload).encode())

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            match = _PATH.match(self.path.split("?")[0])
            port = routes.get(match["name"]) if match else None
            if port is None:
                name = match["name"] if match else self.path
                return self._error(400, "ValidationException", {"message": f"Endpoint {name} not found."})
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            started = time.monotonic()
            try:
                connection.request("POST", "/invocations", body=body, headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
                answer = connection.getresponse()
                payload = answer.read()
            except OSError as error:
                router.report(match["name"], 503, time.monotonic() - started)
                return self._error(424, "ModelError", {"message": "Received server error from model", "OriginalStatusCode": 503,
                                                       "OriginalMessage": str(error)})
            finally:
                connection.close()
            router.report(match["name"], answer.status, time.monotonic() - started)
            if answer.status != 200:
                return self._error(424, "ModelError", {"message": f"Received client error ({answer.status}) from primary",
                                                       "OriginalStatusCode": answer.status, "OriginalMessage": payload.decode(errors="replace")})
            self.respond(200, {"Content-Type": answer.getheader("Content-Type", "application/json"),
                               "x-Amzn-Invoked-Production-Variant": "AllTraffic",
                               "X-Amzn-SageMaker-Custom-Attributes": answer.getheader("X-Amzn-SageMaker-Custom-Attributes", "")}, payload)

    return Handler


class RuntimeRouter:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.routes = EndpointRoutes()
        self.metrics: SageMakerMetrics | None = None  # set once the control plane is up
        self.server = ThreadingHTTPServer((host, port), _handler(self.routes, self))
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def report(self, endpoint: str, status: int, latency_s: float) -> None:
        if self.metrics is not None:
            self.metrics.invocation(endpoint, status, latency_s)

    def start(self) -> "RuntimeRouter":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
