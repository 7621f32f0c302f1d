"""How long a client may hold a connection without completing a request, and how many it may hold.

uvicorn times out only a kept-alive connection that stays silent, and it stops even that clock at
the first byte received; a new connection has no clock at all. A client sending a byte of its
request head now and then therefore held a connection (and its buffers) for as long as it liked.
Here every request head (request line and headers) must arrive within HEAD_TIMEOUT_S of the
connection opening or of the previous response; the body has its own limit (`limits.BodyLimits`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT_S = 10.0  # request line and headers, from connect or from the previous response
KEEP_ALIVE_S = 5  # an idle connection between requests (uvicorn's own clock)
MAX_HEAD_BYTES = 16 * 1024  # request line and headers together; more is a 400
MAX_CONCURRENCY = 128  # open connections and running requests; above it new requests get 503


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request head takes longer than
    `head_timeout_s` seconds to arrive."""

    head_timeout_s = HEAD_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._start_head_clock()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in: the body has its own limit
            self._stop_head_clock()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._start_head_clock()  # for the next request on this connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_clock()
        super().connection_lost(exc)

    def _start_head_clock(self) -> None:
        self._stop_head_clock()
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _stop_head_clock(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def uvicorn_settings() -> dict[str, Any]:
    """The connection limits `serve` passes to `uvicorn.run` (docs/method.md, "The HTTP server",
    the Limits item)."""
    return {
        "http": HeadDeadlineProtocol,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "limit_concurrency": MAX_CONCURRENCY,
    }
