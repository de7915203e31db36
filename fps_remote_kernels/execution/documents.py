"""The front's collaborative documents (fps-yjs / fps-yrooms rooms): made safe to keep open,
opened for server-side execution, and held open while cells of theirs run.

fps-yrooms 0.2.4 asserts that a room's file still has an id (`YRoom._watch_file`,
`_write_to_file_later`, `close`): deleting a notebook whose room is open fails the room's task
group, which fails the task group of every room, and the whole server ends. The smallest lever
found: the factory `YRooms` creates rooms with is wrapped, so that a room that fails after it
started is logged and ends alone (`YRooms` then forgets it); a failure while the room opens
still reaches whoever asked for the room.

fps-file-id 0.4.4 fails the server the same way when one batch of file events holds a change
and the deletion of the same file (it stats the deleted file): a notebook deleted while its
cells run, saved every second, is that case. Its watching loop is wrapped (`guard_file_ids`,
before fps-file-id starts it) so that it logs and watches again.

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
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import structlog

from ..errors import not_found

logger = structlog.get_logger()


_GUARDED = "_remote_kernels_guarded"


def guard_file_ids() -> bool:
    """Make fps-file-id's file watching loop survive a file deleted under it (see above);
    False if fps-file-id is not installed or has no such loop. Call before it starts."""
    try:
        from fps_file_id.file_id import _FileId
    except ImportError:
        return False
    watch_files = getattr(_FileId, "watch_files", None)
    if watch_files is None:
        return False
    if getattr(watch_files, _GUARDED, False):
        return True

    async def guarded_watch_files(self: Any) -> None:
        while True:
            try:
                return await watch_files(self)
            except FileNotFoundError as e:
                logger.warning("File ids: a file vanished while its change was indexed; "
                               "watching again", error=repr(e))

    setattr(guarded_watch_files, _GUARDED, True)
    _FileId.watch_files = guarded_watch_files  # type: ignore[method-assign]
    return True


class _GuardedRoom:
    """A room's async context manager that keeps its failure to itself."""

    def __init__(self, room: Any) -> None:
        self.room = room

    async def __aenter__(self) -> Any:
        return await self.room.__aenter__()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool:
        try:
            return bool(await self.room.__aexit__(exc_type, exc, tb))
        except Exception as e:  # not cancellation: the front stopping still ends rooms
            logger.warning("Collaboration room failed and was closed (was its file deleted?)",
                           id=getattr(self.room, "id", None), error=repr(e))
            return True


class _GuardedFactory:
    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def __call__(self, *args: Any, **kwargs: Any) -> _GuardedRoom:
        return _GuardedRoom(self.factory(*args, **kwargs))


def guard_rooms(yjs: Any) -> bool:
    """Wrap the room factory of fps-yjs' rooms; False if this fps-yjs has none to wrap."""
    yrooms = getattr(yjs, "yrooms", None)
    factory = getattr(yrooms, "_room_factory", None)
    if factory is None:
        return False
    if not isinstance(factory, _GuardedFactory):
        yrooms._room_factory = _GuardedFactory(factory)  # type: ignore[union-attr]
    return True


# ---------------------------------------------------------------- notebooks for execution


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
