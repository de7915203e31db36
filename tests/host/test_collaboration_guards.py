"""The collaboration guards apply only to the code they were written for."""

from __future__ import annotations

import pytest

from fps_remote_kernels.host import collaboration_guards
from fps_remote_kernels.host.code_check import code_digest

pytestmark = pytest.mark.fast

pytest.importorskip("fps_file_id")


def test_file_id_watching_is_the_code_the_guard_was_written_for() -> None:
    """fps-file-id's `_FileId.watch_files` is unchanged since the guard was written: when this
    fails, check whether a deleted file still ends the server and update WATCH_FILES_DIGEST."""
    from fps_file_id.file_id import _FileId

    watch_files = _FileId.watch_files
    if getattr(watch_files, collaboration_guards._GUARDED, False):
        pytest.skip("guarded in this process already")
    assert code_digest(watch_files) == collaboration_guards.WATCH_FILES_DIGEST


def test_room_creation_is_the_code_the_guard_was_written_for() -> None:
    """jupyverse-yrooms' `YRooms._create_room` (which calls the guarded factory) is unchanged:
    when this fails, check whether a failing room still ends every room, and update
    CREATE_ROOM_DIGEST."""
    from jupyverse_yrooms.server import YRooms

    assert code_digest(YRooms._create_room) == collaboration_guards.CREATE_ROOM_DIGEST


def test_unreadable_code_is_left_alone() -> None:
    """Code whose source cannot be read (a `.pyc`-only install) has no digest: not applicable."""
    namespace: dict[str, object] = {}
    exec(compile("def made_without_a_file(): pass", "<no file>", "exec"), namespace)
    assert code_digest(namespace["made_without_a_file"]) is None
    assert not collaboration_guards.unchanged(namespace["made_without_a_file"], "0" * 16,
                                              "a function without a file")
