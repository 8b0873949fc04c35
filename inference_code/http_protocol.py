"""uvicorn's h11 protocol with the two connection limits it lacks: a header timeout and a lingering close.

- Header timeout. uvicorn has no timeout covering the request line and headers
  (`timeout_keep_alive` only runs between requests, and any byte received cancels it), so a
  client sending half its headers held a connection forever (uvicorn issue #157 lists
  `--timeout-request-start`, never implemented). Here a timer runs from the connection's start,
  and from the first byte of each later request, until the headers are complete; on expiry the
  connection gets a 408 (when part of a request arrived) and is closed. Body reads have their own
  timeout in the application (`body_read_timeout_s`).
- Lingering close. When the application answers before reading the whole body (a 413 for an
  oversized body, a 503 when saturated) and the connection must close, closing the socket with
  unread data in its receive buffer makes the kernel send a reset, and a client that writes the
  whole body before reading (Python's urllib, `Connection: close`) sees "connection reset"
  instead of the 413. As nginx's lingering close does, the response is sent, the write side is
  shut, and what the client still sends is read and discarded for at most `linger_s` seconds and
  `linger_max_bytes` bytes before the socket is closed.

Both hook only into the protocol's public asyncio callbacks and h11's connection state; the
server passes this class as uvicorn's `http` protocol (h11, the implementation in the container).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from inference_code.server import LINGERING_CLOSE

_TIMEOUT_BODY = json.dumps(
    {"error": {"code": "request_timeout", "message": "the request headers were not received in time"}}
).encode()
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: "
    + str(len(_TIMEOUT_BODY)).encode()
    + b"\r\n\r\n"
    + _TIMEOUT_BODY
)


class _LingeringTransport:
    """The connection's transport, whose close() lingers while the client is still sending a body."""

    def __init__(self, transport: asyncio.Transport, protocol: "ClipH11Protocol"):
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        if not self._protocol.start_lingering():
            self._transport.close()


class ClipH11Protocol(H11Protocol):
    header_timeout_s: float = 10.0
    linger_s: float = 5.0
    linger_max_bytes: int = 16_000_000

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw_transport = transport
        self._header_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._lingered_bytes = 0
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingered_bytes += len(data)
            if self._lingered_bytes > self.linger_max_bytes:
                self._close_now()
            return
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and not self._raw_transport.is_closing():
            self._arm_header_timer()  # waiting for (the rest of) a request's headers
        else:
            self._cancel_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)

    def handle_events(self) -> None:
        scope = self.scope
        super().handle_events()
        if self.scope is not scope and self.scope is not None:  # a new request: tell the app it may close early
            self.scope.setdefault("extensions", {})[LINGERING_CLOSE] = {}

    # header timeout
    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.conn.their_state is not h11.IDLE or self._raw_transport.is_closing():
            return
        if self.conn.trailing_data[0]:  # part of a request arrived: say why it is closed
            self._raw_transport.write(_TIMEOUT_RESPONSE)
        self._close_now()

    # lingering close
    def start_lingering(self) -> bool:
        """Called instead of closing: True when the client is still sending a body, which is then
        drained in the background; False when the socket can close at once."""
        if self._lingering or self._raw_transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return False
        self._lingering = True
        self._cancel_header_timer()
        if self._raw_transport.can_write_eof():
            self._raw_transport.write_eof()  # the response is complete: end our side
        self._raw_transport.resume_reading()
        self._linger_timer = self.loop.call_later(self.linger_s, self._close_now)
        return True

    def _close_now(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        self._raw_transport.close()


def protocol_class(header_timeout_s: float, linger_s: float, linger_max_bytes: int) -> type[ClipH11Protocol]:
    """A protocol class carrying these settings (uvicorn instantiates it per connection)."""
    return type(
        "ConfiguredClipH11Protocol",
        (ClipH11Protocol,),
        {"header_timeout_s": header_timeout_s, "linger_s": linger_s, "linger_max_bytes": linger_max_bytes},
    )
