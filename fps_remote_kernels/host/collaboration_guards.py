"""Collaboration rooms that fail alone, and file ids that survive a deleted file.

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

Each guard applies only to the code it was written for (code_check.py): fps-file-id 0.4.4's
`_FileId.watch_files`, jupyverse-yrooms 0.1.3's `YRooms._create_room` (where the factory is
called). Otherwise the front starts without it, and says so. Remove each when its library
stops failing on a deleted file (drafted reports: docs/dev/upstream.md).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import structlog

from .code_check import unchanged

logger = structlog.get_logger()

# The code each guard was written for (tests/host/test_collaboration_guards.py).
WATCH_FILES_DIGEST = "12424f85c539523a"
CREATE_ROOM_DIGEST = "4fe561f8b5262f3a"

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
    if not unchanged(watch_files, WATCH_FILES_DIGEST, "fps-file-id _FileId.watch_files",
                     "a file deleted while it is indexed may end the server"):
        return False

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
    if not unchanged(getattr(type(yrooms), "_create_room", None), CREATE_ROOM_DIGEST,
                     "jupyverse-yrooms YRooms._create_room", "rooms are not guarded"):
        return False
    if not isinstance(factory, _GuardedFactory):
        yrooms._room_factory = _GuardedFactory(factory)  # type: ignore[union-attr]
    return True
