"""Only requests addressed to this server are answered: the defence against DNS rebinding.

A page on another site can have its own name resolve to 127.0.0.1 and then read, through the
visitor's browser, whatever a server on the loopback address answers. The browser still sends
that site's name in the Host header, so a server answering only the names it listens on (and
those a proxy in front of it forwards) gives such a page nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from indexer.serve.limits import ASGIApp, Message, Receive, Send, refuse

DEFAULT_HTTP_PORT = "80"  # a Host header without a port means this one
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class HostRules:
    """Host header values a server answers: `name:port` pairs, and names on any port."""

    exact: frozenset[str]
    any_port: frozenset[str]

    def allows(self, header: str) -> bool:
        name, port = split_host(header.strip().lower())
        return name in self.any_port or f"{name}:{port or DEFAULT_HTTP_PORT}" in self.exact


def split_host(value: str) -> tuple[str, str | None]:
    """`name:port` as (name, port), `name` as (name, None); an IPv6 address keeps its brackets."""
    name, colon, port = value.rpartition(":")
    if colon and port.isdigit() and (not name.startswith("[") or name.endswith("]")):
        return name, port
    return value, None


def host_rules(host: str, port: int, allowed: Sequence[str] = ()) -> HostRules:
    """The loopback names and `host` (the address the server listens on) with `port`, and each
    `allowed` value: `NAME:PORT` for that port only, `NAME` for any port."""
    bound = f"[{host}]" if ":" in host else host
    exact = {f"{name.lower()}:{port}" for name in (*LOOPBACK_NAMES, bound)}
    any_port = set()
    for value in allowed:
        name, given_port = split_host(value.strip().lower())
        if given_port is None:
            any_port.add(name)
        else:
            exact.add(f"{name}:{given_port}")
    return HostRules(frozenset(exact), frozenset(any_port))


class HostCheck:
    """ASGI middleware: a request whose Host header `rules` do not allow gets 400 with a JSON
    error, before anything else reads it."""

    def __init__(self, app: ASGIApp, rules: HostRules) -> None:
        self.app = app
        self.rules = rules

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not self.rules.allows(header):
                await refuse(scope, receive, send, 400,
                             f"Host {header!r} is not an address of this server; a proxy's name "
                             "can be allowed with serve --allowed-host")
                return
        await self.app(scope, receive, send)
