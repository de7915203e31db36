"""A small Jupyter kernel WebSocket client for the tests, speaking both wire protocols.

Written from the protocol description (shared/PROTOCOL.md): v1 frames are
`u64le count, count x u64le offsets, channel, header, parent_header, metadata, content,
buffers...`; legacy messages are JSON text, or `u32be n, n x u32be offsets, JSON, buffers...`
when they carry buffers.
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import anyio
import websockets
from websockets.asyncio.client import ClientConnection

V1 = "v1.kernel.websocket.jupyter.org"


def make_message(msg_type: str, content: dict[str, Any], session: str, channel: str = "shell",
                 buffers: Sequence[bytes] = ()) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "username": "test",
            "session": session,
            "date": datetime.now(timezone.utc).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": channel,
        "buffers": list(buffers),
    }


def serialize_v1(msg: dict[str, Any]) -> bytes:
    parts = [
        msg["channel"].encode(),
        json.dumps(msg["header"]).encode(),
        json.dumps(msg["parent_header"]).encode(),
        json.dumps(msg["metadata"]).encode(),
        json.dumps(msg["content"]).encode(),
        *[bytes(b) for b in msg.get("buffers", [])],
    ]
    count = len(parts) + 1
    offsets = [8 * (1 + count)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    return struct.pack(f"<{count + 1}Q", count, *offsets) + b"".join(parts)


def deserialize_v1(data: bytes) -> dict[str, Any]:
    (count,) = struct.unpack_from("<Q", data)
    offsets = struct.unpack_from(f"<{count}Q", data, 8)
    parts = [data[offsets[i] : offsets[i + 1]] for i in range(count - 1)]
    return {
        "channel": parts[0].decode(),
        "header": json.loads(parts[1]),
        "parent_header": json.loads(parts[2]),
        "metadata": json.loads(parts[3]),
        "content": json.loads(parts[4]),
        "buffers": parts[5:],
    }


def serialize_legacy(msg: dict[str, Any]) -> str | bytes:
    buffers = [bytes(b) for b in msg.get("buffers", [])]
    body = {k: v for k, v in msg.items() if k != "buffers"}
    if not buffers:
        return json.dumps(body)
    parts = [json.dumps(body).encode(), *buffers]
    offsets = [4 * (len(parts) + 1)]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + len(part))
    return struct.pack(f"!{len(parts) + 1}I", len(parts), *offsets) + b"".join(parts)


def deserialize_legacy(data: str | bytes) -> dict[str, Any]:
    if isinstance(data, str):
        msg = json.loads(data)
        msg.setdefault("buffers", [])
        return msg
    (count,) = struct.unpack_from("!I", data)
    offsets = [*struct.unpack_from(f"!{count}I", data, 4), len(data)]
    parts = [data[offsets[i] : offsets[i + 1]] for i in range(count)]
    msg = json.loads(parts[0])
    msg["buffers"] = parts[1:]
    return msg


class KernelConnection:
    """One kernel WebSocket, with helpers to execute code and collect what comes back."""

    def __init__(self, ws: ClientConnection, session: str) -> None:
        self.ws = ws
        self.session = session
        self.protocol = ws.subprotocol

    @classmethod
    async def open(cls, ws_url: str, *, cookie: str | None = None, protocol: str | None = V1,
                   session: str | None = None, additional_headers: dict[str, str] | None = None,
                   **kwargs: Any) -> KernelConnection:
        """`additional_headers`, e.g. `Authorization`, go with the cookie; `ws_url` may already
        carry a query (`?token=`)."""
        session = session or uuid.uuid4().hex
        headers = {"Cookie": cookie} if cookie else {}
        headers.update(additional_headers or {})
        separator = "&" if "?" in ws_url else "?"
        ws = await websockets.connect(
            f"{ws_url}{separator}session_id={session}",
            subprotocols=[websockets.Subprotocol(protocol)] if protocol else None,
            additional_headers=headers,
            max_size=None,
            **kwargs,
        )
        return cls(ws, session)

    async def close(self) -> None:
        await self.ws.close()

    async def send(self, msg: dict[str, Any]) -> None:
        if self.protocol == V1:
            await self.ws.send(serialize_v1(msg))
        else:
            await self.ws.send(serialize_legacy(msg))

    async def receive(self) -> dict[str, Any]:
        data = await self.ws.recv()
        if self.protocol == V1:
            assert isinstance(data, bytes), "v1 frames are binary"
            return deserialize_v1(data)
        return deserialize_legacy(data)

    async def request(self, msg_type: str, content: dict[str, Any], channel: str = "shell",
                      buffers: Sequence[bytes] = ()) -> str:
        msg = make_message(msg_type, content, self.session, channel, buffers)
        await self.send(msg)
        return str(msg["header"]["msg_id"])

    async def execute(self, code: str, timeout: float = 60, **content: Any) -> Execution:
        """Run `code` and collect its replies until the reply and `idle` have both arrived."""
        msg_id = await self.request(
            "execute_request",
            {"code": code, "silent": False, "store_history": True, "user_expressions": {},
             "allow_stdin": content.pop("allow_stdin", False), "stop_on_error": True,
             **content},
        )
        return await self.collect(msg_id, timeout)

    async def collect(self, msg_id: str, timeout: float = 60) -> Execution:
        execution = Execution(msg_id)
        with anyio.fail_after(timeout):
            while not execution.done:
                execution.add(await self.receive())
        return execution

    async def wait_for(self, msg_type: str, timeout: float = 60,
                       parent: str | None = None) -> dict[str, Any]:
        with anyio.fail_after(timeout):
            while True:
                msg = await self.receive()
                if msg["header"]["msg_type"] == msg_type and (
                    parent is None or msg["parent_header"].get("msg_id") == parent
                ):
                    return msg


class Execution:
    """The messages that answer one request."""

    def __init__(self, msg_id: str) -> None:
        self.msg_id = msg_id
        self.messages: list[dict[str, Any]] = []
        self.reply: dict[str, Any] | None = None
        self.idle = False

    def add(self, msg: dict[str, Any]) -> None:
        if msg["parent_header"].get("msg_id") != self.msg_id:
            return
        self.messages.append(msg)
        msg_type = msg["header"]["msg_type"]
        if msg_type.endswith("_reply"):
            self.reply = msg
        elif msg_type == "status" and msg["content"]["execution_state"] == "idle":
            self.idle = True

    @property
    def done(self) -> bool:
        return self.reply is not None and self.idle

    def of_type(self, msg_type: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["header"]["msg_type"] == msg_type]

    @property
    def stdout(self) -> str:
        return "".join(m["content"]["text"] for m in self.of_type("stream")
                       if m["content"]["name"] == "stdout")
