"""Fake remotes, for what a real Jupyverse cannot be made to do on demand.

- `GarbageRemote` answers every HTTP request with one kind of nonsense: HTML, bytes that are
  not HTTP, truncated JSON, JSON of the wrong shape, or a body cut short.
- `FakeKernelRemote` is a minimal kernel server: `GET /api/kernels/{id}` and the v1 kernel
  WebSocket. On `execute_request` with code `emit N SIZE` it sends `status: busy`, N `stream`
  messages whose text starts with their sequence number (`0:`, `1:`, ...) padded to SIZE
  bytes, the `execute_reply`, then `status: idle`, as fast as the connection takes them.
  It counts what it sent on each connection, so a test can see backpressure at work.
  On `close CODE REASON` it closes the socket with that code and reason.

Both run on a `BackgroundLoop` (tests/support/fault_proxy.py) and bind 127.0.0.1 on a free port.
A real Jupyverse holds one database connection per open kernel WebSocket (fps-auth, 15 at
most), so load beyond 15 sockets needs a remote like this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.support.fault_proxy import BackgroundLoop
from tests.support.kernel_client import V1, deserialize_v1, serialize_v1

_KERNEL_PATH = re.compile(r"^/api/kernels/([0-9a-fA-F-]{36})(/channels)?$")
# `emit N SIZE [PAUSE]`: N numbered outputs of SIZE characters, PAUSE seconds apart.
_EMIT = re.compile(r"^emit (\d+) (\d+)(?: ([0-9.]+))?$")
# `close CODE REASON`: the remote closes the kernel socket with that code and reason.
_CLOSE = re.compile(r"^close (\d+) (.*)$")


# ---------------------------------------------------------------- garbage


def _http_answer(status: str, content_type: str, body: bytes, length: int | None = None
                 ) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


GARBAGE_ANSWERS = {
    "html": _http_answer("200 OK", "text/html", b"<html><body><h1>Welcome</h1></body></html>"),
    "not-http": b"\x00\x17\xfe\xff garbage that is not HTTP at all\r\n\r\n",
    "truncated-json": _http_answer("200 OK", "application/json", b'[{"id": "8c3f1f5e-1c4e-'),
    "wrong-shape": _http_answer("200 OK", "application/json", b"42"),
    "server-error": _http_answer("500 Internal Server Error", "text/plain", b"oops\n"),
    # The headers promise 100 bytes; the connection ends after 10.
    "cut-body": _http_answer("200 OK", "application/json", b'[{"id": "8', length=100),
}


class GarbageRemote:
    """Answers every request with `GARBAGE_ANSWERS[mode]`, then closes the connection."""

    def __init__(self, loop: BackgroundLoop, mode: str = "html") -> None:
        self._loop = loop
        self.mode = mode
        self.paths: list[str] = []
        self._server: asyncio.Server | None = None
        self.port = loop.run(self._start())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            self.paths.append(request_line.split(" ")[1] if " " in request_line else "")
            writer.write(GARBAGE_ANSWERS[self.mode])
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        async def _close() -> None:
            if self._server is not None:
                self._server.close()

        self._loop.run(_close())


# ---------------------------------------------------------------- kernels


@dataclass(eq=False)
class FakeConnection:
    kernel_id: str
    session_id: str
    sent: int = 0  # kernel -> client messages handed to the connection
    received: int = 0
    sent_bytes: int = 0
    close_code: int | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class FakeKernelRemote:
    """A minimal kernel server speaking the v1 kernel WebSocket protocol."""

    def __init__(self, loop: BackgroundLoop) -> None:
        self._loop = loop
        self.kernel_ids: set[str] = set()
        self.connections: list[FakeConnection] = []
        self.requests: Counter[tuple[str, str]] = Counter()
        self._server: Server | None = None
        self.port = loop.run(self._start())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def new_kernel(self) -> str:
        kernel_id = str(uuid.uuid4())
        self.kernel_ids.add(kernel_id)
        return kernel_id

    def open_connections(self) -> int:
        return sum(1 for c in list(self.connections) if c.close_code is None)

    async def _start(self) -> int:
        self._server = await serve(
            self._channels, "127.0.0.1", 0, process_request=self._http,
            subprotocols=[V1], max_size=None, compression=None, ping_interval=None,
            max_queue=4,
        )
        return int(next(iter(self._server.sockets)).getsockname()[1])

    def close(self) -> None:
        async def _close() -> None:
            if self._server is not None:
                self._server.close()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._server.wait_closed(), 5)

        self._loop.run(_close())

    # HTTP: answered before any WebSocket handshake.
    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        self.requests[("GET", path)] += 1
        match = _KERNEL_PATH.match(path)
        if match and match.group(2):
            if match.group(1) in self.kernel_ids and "upgrade" in request.headers.get(
                    "connection", "").lower():
                return None  # go on with the WebSocket handshake
            return _json_response(HTTPStatus.NOT_FOUND, {"message": "no such kernel"})
        if match:
            kernel_id = match.group(1)
            return _json_response(HTTPStatus.OK, self._model(kernel_id)
                                  if kernel_id in self.kernel_ids else None)
        if path == "/api/kernels":
            return _json_response(HTTPStatus.OK, [self._model(k) for k in self.kernel_ids])
        if path == "/api/status":
            return _json_response(HTTPStatus.OK, {"kernels": len(self.kernel_ids)})
        return _json_response(HTTPStatus.NOT_FOUND, {"message": "not found"})

    def _model(self, kernel_id: str) -> dict[str, Any]:
        return {"id": kernel_id, "name": "python3", "execution_state": "idle",
                "last_activity": datetime.now(timezone.utc).isoformat(),
                "connections": sum(1 for c in self.connections
                                   if c.kernel_id == kernel_id and c.close_code is None)}

    async def _channels(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        path, _, query = ws.request.path.partition("?")
        match = _KERNEL_PATH.match(path)
        session_id = dict(p.partition("=")[::2] for p in query.split("&")).get("session_id", "")
        conn = FakeConnection(match.group(1) if match else "", session_id)
        self.connections.append(conn)
        try:
            async for frame in ws:
                conn.received += 1
                if not isinstance(frame, bytes):
                    continue
                msg = deserialize_v1(frame)
                msg_type = msg["header"]["msg_type"]
                closing = _CLOSE.match(msg["content"].get("code", "") or "")
                if msg_type == "execute_request" and closing:
                    await ws.close(int(closing.group(1)), closing.group(2))
                elif msg_type == "execute_request":
                    await self._execute(ws, conn, msg)
                elif msg_type == "kernel_info_request":
                    await self._send(ws, conn, _reply(msg, "shell", "kernel_info_reply",
                                                      {"status": "ok", "protocol_version": "5.3"}))
        except ConnectionClosed:
            pass
        finally:
            conn.close_code = ws.close_code if ws.close_code is not None else 1006
            conn.closed.set()

    async def _execute(self, ws: ServerConnection, conn: FakeConnection,
                       request: dict[str, Any]) -> None:
        match = _EMIT.match(request["content"].get("code", ""))
        count, size = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
        pause = float(match.group(3) or 0) if match else 0.0
        await self._send(ws, conn, _reply(request, "iopub", "status",
                                          {"execution_state": "busy"}))
        for seq in range(count):
            prefix = f"{seq}:"
            text = prefix + "x" * max(0, size - len(prefix) - 1) + "\n"
            await self._send(ws, conn, _reply(request, "iopub", "stream",
                                              {"name": "stdout", "text": text}))
            if pause:
                await asyncio.sleep(pause)
        await self._send(ws, conn, _reply(request, "shell", "execute_reply",
                                          {"status": "ok", "execution_count": 1}))
        await self._send(ws, conn, _reply(request, "iopub", "status",
                                          {"execution_state": "idle"}))

    async def _send(self, ws: ServerConnection, conn: FakeConnection,
                    msg: dict[str, Any]) -> None:
        frame = serialize_v1(msg)
        await ws.send(frame)  # waits while the connection's write buffer is full
        conn.sent += 1
        conn.sent_bytes += len(frame)


def _reply(request: dict[str, Any], channel: str, msg_type: str,
           content: dict[str, Any]) -> dict[str, Any]:
    return {
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": "fake",
                   "session": "fake-kernel", "date": datetime.now(timezone.utc).isoformat(),
                   "version": "5.3"},
        "parent_header": request["header"],
        "metadata": {},
        "content": content,
        "channel": channel,
        "buffers": [],
    }


def _json_response(status: HTTPStatus, body: Any) -> Response:
    data = json.dumps(body).encode()
    # websockets closes the connection after an answer to a plain HTTP request: say so, or a
    # client may send its next request on a connection that is closing.
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                       ("Connection", "close")])
    return Response(status.value, status.phrase, headers, data)
