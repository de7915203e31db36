"""The front's collaborative documents (fps-yjs / fps-yrooms rooms): opened for server-side
execution, and held open while cells of theirs run (host/collaboration_guards.py keeps them
safe to keep open).

Holding a room (checked in fps-yrooms 0.2.4 and jupyverse-yrooms 0.1.3): a room closes only
`document_cleanup_delay` (60 s) after its last client leaves, and while it is open it saves
its document to disk `document_save_delay` after each change; a room opened by `get_room` with
no client is never closed. So a cell that runs holds its room by joining it as a silent client
(`room.serve` with a channel that discards what it is sent and says nothing until released):
the room stays open and keeps saving whoever else leaves, and once the last hold is released
the room closes 60 s later like any room, after saving what the cells wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import structlog

from ..errors import not_found

logger = structlog.get_logger()


async def open_notebook(yjs: Any, file_id: Any, document_id: str) -> Any:
    """The room of a notebook document id (`json:notebook:<file id>`, as JupyterLab names it),
    opened from the file if nobody has it open; 404 if there is no such notebook."""
    parts = document_id.split(":", 2)
    if len(parts) != 3 or parts[1] != "notebook" or not parts[2]:
        raise not_found(f"Notebook document {document_id[:100]!r}")
    if await file_id.get_path(parts[2]) is None:
        raise not_found(f"Notebook document {document_id[:100]!r}")
    try:
        return await yjs.get_room(document_id)
    except Exception as e:  # the file vanished or is not a notebook: fps-yrooms asserts
        logger.info("Could not open a notebook for execution", document_id=document_id,
                    error=repr(e))
        raise not_found(f"Notebook document {document_id[:100]!r}") from None


def find_cell(room: Any, cell_id: str) -> Any:
    """The Y cell (a `pycrdt.Map`) with this id in the room's notebook; 404 if none."""
    for ycell in room.jupyter_ydoc.ycells:
        if ycell.get("id") == cell_id:
            return ycell
    raise not_found(f"Cell {cell_id[:100]!r}")


class _SilentClient:
    """A room client that hears nothing and says nothing until it is released (duck-typed
    `jupyverse_yrooms.AsyncChannel`: this module loads without the collaboration plugins)."""

    def __init__(self, room_id: str) -> None:
        self._id = room_id
        self.joined = anyio.Event()
        self.released = anyio.Event()

    @property
    def id(self) -> str:
        return self._id

    async def send(self, message: bytes) -> None:
        self.joined.set()  # the room sends its sync message once the client is in

    def __aiter__(self) -> _SilentClient:
        return self

    async def __anext__(self) -> bytes:
        await self.released.wait()
        raise StopAsyncIteration

    async def receive(self) -> bytes:
        return await self.__anext__()


class _Hold:
    def __init__(self, client: _SilentClient) -> None:
        self.client = client
        self.count = 0


# A room joins a client at once; this bounds a room that never answers.
_JOIN_SECONDS = 10.0


class RoomHolds:
    """Rooms held open while cells of theirs run: one silent client per room, counted."""

    def __init__(self, task_group: anyio.abc.TaskGroup) -> None:
        self._task_group = task_group
        self._holds: dict[Any, _Hold] = {}  # by room object: a reopened room is another

    @property
    def held(self) -> int:
        return len(self._holds)

    async def hold(self, room: Any) -> Callable[[], None]:
        """Keep `room` open until the returned function is called (once is enough)."""
        hold = self._holds.get(room)
        if hold is None:
            hold = self._holds[room] = _Hold(_SilentClient(room.id))
            self._task_group.start_soon(self._serve, room, hold)
        hold.count += 1
        with anyio.move_on_after(_JOIN_SECONDS):
            await hold.client.joined.wait()
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            hold.count -= 1
            if hold.count <= 0:
                hold.client.released.set()
                if self._holds.get(room) is hold:
                    del self._holds[room]

        return release

    async def _serve(self, room: Any, hold: _Hold) -> None:
        try:
            await room.serve(hold.client)
        except Exception as e:  # its file deleted: fps-yrooms asserts; the room is gone
            logger.info("A held collaboration room ended", id=room.id, error=repr(e))
        finally:
            hold.client.joined.set()
            if self._holds.get(room) is hold:
                del self._holds[room]
