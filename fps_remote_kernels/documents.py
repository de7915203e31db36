"""The front's collaborative documents (fps-yjs / fps-yrooms rooms), made safe to keep open.

fps-yrooms 0.2.4 asserts that a room's file still has an id (`YRoom._watch_file`,
`_write_to_file_later`, `close`): deleting a notebook whose room is open fails the room's task
group, which fails the task group of every room, and the whole server ends. The smallest lever
found: the factory `YRooms` creates rooms with is wrapped, so that a room that fails after it
started is logged and ends alone (`YRooms` then forgets it); a failure while the room opens
still reaches whoever asked for the room.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import structlog

logger = structlog.get_logger()


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
