"""A minimal remote for the scale scenario: the proxy's cost with the kernel out of the way.

It speaks what the front needs of a Jupyverse remote to open a kernel WebSocket, and no more:
`GET /api/status?token=` sets the auth cookie (and any request without the cookie gets 403, as
Jupyverse answers), `GET /api/kernels/{id}` answers a model for any UUID, and
`/api/kernels/{id}/channels` answers every `*_request` at once with `status: busy`, the reply
and `status: idle`, on the v1 protocol when offered, else the legacy one.

Run: `python -m benchmarks.fake_remote --port P --token T` (stops on SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import secrets
import signal
import struct
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

V1 = "v1.kernel.websocket.jupyter.org"
COOKIE = "fastapiusersauth"
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_KERNEL = re.compile(f"^/api/kernels/({_UUID})$")
_CHANNELS = re.compile(f"^/api/kernels/({_UUID})/channels$")
_DATE = "2025-01-01T00:00:00.000000Z"


def _response(status: int, body: Any, headers: list[tuple[str, str]] | None = None
              ) -> Response:
    payload = json.dumps(body).encode()
    # websockets closes the connection after an answer to a plain HTTP request: say so, or a
    # client may send its next request on a connection that is closing.
    return Response(status, HTTPStatus(status).phrase, Headers([
        ("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
        ("Connection", "close"), *(headers or []),
    ]), payload)


class FakeRemote:
    def __init__(self, token: str) -> None:
        self.token = token
        self.cookie = secrets.token_hex(16)
        self._ids = itertools.count()

    def authenticated(self, request: Request) -> bool:
        cookies = request.headers.get("Cookie", "")
        return f"{COOKIE}={self.cookie}" in cookies.replace(" ", "").split(";")

    def process_request(self, connection: ServerConnection, request: Request
                        ) -> Response | None:
        path, _, query = request.path.partition("?")
        if path == "/api/status":
            if parse_qs(query).get("token") == [self.token]:
                return _response(200, {"kernels": 0}, [
                    ("Set-Cookie", f"{COOKIE}={self.cookie}; HttpOnly; Path=/; SameSite=lax"),
                ])
            return _response(200 if self.authenticated(request) else 403, {"kernels": 0})
        if not self.authenticated(request):
            return _response(403, {"detail": "Forbidden"})
        if _CHANNELS.match(path):
            return None  # go on with the WebSocket handshake
        kernel = _KERNEL.match(path)
        if kernel:
            return _response(200, {"id": kernel.group(1), "name": "python3",
                                   "last_activity": _DATE, "execution_state": "idle",
                                   "connections": 0})
        if path == "/api/kernels":
            return _response(200, [])
        return _response(404, {"detail": "Not Found"})

    async def handler(self, ws: ServerConnection) -> None:
        v1 = ws.subprotocol == V1
        try:
            async for data in ws:
                channel, header = _v1_request(data) if v1 else _legacy_request(data)
                msg_type = header.get("msg_type", "")
                if not msg_type.endswith("_request"):
                    continue
                reply_type = msg_type[: -len("_request")] + "_reply"
                content = {"status": "ok", "execution_count": 1, "user_expressions": {},
                           "payload": []}
                for frame in (
                    self._frame(v1, "iopub", "status", header, {"execution_state": "busy"}),
                    self._frame(v1, channel, reply_type, header, content),
                    self._frame(v1, "iopub", "status", header, {"execution_state": "idle"}),
                ):
                    await ws.send(frame)
        except ConnectionClosed:
            pass

    def _frame(self, v1: bool, channel: str, msg_type: str, parent: dict[str, Any],
               content: dict[str, Any]) -> str | bytes:
        header = {"msg_id": f"fake-{next(self._ids)}", "msg_type": msg_type,
                  "session": "fake-kernel", "username": "kernel", "date": _DATE,
                  "version": "5.3"}
        if not v1:
            return json.dumps({"header": header, "parent_header": parent, "metadata": {},
                               "content": content, "channel": channel})
        parts = [channel.encode(), json.dumps(header).encode(), json.dumps(parent).encode(),
                 b"{}", json.dumps(content).encode()]
        offsets = [8 * 7]
        for part in parts:
            offsets.append(offsets[-1] + len(part))
        return struct.pack("<7Q", 6, *offsets) + b"".join(parts)


def _v1_request(data: str | bytes) -> tuple[str, dict[str, Any]]:
    assert isinstance(data, bytes)
    (count,) = struct.unpack_from("<Q", data)
    offsets = struct.unpack_from(f"<{count}Q", data, 8)
    return data[offsets[0] : offsets[1]].decode(), json.loads(data[offsets[1] : offsets[2]])


def _legacy_request(data: str | bytes) -> tuple[str, dict[str, Any]]:
    if isinstance(data, bytes):
        (count,) = struct.unpack_from("!I", data)
        first, end = struct.unpack_from("!2I", data, 4) if count > 1 else (8, len(data))
        data = data[first:end]
    message = json.loads(data)
    return message.get("channel", "shell"), message["header"]


def _select_subprotocol(connection: ServerConnection, offered: Any) -> Any:
    return V1 if V1 in offered else None


async def main(port: int, token: str) -> None:
    remote = FakeRemote(token)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(remote.handler, "127.0.0.1", port, process_request=remote.process_request,
                     select_subprotocol=_select_subprotocol, max_size=None, compression=None,
                     ping_interval=None, backlog=1024):
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.token))
