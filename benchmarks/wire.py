"""A lean kernel WebSocket client for measurements, speaking both wire protocols.

The client's own work is part of every measured time, the same for each target; it is kept
small so the differences between targets stay visible: v1 frames are split by their offset
table and only the small JSON parts (header, parent header, status content) are decoded.
"""

from __future__ import annotations

import json
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any

import anyio
import websockets
from websockets.asyncio.client import ClientConnection

from tests.support.kernel_client import make_message, serialize_legacy, serialize_v1

V1 = "v1.kernel.websocket.jupyter.org"


@dataclass(slots=True)
class Received:
    msg_type: str
    parent_id: str | None
    execution_state: str | None
    size: int  # bytes of the frame (text frames: characters)


def parse(data: str | bytes, protocol: str | None) -> Received:
    if protocol == V1:
        assert isinstance(data, bytes), "v1 frames are binary"
        (count,) = struct.unpack_from("<Q", data)
        offsets = struct.unpack_from(f"<{count}Q", data, 8)
        header = json.loads(data[offsets[1] : offsets[2]])
        parent = json.loads(data[offsets[2] : offsets[3]])
        msg_type = header["msg_type"]
        state = None
        if msg_type == "status":
            state = json.loads(data[offsets[4] : offsets[5]]).get("execution_state")
        return Received(msg_type, parent.get("msg_id"), state, len(data))
    if isinstance(data, bytes):
        (count,) = struct.unpack_from("!I", data)
        offsets = [*struct.unpack_from(f"!{count}I", data, 4), len(data)]
        message = json.loads(data[offsets[0] : offsets[1]])
    else:
        message = json.loads(data)
    msg_type = message["header"]["msg_type"]
    state = message["content"].get("execution_state") if msg_type == "status" else None
    return Received(msg_type, message["parent_header"].get("msg_id"), state, len(data))


class Kernel:
    """One kernel WebSocket used by the scenarios."""

    def __init__(self, ws: ClientConnection, session: str) -> None:
        self.ws = ws
        self.session = session
        self.protocol = ws.subprotocol

    @classmethod
    async def open(cls, ws_base: str, kernel_id: str, *, cookie: str | None,
                   protocol: str | None = V1, deflate: bool = False,
                   max_queue: int | None = 16, timeout: float = 30) -> Kernel:
        session = uuid.uuid4().hex
        url = f"{ws_base}api/kernels/{kernel_id}/channels?session_id={session}"
        ws = await websockets.connect(
            url,
            subprotocols=[websockets.Subprotocol(protocol)] if protocol else None,
            additional_headers={"Cookie": cookie} if cookie else None,
            max_size=None,
            max_queue=max_queue,
            # A browser offers permessage-deflate; the default here measures the relay alone.
            compression="deflate" if deflate else None,
            open_timeout=timeout,
            ping_interval=None,
            close_timeout=2,
        )
        if ws.subprotocol != protocol:
            await ws.close()
            raise RuntimeError(f"{url}: agreed subprotocol {ws.subprotocol!r}, not {protocol!r}")
        return cls(ws, session)

    async def close(self) -> None:
        with anyio.move_on_after(5):
            await self.ws.close()

    async def send_request(self, msg_type: str, content: dict[str, Any],
                           channel: str = "shell") -> str:
        msg = make_message(msg_type, content, self.session, channel)
        frame = serialize_v1(msg) if self.protocol == V1 else serialize_legacy(msg)
        await self.ws.send(frame)
        return str(msg["header"]["msg_id"])

    async def send_execute(self, code: str) -> str:
        return await self.send_request("execute_request", {
            "code": code, "silent": False, "store_history": False, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True,
        })

    async def receive(self) -> Received:
        return parse(await self.ws.recv(), self.protocol)

    async def wait_done(self, msg_id: str, reply_type: str = "execute_reply") -> int:
        """Read until the reply and `status: idle` of `msg_id`; the bytes received meanwhile."""
        reply = idle = False
        size = 0
        while not (reply and idle):
            received = await self.receive()
            size += received.size
            if received.parent_id != msg_id:
                continue
            if received.msg_type == reply_type:
                reply = True
            elif received.execution_state == "idle":
                idle = True
        return size

    async def execute(self, code: str, timeout: float = 60) -> float:
        """Seconds from sending `code` to having its execute_reply and `status: idle`."""
        with anyio.fail_after(timeout):
            start = time.perf_counter()
            msg_id = await self.send_execute(code)
            await self.wait_done(msg_id)
            return time.perf_counter() - start

    async def kernel_info(self, timeout: float = 60) -> None:
        with anyio.fail_after(timeout):
            msg_id = await self.send_request("kernel_info_request", {})
            await self.wait_done(msg_id, "kernel_info_reply")
