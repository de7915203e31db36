"""Kernels left busy by their last client, watched by the front until they are idle.

The front's kernel state comes from the status frames it relays (activity.py). When the last
client leaves while a cell runs, nothing relays the kernel's `idle`: the kernel would read
`busy` for ever (and never be culled, with jupyter_server's default `cull_busy=False`); a
Jupyverse remote's own model cannot say better (`starting` for v1 sockets). So the front opens
a socket of its own to such a kernel, as jupyter_server keeps its iopub channel open, and
feeds what the kernel sends to the activity record. It asks `kernel_info` on the shell
channel, which the kernel answers only once the running cell is done: the kernel's `idle`
for that request arrives even if the cell ended before the socket opened. The socket closes
once the kernel reads anything but `busy`, a client attaches again, or the socket ends.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import anyio
import anyio.abc
import structlog

from ..activity import Activity
from ..api.service import KernelService
from ..errors import RemoteKernelsError
from ..observers import Frame
from ..remote.kernel_socket import ConnectionClosed
from .frames import V1_PROTOCOL, message_frame

logger = structlog.get_logger()

_CLOSE_SECONDS = 2.0


class BusyWatch:
    """The observer that watches kernels left busy (see observers.ChannelsObserver)."""

    def __init__(self, activity: Activity, service: KernelService) -> None:
        self.activity = activity
        self.service = service
        self.watched: set[str] = set()
        self._task_group: anyio.abc.TaskGroup | None = None

    async def run(self) -> None:
        """Watch until cancelled (the front stopping)."""
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            await anyio.sleep_forever()

    # ---------------------------------------------------------------- observer

    def opened(self, kernel_id: str, session_id: str) -> None:
        return None  # a watch sees the connection and stops

    def closed(self, kernel_id: str, session_id: str) -> None:
        if self._left_busy(kernel_id) and kernel_id not in self.watched:
            if self._task_group is not None:
                self.watched.add(kernel_id)
                self._task_group.start_soon(self._watch, kernel_id)

    def from_kernel(self, kernel_id: str, frame: Frame) -> None:
        return None

    def to_kernel(self, kernel_id: str, frame: Frame) -> None:
        return None

    # ----------------------------------------------------------------

    def _left_busy(self, kernel_id: str) -> bool:
        activity = self.activity.kernels.get(kernel_id)
        return (activity is not None and activity.connections == 0
                and activity.execution_state == "busy")

    async def _watch(self, kernel_id: str) -> None:
        session_id = uuid.uuid4().hex
        try:
            remote = await self.service.owner(kernel_id)
            upstream = await remote.client.connect_channels(kernel_id, session_id,
                                                            [V1_PROTOCOL])
        except RemoteKernelsError as e:
            self.watched.discard(kernel_id)
            logger.info("A kernel left busy could not be watched", kernel_id=kernel_id,
                        error=e.message)
            return
        logger.info("Watching a kernel left busy by its last client", kernel_id=kernel_id)
        try:
            await upstream.send(_kernel_info_request(session_id,
                                                     upstream.subprotocol == V1_PROTOCOL))
            while self._left_busy(kernel_id):
                self.activity.from_kernel(kernel_id, await upstream.recv())
        except ConnectionClosed:
            pass
        finally:
            self.watched.discard(kernel_id)
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_SECONDS):
                await upstream.close()
        activity = self.activity.kernels.get(kernel_id)
        logger.info("Kernel no longer watched", kernel_id=kernel_id,
                    execution_state=activity.execution_state if activity else None)


def _kernel_info_request(session_id: str, v1: bool) -> Frame:
    return message_frame({
        "channel": "shell",
        "header": {
            "msg_id": uuid.uuid4().hex, "msg_type": "kernel_info_request",
            "session": session_id, "username": "fps-remote-kernels", "version": "5.3",
            "date": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        },
        "parent_header": {}, "metadata": {}, "content": {},
    }, v1)
