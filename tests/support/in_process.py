"""The fast tier's harness: a real front (Jupyverse's module tree with this plugin) and fake
remotes, all in the test's own process and event loop, without a subprocess.

- `FakeGateway`: a Kernel Gateway-like remote (Starlette), served by uvicorn on a loopback
  port of the test process: kernelspecs, kernels and the kernel WebSocket. The front reaches
  it as any remote, over HTTP and its own WebSocket client. Subprotocol `x-echo`: every frame
  is sent back as it came (text as text, bytes as bytes); v1 and legacy: kernel_info and
  execute are answered as a kernel does, `close CODE REASON` closes the socket so.
- `in_process_front`: the module tree `jupyverse` → app, auth (token mode, its own
  directory), frontend, remote_kernels, as jupyverse's own tests start it (fps's
  get_root_module); requests go through httpx's ASGI transport, kernel sockets through
  `AsgiWebSocket`, which speaks ASGI's WebSocket messages to the app directly.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import httpx
import uvicorn
from fps import get_root_module
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.support.kernel_client import (
    V1,
    deserialize_legacy,
    deserialize_v1,
    make_message,
    serialize_legacy,
    serialize_v1,
)

ECHO = "x-echo"
LOGO = b"\x89PNG\r\n\x1a\n fake logo"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _spec(name: str) -> dict[str, Any]:
    return {"name": name,
            "spec": {"display_name": name.capitalize(), "language": "python",
                     "argv": ["python", "-m", "ipykernel_launcher", "-f",
                              "{connection_file}"], "env": {}, "metadata": {}},
            "resources": {"logo-64x64": f"/kernelspecs/{name}/logo-64x64.png"}}


@dataclass(eq=False)
class FakeGateway:
    """A Kernel Gateway-like remote that takes `Authorization: token <token>` only."""

    token: str
    specs: tuple[str, ...] = ("python3",)
    kernels: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every REST request: (method, path, headers).
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    # The JSON bodies of kernel starts, in order.
    starts: list[dict[str, Any]] = field(default_factory=list)
    # When set, every REST request is answered with this status (a remote failing).
    failing: int | None = None
    # `execute_request` of code "hold": the kernel says busy, then waits for this event
    # before the rest of its answer (output produced while a client is away).
    hold: anyio.Event = field(default_factory=anyio.Event)
    url: str = ""

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[
            Route("/api", self._version),
            Route("/api/kernelspecs", self._kernelspecs),
            Route("/kernelspecs/{name}/{file}", self._resource),
            Route("/api/kernels", self._kernels, methods=["GET", "POST"]),
            Route("/api/kernels/{kernel_id}", self._kernel, methods=["GET", "DELETE"]),
            Route("/api/kernels/{kernel_id}/interrupt", self._interrupt, methods=["POST"]),
            Route("/api/kernels/{kernel_id}/restart", self._restart, methods=["POST"]),
            WebSocketRoute("/api/kernels/{kernel_id}/channels", self._channels),
        ])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            self.requests.append((scope["method"], scope["path"], headers))
            if headers.get("authorization") != f"token {self.token}":
                await JSONResponse({"message": "Unauthorized"}, 401)(scope, receive, send)
                return
            if self.failing is not None:
                await JSONResponse({"message": "the gateway is failing"},
                                   self.failing)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def new_kernel(self, name: str = "python3") -> str:
        kernel_id = str(uuid.uuid4())
        self.kernels[kernel_id] = {"id": kernel_id, "name": name, "last_activity": _now(),
                                   "execution_state": "idle", "connections": 0}
        return kernel_id

    # ---------------------------------------------------------------- REST

    async def _version(self, request: Request) -> Response:
        return JSONResponse({"version": "fake-gateway"})

    async def _kernelspecs(self, request: Request) -> Response:
        return JSONResponse({"default": self.specs[0],
                             "kernelspecs": {name: _spec(name) for name in self.specs}})

    async def _resource(self, request: Request) -> Response:
        if request.path_params["name"] not in self.specs:
            return JSONResponse({"message": "no such kernelspec"}, 404)
        return Response(LOGO, media_type="image/png")

    async def _kernels(self, request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(list(self.kernels.values()))
        body = await request.json()
        self.starts.append(body)
        if body.get("name") not in self.specs:
            return JSONResponse({"message": f"No such kernel {body.get('name')}"}, 404)
        return JSONResponse(self.kernels[self.new_kernel(body["name"])], 201)

    async def _kernel(self, request: Request) -> Response:
        kernel_id = request.path_params["kernel_id"]
        if kernel_id not in self.kernels:
            return JSONResponse({"message": f"Kernel does not exist: {kernel_id}"}, 404)
        if request.method == "DELETE":
            del self.kernels[kernel_id]
            return Response(status_code=204)
        return JSONResponse(self.kernels[kernel_id])

    async def _interrupt(self, request: Request) -> Response:
        if request.path_params["kernel_id"] not in self.kernels:
            return JSONResponse({"message": "Kernel does not exist"}, 404)
        return Response(status_code=204)

    async def _restart(self, request: Request) -> Response:
        kernel_id = request.path_params["kernel_id"]
        if kernel_id not in self.kernels:
            return JSONResponse({"message": "Kernel does not exist"}, 404)
        return JSONResponse(self.kernels[kernel_id])

    # ---------------------------------------------------------------- WebSocket

    async def _channels(self, ws: WebSocket) -> None:
        kernel_id = ws.path_params["kernel_id"]
        if (ws.headers.get("authorization") != f"token {self.token}"
                or kernel_id not in self.kernels):
            await ws.send_denial_response(JSONResponse({"message": "no such kernel"}, 404))
            return
        offered = ws.scope.get("subprotocols") or []
        protocol = ECHO if ECHO in offered else V1 if V1 in offered else None
        await ws.accept(subprotocol=protocol)
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                text = message.get("text")
                if protocol == ECHO:
                    if data is not None:
                        await ws.send_bytes(data)
                    else:
                        await ws.send_text(text or "")
                    continue
                request = deserialize_v1(data) if data is not None else deserialize_legacy(
                    text or "")
                for reply in self._answer(request):
                    if reply == "hold":
                        await self.hold.wait()
                        continue
                    if reply is None:
                        code, _, reason = request["content"]["code"][6:].partition(" ")
                        await ws.close(int(code), reason)
                        return
                    if protocol == V1:
                        await ws.send_bytes(serialize_v1(reply))
                    else:
                        legacy = serialize_legacy(reply)
                        if isinstance(legacy, str):
                            await ws.send_text(legacy)
                        else:
                            await ws.send_bytes(legacy)
        except WebSocketDisconnect:
            return

    def _answer(self, request: dict[str, Any]) -> list[Any]:
        msg_type = request["header"]["msg_type"]

        def reply(channel: str, reply_type: str, content: dict[str, Any]) -> dict[str, Any]:
            msg = make_message(reply_type, content, "fake-kernel", channel)
            msg["parent_header"] = request["header"]
            return msg

        if msg_type == "kernel_info_request":
            return [reply("shell", "kernel_info_reply",
                          {"status": "ok", "protocol_version": "5.3"})]
        if msg_type == "execute_request":
            code = str(request["content"].get("code", ""))
            if code.startswith("close "):
                return [None]
            return [reply("iopub", "status", {"execution_state": "busy"}),
                    *(["hold"] if code == "hold" else []),
                    reply("iopub", "stream", {"name": "stdout", "text": code}),
                    reply("shell", "execute_reply", {"status": "ok", "execution_count": 1}),
                    reply("iopub", "status", {"execution_state": "idle"})]
        return []


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the test process keeps its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(gateway: FakeGateway) -> AsyncIterator[FakeGateway]:
    """`gateway` served on a free loopback port of this process until the block ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(100)  # connections wait in the backlog until uvicorn serves: no start-up race
    config = uvicorn.Config(gateway, lifespan="off", ws="wsproto", log_level="warning",
                            access_log=False)
    server = _Server(config)
    gateway.url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        try:
            yield gateway
        finally:
            server.should_exit = True
    sock.close()


def closed_port() -> str:
    """The URL of a loopback port nothing listens on (a remote that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@dataclass
class Front:
    app: Any
    token: str
    module: Any  # the RemoteKernelsModule
    client: httpx.AsyncClient

    def cookie(self) -> str:
        return f"fastapiusersauth={self.client.cookies['fastapiusersauth']}"


@contextlib.asynccontextmanager
async def in_process_front(workdir: Path, remote_kernels: dict[str, Any],
                           token: str = "front-token") -> AsyncIterator[Front]:
    """A front in this process with `remote_kernels` options, logged in as a browser is
    (`?token=` sets the auth cookie)."""
    options = {"sessions_db": str(workdir / "sessions.sqlite"), "tune_server": False,
               "kernelspecs_cache_ttl": 0, "connect_timeout": 2, "request_timeout": 5,
               **remote_kernels}
    config = {"jupyverse": {
        "type": "jupyverse",
        "config": {"start_server": False},
        "modules": {
            "app": {"type": "app"},
            "auth": {"type": "auth", "config": {"mode": "token", "token": token,
                                                "directory": str(workdir / "auth")}},
            "frontend": {"type": "frontend"},
            "remote_kernels": {"type": "remote_kernels", "config": options},
        },
    }}
    root = get_root_module(config)
    root._global_start_timeout = 30  # fps-auth creates its database: not within 1 s on a
    root._stop_timeout = 10          # loaded machine
    async with root:
        transport = httpx.ASGITransport(app=root.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                     timeout=30) as client:
            with anyio.fail_after(10):
                answer = await client.get("/api/status", params={"token": token})
            assert answer.status_code == 200, answer.text
            assert client.cookies.get("fastapiusersauth"), "the front set no auth cookie"
            yield Front(root.app, token, root.modules["remote_kernels"], client)


class Denied(Exception):
    """The app refused the WebSocket handshake: with an HTTP answer, or a close."""

    def __init__(self, status: int | None, body: bytes, close_code: int | None) -> None:
        super().__init__(f"handshake refused: {status or close_code}")
        self.status = status
        self.body = body
        self.close_code = close_code


class AsgiWebSocket:
    """A WebSocket client that speaks ASGI's WebSocket messages to an app in this process."""

    def __init__(self, app: Any, path: str, headers: dict[str, str],
                 subprotocols: list[str]) -> None:
        path, _, query = path.partition("?")
        self._scope = {
            "type": "websocket", "asgi": {"version": "3.0", "spec_version": "2.4"},
            "scheme": "ws", "http_version": "1.1", "path": path, "raw_path": path.encode(),
            "query_string": query.encode(), "root_path": "",
            "headers": [(b"host", b"testserver"),
                        *((k.lower().encode(), v.encode()) for k, v in headers.items())],
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
            "subprotocols": subprotocols, "state": {},
            "extensions": {"websocket.http.response": {}},
        }
        self._app = app
        self._to_app, self._app_receives = anyio.create_memory_object_stream[dict](100)
        self._app_sends, self._from_app = anyio.create_memory_object_stream[dict](100)
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    async def _run_app(self) -> None:
        async def receive() -> dict:
            return await self._app_receives.receive()

        async def send(message: dict) -> None:
            await self._app_sends.send(message)

        try:
            await self._app(self._scope, receive, send)
        finally:
            await self._app_sends.aclose()

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[AsgiWebSocket]:
        """Handshake; Denied if the app refuses it. Leaving the block closes with 1000."""
        denied: Denied | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._run_app)
            await self._to_app.send({"type": "websocket.connect"})
            first = await self._from_app.receive()
            if first["type"] == "websocket.http.response.start":
                body = b""
                async for message in self._from_app:
                    body += message.get("body", b"")
                    if not message.get("more_body"):
                        break
                denied = Denied(first["status"], body, None)
            elif first["type"] == "websocket.close":
                denied = Denied(None, b"", first.get("code", 1000))
            else:
                assert first["type"] == "websocket.accept", first
                self.subprotocol = first.get("subprotocol")
                try:
                    yield self
                finally:
                    if self.close_code is None:
                        await self._to_app.send({"type": "websocket.disconnect",
                                                 "code": 1000})
                    with anyio.move_on_after(5):
                        async for _ in self._from_app:
                            pass  # whatever the app still sends until it returns
            tg.cancel_scope.cancel()
        if denied is not None:  # raised here, not inside the task group: as it is
            raise denied

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            await self._to_app.send({"type": "websocket.receive", "bytes": data})
        else:
            await self._to_app.send({"type": "websocket.receive", "text": data})

    async def vanish(self) -> None:
        """The client gone without a close frame (a network drop): the app hears 1006."""
        self.close_code = 1006
        await self._to_app.send({"type": "websocket.disconnect", "code": 1006})

    async def receive(self) -> str | bytes:
        """The next message from the app; raises Closed once it closed the socket."""
        message = await self._from_app.receive()
        if message["type"] == "websocket.close":
            self.close_code = message.get("code", 1000)
            self.close_reason = message.get("reason") or ""
            await self._to_app.send({"type": "websocket.disconnect",
                                     "code": self.close_code})
            raise Closed(self.close_code, self.close_reason)
        assert message["type"] == "websocket.send", message
        if message.get("bytes") is not None:
            return bytes(message["bytes"])
        return str(message["text"])


class Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed {code} {reason}")
        self.code = code
        self.reason = reason


def v1_request(msg_type: str, content: dict[str, Any], session: str = "s") -> bytes:
    return serialize_v1(make_message(msg_type, content, session))


def legacy_request(msg_type: str, content: dict[str, Any], session: str = "s") -> str:
    text = serialize_legacy(make_message(msg_type, content, session))
    assert isinstance(text, str)
    return text
