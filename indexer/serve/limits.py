"""Caps on request bodies, their size and the time they take to arrive, applied before anything
parses them.

Multipart parsing would otherwise spool any amount of upload to disk first. The size cap is
checked on the declared Content-Length and again on the bytes actually received (chunked uploads
declare none), so a client cannot get past it by lying or by not saying. The time cap stops a
client that sends a body a byte now and then from holding a connection and a worker's memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from starlette.responses import JSONResponse

MAX_REQUEST_BYTES = 20 * 1024 * 1024
BODY_TIMEOUT_S = 60.0  # for the whole body: 20 MB at about 2.7 Mbit/s

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]


class BodyLimits:
    """ASGI middleware: bodies over `max_bytes` get 413, bodies still arriving after `timeout_s`
    seconds 408, each with a JSON error; others pass, buffered."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_REQUEST_BYTES,
                 timeout_s: float = BODY_TIMEOUT_S) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        try:
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise _BodyTooLarge
            with anyio.fail_after(self.timeout_s):
                body = await self._read(receive)
        except _BodyTooLarge:
            await refuse(scope, receive, send, 413,
                          f"request body over the limit of {self.max_bytes / (1024 * 1024):g} MB")
        except TimeoutError:
            await refuse(scope, receive, send, 408,
                          f"request body not received within {self.timeout_s:g} s")
        else:
            if body is not None:  # None: the client left; there is no one to answer
                await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None when the client left before sending it."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                raise _BodyTooLarge
            if not message.get("more_body", False):
                return b"".join(chunks)


class _BodyTooLarge(Exception):
    """More body than the cap, declared or received."""


async def refuse(scope: Message, receive: Receive, send: Send, status: int, problem: str) -> None:
    """Answer `{"error": problem}` with `status` and close the connection (the request was not read
    to its end, so the connection cannot carry another)."""
    response = JSONResponse({"error": problem}, status_code=status, headers={"Connection": "close"})
    await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that hands the buffered body over once, then the client's own events."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
