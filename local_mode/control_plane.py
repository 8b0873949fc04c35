"""moto in server mode on loopback: the AWS control plane of local mode."""

from __future__ import annotations

import json
import os
import urllib.request

from moto.server import ThreadedMotoServer

REGION = "us-east-1"
ACCOUNT = "123456789012"


class ControlPlane:
    def __init__(self, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)

    def start(self) -> "ControlPlane":
        self.server.start()
        # Step Functions tasks call back into moto on MOTO_PORT; boto3 everywhere else follows AWS_ENDPOINT_URL.
        os.environ.update({"MOTO_PORT": str(self.port), "AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                           "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION})
        self._post("/moto-api/config", {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}})
        return self

    def queue_lambda_result(self, result: dict) -> None:
        """moto's Lambda runs no code without Docker: it answers with results queued here, in order."""
        self._post("/moto-api/static/lambda-simple/response", {"results": [json.dumps(result)], "region": REGION})

    def _post(self, path: str, payload: dict) -> None:
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        self.server.stop()
