"""Test-only HTTP reverse proxies that stand for what sits in front of real gateways:

- a credential check (Apache Knox style): refuses with 401 any request, WebSocket handshakes
  included, without the expected headers, and passes the rest to the real remote with the
  remote's own `Authorization`;
- a sticky balancer over several replicas: a request without the affinity cookie goes to the
  next replica (round robin) and its answer sets the cookie; a request with it goes to its
  replica. It records which replica served each request.

One request per connection (the proxy asks the replica to close after answering), so each
request is routed on its own; a WebSocket upgrade keeps its connection. Runs on a
BackgroundLoop (tests/support/fault_proxy.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.fault_proxy import BackgroundLoop

_MAX_HEAD = 64 * 1024
AFFINITY_COOKIE = "replica"


@dataclass
class Routed:
    replica: int
    method: str
    target: str
    cookie: str | None


@dataclass
class _Head:
    first_line: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def remove(self, name: str) -> None:
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()]

    def encode(self) -> bytes:
        lines = [self.first_line, *(f"{k}: {v}" for k, v in self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_head(reader: asyncio.StreamReader) -> _Head | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = raw.decode("latin-1").split("\r\n")
    head = _Head(lines[0])
    for line in lines[1:]:
        if ":" in line:
            key, _, value = line.partition(":")
            head.headers.append((key.strip(), value.strip()))
    return head


class HttpProxy:
    """Listens on a free loopback port; `decide(head)` returns (replica index, extra response
    headers) or None to refuse with 401."""

    def __init__(self, ports: list[int], *, loop: BackgroundLoop,
                 decide: Callable[[_Head], tuple[int, list[tuple[str, str]]] | None],
                 rewrite: Callable[[_Head, int], None] = lambda head, replica: None) -> None:
        self.ports = ports
        self._loop = loop
        self._decide = decide
        self._rewrite = rewrite
        self.routed: list[Routed] = []
        self.refused: list[str] = []
        self._server: asyncio.AbstractServer | None = None
        self.port = loop.run(self._listen())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0,
                                                  limit=_MAX_HEAD)
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        async def _close() -> None:
            if self._server is not None:
                self._server.close()
        self._loop.run(_close())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await _read_head(reader)
            if head is None:
                return
            decision = self._decide(head)
            method, target = (head.first_line.split(" ") + ["", ""])[:2]
            if decision is None:
                self.refused.append(target)
                writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
                await writer.drain()
                return
            replica, extra = decision
            self.routed.append(Routed(replica, method, target, head.get("cookie")))
            self._rewrite(head, replica)
            if (head.get("upgrade") or "").lower() != "websocket":
                head.remove("connection")
                head.headers.append(("Connection", "close"))
            up_reader, upstream = await asyncio.open_connection("127.0.0.1",
                                                                self.ports[replica])
            upstream.write(head.encode())
            await upstream.drain()
            to_remote = asyncio.ensure_future(_pump(reader, upstream))
            answer = await _read_head(up_reader)
            if answer is None:
                to_remote.cancel()
                return
            answer.headers.extend(extra)
            writer.write(answer.encode())
            await writer.drain()
            await _pump(up_reader, writer)
            to_remote.cancel()
        except (ConnectionError, OSError):
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(Exception):
        writer.write_eof()


def checking_proxy(port: int, *, loop: BackgroundLoop, required: dict[str, str],
                   remote_token: str) -> HttpProxy:
    """Refuses (401) what lacks the `required` headers; sends the rest on to the remote at
    `port` with only the remote's own `Authorization: token <t>`."""

    def decide(head: _Head) -> tuple[int, list[tuple[str, str]]] | None:
        ok = all(head.get(name) == value for name, value in required.items())
        return (0, []) if ok else None

    def rewrite(head: _Head, replica: int) -> None:
        for name in required:
            head.remove(name)
        head.remove("authorization")
        head.headers.append(("Authorization", f"token {remote_token}"))

    return HttpProxy([port], loop=loop, decide=decide, rewrite=rewrite)


def sticky_proxy(ports: list[int], *, loop: BackgroundLoop,
                 rewrite: Callable[[_Head, int], None] = lambda head, replica: None,
                 max_age: int = 3600) -> HttpProxy:
    """Routes by the affinity cookie; a request without it goes to the next replica and its
    answer sets the cookie (expiring after `max_age` seconds)."""
    turn = [0]

    def decide(head: _Head) -> tuple[int, list[tuple[str, str]]]:
        for part in (head.get("cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == AFFINITY_COOKIE and value.isdigit() and int(value) < len(ports):
                return int(value), []
        replica = turn[0] % len(ports)
        turn[0] += 1
        cookie = f"{AFFINITY_COOKIE}={replica}; Path=/; Max-Age={max_age}; HttpOnly"
        return replica, [("Set-Cookie", cookie)]

    return HttpProxy(ports, loop=loop, decide=decide, rewrite=rewrite)
