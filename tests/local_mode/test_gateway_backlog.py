"""The local API gateway takes many simultaneous connections (clip-api loadtest's 64 clients):
socketserver's listen backlog of 5 reset the ones past it before the accept loop reached them."""

from __future__ import annotations

import socket

from clip_core.model_config import load_model_config


def test_64_connections_at_once_are_all_taken_before_any_is_accepted():
    from local_mode.api_gateway import LocalApiGateway

    gateway = LocalApiGateway([load_model_config("clip-tiny")], lambda_client=None, function_name_format="clip-{model_id}", port=0)
    port = gateway.server.server_address[1]
    sockets = []
    try:
        # the accept loop is not started: every connection waits in the listen queue
        for _ in range(64):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            sockets.append(client)
        for client in sockets:
            client.settimeout(2.0)
            client.send(b"x")  # raises where the connection was refused or reset
        assert all(client.getpeername()[1] == port for client in sockets)  # all established, none waiting for a SYN-ACK
    finally:
        for client in sockets:
            client.close()
        gateway.server.server_close()
