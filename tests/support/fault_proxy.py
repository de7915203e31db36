"""A TCP fault proxy for the tests: sits between a front and its remote and misbehaves on demand.

It runs on its own event loop in a background thread, so tests (sync or async) and blocking
server start-ups never stall it. Faults, each switched on and off by a method:

- `cut()`     abort every open connection, both sides (a network drop, a remote crash);
- `refuse()`  stop listening: new connections are refused (remote down); `accept()` undoes it;
- `stall()`   keep connections open but forward no byte in either direction; `resume()` undoes;
- `slow(d)`   delay every chunk the remote sends by `d` seconds (`slow(0)` undoes it);
- `retarget(port)` send new connections to another server (a remote restarted elsewhere).

It also records what the remote receives: every HTTP request (method, target, headers, the
start of the body) and, after a WebSocket upgrade, every client message (opcode and payload),
so a test can assert that a request or a frame never reached the remote. With an `ssl`
context it terminates TLS (an https remote in front of a plain one), recording the plaintext.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

_BODY_KEPT = 64 * 1024
_WS_PAYLOAD_KEPT = 64 * 1024


class BackgroundLoop:
    """An asyncio event loop in a daemon thread; `run()` executes a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="fault-proxy-loop")
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def call(self, fn: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def close(self) -> None:
        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(_cancel_all(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class RecordedRequest:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None


@dataclass
class RecordedMessage:
    """A WebSocket message the client (the front) sent to the remote."""

    target: str
    opcode: int  # 1 text, 2 binary, 8 close
    size: int
    payload: bytes  # the first _WS_PAYLOAD_KEPT bytes


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    def __init__(self, target_port: int, *, loop: BackgroundLoop,
                 ssl_context: ssl.SSLContext | None = None, record_ws: bool = True,
                 target_host: str = "127.0.0.1") -> None:
        self._loop = loop
        self.target = (target_host, target_port)
        self.ssl_context = ssl_context
        self.record_ws = record_ws
        self.requests: list[RecordedRequest] = []
        self.ws_messages: list[RecordedMessage] = []
        self.connections_accepted = 0
        self.held_chunks = 0  # chunks read while stalled, held back
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._delay = 0.0
        self.port = 0
        loop.run(self._init())

    # ---------------------------------------------------------------- control (any thread)

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/"

    def cut(self) -> None:
        """Abort every open connection, on both sides."""
        self._loop.run(self._cut())

    def refuse(self) -> None:
        """Stop listening: connecting fails with 'connection refused'."""
        self._loop.run(self._close_listener())

    def accept(self) -> None:
        """Listen again on the same port."""
        self._loop.run(self._listen())

    def down(self) -> None:
        """The remote vanishes: refuse new connections and cut the open ones."""
        self.refuse()
        self.cut()

    def up(self) -> None:
        self.accept()

    def stall(self) -> None:
        """Forward nothing, in either direction, keeping every connection open."""
        self._loop.call(self._set_flowing, False)

    def resume(self) -> None:
        self._loop.call(self._set_flowing, True)

    def slow(self, delay: float) -> None:
        """Delay every chunk from the remote by `delay` seconds (0: no delay)."""
        self._delay = delay

    def retarget(self, port: int, host: str = "127.0.0.1") -> None:
        """New connections go to another server; open ones are left as they are."""
        self.target = (host, port)

    def clear(self) -> None:
        self.requests.clear()
        self.ws_messages.clear()

    def close(self) -> None:
        self._loop.run(self._close_listener())
        self.cut()

    @property
    def open_connections(self) -> int:
        return len(self._links)

    def paths(self) -> list[str]:
        return [r.path for r in list(self.requests)]

    # ---------------------------------------------------------------- in the proxy's loop

    async def _init(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen()

    def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _listen(self) -> None:
        if self._server is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, sock=sock, ssl=self.ssl_context)

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    async def _cut(self) -> None:
        for link in list(self._links):
            link.abort()
        self._links.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        link = _Link(writer)
        self._links.add(link)
        try:
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.target), 10)
            except (OSError, asyncio.TimeoutError):
                writer.transport.abort()
                return
            link.upstream = up_writer
            recorder = _Recorder(self)
            to_remote = asyncio.create_task(self._pump(reader, up_writer, recorder, 0.0))
            to_client = asyncio.create_task(self._pump(up_reader, writer, None, None))
            link.tasks = [to_remote, to_client]
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
            # Give the other direction a moment to flush what it has, then end both.
            await asyncio.wait(link.tasks, timeout=1)
        except asyncio.CancelledError:
            pass
        finally:
            link.abort()
            self._links.discard(link)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    recorder: _Recorder | None, delay: float | None) -> None:
        assert self._flowing is not None
        try:
            while True:
                data = await reader.read(65536)
                if not self._flowing.is_set():
                    self.held_chunks += 1
                    await self._flowing.wait()  # a stalled network delivers no FIN either
                if not data:
                    with contextlib.suppress(OSError, RuntimeError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                wait = self._delay if delay is None else delay
                if wait:
                    await asyncio.sleep(wait)
                    await self._flowing.wait()
                if recorder is not None:
                    recorder.feed(data)
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, RuntimeError):
            return


class _Recorder:
    """Parses the client -> remote byte stream: HTTP/1.1 requests, then WebSocket frames."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.buf = bytearray()
        self.body_left = 0
        self.current: RecordedRequest | None = None
        self.ws_target: str | None = None
        self.unparsed = False
        self.fragments: list[bytes] = []
        self.fragment_opcode = 0

    def feed(self, data: bytes) -> None:
        if self.unparsed:
            return
        self.buf += data
        if self.ws_target is not None:
            self._frames()
        else:
            self._requests()

    def _requests(self) -> None:
        while True:
            if self.body_left:
                n = min(self.body_left, len(self.buf))
                if self.current is not None and len(self.current.body) < _BODY_KEPT:
                    self.current.body += bytes(self.buf[:n])[: _BODY_KEPT - len(self.current.body)]
                del self.buf[:n]
                self.body_left -= n
                if self.body_left:
                    return
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 4]
            lines = head.split("\r\n")
            parts = lines[0].split(" ")
            method, target = (parts + ["", ""])[:2]
            headers = []
            for line in lines[1:]:
                key, sep, value = line.partition(":")
                if sep:
                    headers.append((key.strip().lower(), value.strip()))
            request = RecordedRequest(method, target, headers)
            self.proxy.requests.append(request)
            self.current = request
            if (request.header("transfer-encoding") or "").lower() == "chunked":
                # Not expected from the front (httpx sends Content-Length): stop parsing.
                self.unparsed = True
                return
            self.body_left = int(request.header("content-length") or 0)
            if (request.header("upgrade") or "").lower() == "websocket":
                self.ws_target = target
                if not self.proxy.record_ws:
                    self.unparsed = True
                    return
                self._frames()
                return

    def _frames(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            fin, opcode = buf[0] & 0x80, buf[0] & 0x0F
            masked, size = buf[1] & 0x80, buf[1] & 0x7F
            pos = 2
            if size == 126:
                if len(buf) < 4:
                    return
                (size,) = struct.unpack_from("!H", buf, 2)
                pos = 4
            elif size == 127:
                if len(buf) < 10:
                    return
                (size,) = struct.unpack_from("!Q", buf, 2)
                pos = 10
            key = b""
            if masked:
                if len(buf) < pos + 4:
                    return
                key = bytes(buf[pos : pos + 4])
                pos += 4
            if len(buf) < pos + size:
                return
            payload = bytes(buf[pos : pos + size])
            del buf[: pos + size]
            if key:
                payload = _unmask(payload, key)
            if opcode == 0:
                self.fragments.append(payload)
            elif opcode in (1, 2):
                self.fragments, self.fragment_opcode = [payload], opcode
            else:
                if opcode == 8:
                    self._message(8, payload)
                continue
            if fin:
                self._message(self.fragment_opcode, b"".join(self.fragments))
                self.fragments = []

    def _message(self, opcode: int, payload: bytes) -> None:
        assert self.ws_target is not None
        self.proxy.ws_messages.append(
            RecordedMessage(self.ws_target, opcode, len(payload), payload[:_WS_PAYLOAD_KEPT]))


def _unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    mask = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")
