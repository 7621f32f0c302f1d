"""Slow clients against `serve`'s connection limits: a request head or body trickling in a byte
now and then is cut off, a prompt one is answered. A real uvicorn server on a loopback port, with
a trivial app and the limits shortened so the test takes about a second."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import anyio
import pytest

pytest.importorskip("uvicorn")
import uvicorn  # noqa: E402

from indexer.serve.connections import HeadDeadlineProtocol, uvicorn_settings  # noqa: E402
from indexer.serve.limits import BodyLimits  # noqa: E402

HEAD_TIMEOUT_S = 0.4
GIVE_UP_S = 5.0  # far beyond the deadline: a connection still open then was never timed out


async def _hello(scope: dict, receive: object, send: object) -> None:
    """The smallest ASGI app: 200 'hello' to every request."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture
def server_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(HeadDeadlineProtocol, "head_timeout_s", HEAD_TIMEOUT_S)
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(_hello, log_level="warning", **uvicorn_settings()))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield listening.getsockname()[1]
    server.should_exit = True
    thread.join(timeout=10)
    listening.close()


def _closed_within(connection: socket.socket, start: float, seconds: float,
                   trickle: bytes = b"") -> float | None:
    """Seconds from `start` until the server closed `connection` while we sent a byte of `trickle`
    every 0.1 s (and read what came); None if it was still open `seconds` after `start`. `start`
    is taken before the event the server's clock starts from (connecting, or sending the request
    before), so a busy machine can make the figure later than the server's deadline, never
    earlier."""
    connection.settimeout(0.1)
    position = 0
    while time.monotonic() - start < seconds:
        if position < len(trickle):
            with contextlib.suppress(OSError):
                connection.sendall(trickle[position:position + 1])
            position += 1
        try:
            if connection.recv(4096) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


def test_a_request_head_trickling_in_is_cut_off(server_port: int) -> None:
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server_port)) as connection:
        took = _closed_within(connection, start, GIVE_UP_S,
                              trickle=b"GET / HTTP/1.1\r\nX-Slow: " + b"a" * 100)
    assert took is not None and HEAD_TIMEOUT_S <= took < HEAD_TIMEOUT_S + 1


def test_a_connection_that_never_sends_a_request_is_cut_off(server_port: int) -> None:
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server_port)) as connection:
        took = _closed_within(connection, start, GIVE_UP_S)
    assert took is not None and took < HEAD_TIMEOUT_S + 1


def test_a_prompt_request_is_answered_and_the_next_head_gets_its_own_deadline(server_port: int) -> None:
    with socket.create_connection(("127.0.0.1", server_port)) as connection:
        time.sleep(HEAD_TIMEOUT_S / 2)  # well within the deadline
        sent = time.monotonic()  # the next head's clock starts after this request's response
        connection.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        connection.settimeout(GIVE_UP_S)
        assert connection.recv(4096).startswith(b"HTTP/1.1 200")
        took = _closed_within(connection, sent, GIVE_UP_S,
                              trickle=b"GET / HTTP/1.1\r\nX-Slow: " + b"a" * 100)
    assert took is not None, "a kept-alive connection trickling is cut too"
    assert HEAD_TIMEOUT_S <= took < HEAD_TIMEOUT_S + 1, "the next head's clock starts at the response"


def _answer_of_a_body_that_stops_arriving(timeout_s: float) -> tuple[list[dict], bool]:
    """What BodyLimits sends for a request whose body sends its first half, then nothing; and
    whether the app behind it was called."""
    sent: list[dict] = []
    reached: list[bool] = []
    arriving = iter([{"type": "http.request", "body": b"half", "more_body": True}])

    async def app(scope: dict, receive: object, send: object) -> None:
        reached.append(True)

    async def receive() -> dict:
        message = next(arriving, None)
        if message is None:
            await anyio.sleep(3600)  # the client sends nothing more
        return message

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/search",
             "headers": [(b"content-length", b"8")]}
    anyio.run(BodyLimits(app, timeout_s=timeout_s), scope, receive, send)
    return sent, bool(reached)


def test_a_body_that_stops_arriving_gets_408_and_never_reaches_the_app() -> None:
    start = time.monotonic()
    sent, reached = _answer_of_a_body_that_stops_arriving(timeout_s=0.2)
    assert time.monotonic() - start < 2 and not reached
    head, body = sent[0], sent[1]
    assert head["status"] == 408 and (b"connection", b"close") in head["headers"]
    assert json.loads(body["body"]) == {"error": "request body not received within 0.2 s"}
