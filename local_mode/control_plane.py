"""moto in server mode on loopback: the AWS control plane of local mode.

moto answers CORS preflights for any Origin, so any web page open in the user's browser could
drive it (approve a package, rewrite a pointer). The control plane is for this machine's own
clients (boto3, the CLI), which send neither Origin nor Sec-Fetch-* headers: a request with an
Origin other than the control plane's own, a browser's cross-site fetch metadata, or a Host that is
not loopback (DNS rebinding) is refused with 403 before moto sees it.
"""

from __future__ import annotations

import json
import urllib.request

import boto3
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.stepfunctions.parser.asl.utils import boto_client as step_functions_clients
from werkzeug.serving import make_server

from local_mode import moto_fixes

REGION = "us-east-1"
ACCOUNT = "123456789012"


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_REFUSED = b'{"message": "cross-origin requests to the local control plane are refused"}'


def same_origin_only(app, port: int):
    """WSGI middleware: only this machine's own, non-browser (or same-origin) requests reach `app`."""
    own_origins = {f"http://{host}:{port}" for host in LOOPBACK_HOSTS}

    def guarded(environ, start_response):
        origin = environ.get("HTTP_ORIGIN")
        fetch_site = environ.get("HTTP_SEC_FETCH_SITE")
        host = environ.get("HTTP_HOST", "").rsplit(":", 1)[0].lower()
        loopback = host in LOOPBACK_HOSTS or host.endswith(".localhost")  # moto's virtual-hosted S3 names
        if (origin is not None and origin not in own_origins) or fetch_site not in (None, "same-origin", "none") or not loopback:
            start_response("403 Forbidden", [("Content-Type", "application/json"), ("Content-Length", str(len(_REFUSED)))])
            return [_REFUSED]
        return app(environ, start_response)

    return guarded


class _GuardedMotoServer(ThreadedMotoServer):
    def _server_entry(self) -> None:  # ThreadedMotoServer's own, with the guard around moto's WSGI app
        app = same_origin_only(DomainDispatcherApplication(create_backend_app), self._port)
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


class ControlPlaneSession(boto3.Session):
    """A boto3 session whose clients reach the local control plane, or the endpoint `service_endpoints` names for their
    service (the SageMaker runtime: local mode's router): named here, not through AWS_ENDPOINT_URL in our environment."""

    def __init__(self, endpoint_url: str, service_endpoints: dict[str, str] | None = None):
        super().__init__(aws_access_key_id="local", aws_secret_access_key="local", region_name=REGION)
        self.endpoint_url = endpoint_url
        self.service_endpoints = dict(service_endpoints or {})

    def client(self, service_name, *args, **kwargs):
        kwargs.setdefault("endpoint_url", self.service_endpoints.get(service_name, self.endpoint_url))
        return super().client(service_name, *args, **kwargs)


class ControlPlane:
    def __init__(self, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = _GuardedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)

    def start(self) -> "ControlPlane":
        moto_fixes.apply()  # the server runs in this process: its backends are patched here
        self.server.start()
        # Step Functions tasks call back into moto on the port its settings name (MOTO_PORT, read from the environment).
        step_functions_clients.moto_server_port = lambda: str(self.port)
        self._post("/moto-api/config", {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}})
        return self

    def session(self, service_endpoints: dict[str, str] | None = None) -> ControlPlaneSession:
        return ControlPlaneSession(self.url, service_endpoints)

    def queue_lambda_result(self, result: dict) -> None:
        """moto's Lambda runs no code without Docker: it answers with results queued here, in order."""
        self._post("/moto-api/static/lambda-simple/response", {"results": [json.dumps(result)], "region": REGION})

    def _post(self, path: str, payload: dict) -> None:
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        self.server.stop()
