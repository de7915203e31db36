"""What the front remembers across its own restarts, in one small SQLite file.

- which remote owns each kernel the front has seen (kernel ids stay routable among several
  remotes), its kernelspec name (to list it while its remote is unreachable), whether the
  front started it (to shut those down on request, and to cull them), and whether a user
  deleted it while its remote was unreachable (to shut it down when the remote is back);
- the sessions the front keeps itself (gateways have no usable session API, and with several
  remotes a session may move its kernel from one remote to another).

Every operation is a single small statement on a local file: it runs inline.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kernels (
    id TEXT PRIMARY KEY,
    remote TEXT NOT NULL,
    started_by_front INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    kernel_id TEXT NOT NULL
);
"""


# (column, declaration) of the kernels table added since: see Store.__init__.
_ADDED_COLUMNS = (("name", "TEXT"), ("doomed", "INTEGER NOT NULL DEFAULT 0"))


@dataclass
class StoredSession:
    id: str
    path: str
    name: str
    type: str
    kernel_id: str


def default_store_path() -> Path:
    """<Jupyter data dir>/fps_remote_kernels/sessions.sqlite, as Jupyter computes its data dir."""
    data_dir = os.environ.get("JUPYTER_DATA_DIR")
    if not data_dir:
        xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        data_dir = str(Path(xdg) / "jupyter")
    return Path(data_dir) / "fps_remote_kernels" / "sessions.sqlite"


class Store:
    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # Columns added after the first release: older files get them here.
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(kernels)")}
        for column, declaration in _ADDED_COLUMNS:
            if column not in columns:
                self._db.execute(f"ALTER TABLE kernels ADD COLUMN {column} {declaration}")

    def close(self) -> None:
        self._db.close()

    # ---------------------------------------------------------------- kernels

    def remember_kernel(self, kernel_id: str, remote: str, started_by_front: bool = False,
                        name: str | None = None) -> None:
        self._db.execute(
            "INSERT INTO kernels (id, remote, started_by_front, name) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET remote = excluded.remote, "
            "started_by_front = max(started_by_front, excluded.started_by_front), "
            "name = coalesce(excluded.name, name)",
            (kernel_id, remote, int(started_by_front), name),
        )

    def kernel_remote(self, kernel_id: str) -> str | None:
        row = self._db.execute("SELECT remote FROM kernels WHERE id = ?", (kernel_id,)).fetchone()
        return row[0] if row else None

    def kernel_name(self, kernel_id: str) -> str | None:
        """The kernelspec name of the kernel on its remote, if the front learnt it."""
        row = self._db.execute("SELECT name FROM kernels WHERE id = ?", (kernel_id,)).fetchone()
        return row[0] if row else None

    def kernels_of(self, remote: str) -> list[str]:
        """The kernels of `remote` the front knows of (not those doomed)."""
        rows = self._db.execute("SELECT id FROM kernels WHERE remote = ? AND doomed = 0",
                                (remote,))
        return [row[0] for row in rows]

    def kernel_names_of(self, remote: str) -> list[tuple[str, str | None]]:
        """(id, kernelspec name on the remote) of the kernels of `remote`, not those doomed."""
        rows = self._db.execute(
            "SELECT id, name FROM kernels WHERE remote = ? AND doomed = 0 ORDER BY rowid",
            (remote,))
        return [(row[0], row[1]) for row in rows]

    def kernel_counts(self) -> dict[str, int]:
        """How many kernels (not doomed) the front knows of on each remote."""
        rows = self._db.execute(
            "SELECT remote, count(*) FROM kernels WHERE doomed = 0 GROUP BY remote")
        return {row[0]: row[1] for row in rows}

    def kernels_started_by_front(self) -> list[tuple[str, str]]:
        rows = self._db.execute(
            "SELECT id, remote FROM kernels WHERE started_by_front = 1 AND doomed = 0")
        return [(row[0], row[1]) for row in rows]

    def doom_kernel(self, kernel_id: str) -> None:
        """Deleted by a user while its remote was unreachable: gone from listings and from
        its sessions now, shut down on the remote when it answers again."""
        self._db.execute("DELETE FROM sessions WHERE kernel_id = ?", (kernel_id,))
        self._db.execute("UPDATE kernels SET doomed = 1 WHERE id = ?", (kernel_id,))

    def is_doomed(self, kernel_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM kernels WHERE id = ? AND doomed = 1",
                               (kernel_id,)).fetchone()
        return row is not None

    def doomed_of(self, remote: str) -> list[str]:
        rows = self._db.execute("SELECT id FROM kernels WHERE remote = ? AND doomed = 1",
                                (remote,))
        return [row[0] for row in rows]

    def forget_kernel(self, kernel_id: str) -> None:
        """The kernel is gone: forget it and the sessions that used it."""
        self._db.execute("DELETE FROM sessions WHERE kernel_id = ?", (kernel_id,))
        self._db.execute("DELETE FROM kernels WHERE id = ?", (kernel_id,))

    # ---------------------------------------------------------------- sessions

    def add_session(self, session: StoredSession) -> None:
        self._db.execute(
            "INSERT INTO sessions (id, path, name, type, kernel_id) VALUES (?, ?, ?, ?, ?)",
            (session.id, session.path, session.name, session.type, session.kernel_id),
        )

    def sessions(self) -> list[StoredSession]:
        rows = self._db.execute(
            "SELECT id, path, name, type, kernel_id FROM sessions ORDER BY rowid")
        return [StoredSession(*row) for row in rows]

    def session(self, session_id: str) -> StoredSession | None:
        row = self._db.execute(
            "SELECT id, path, name, type, kernel_id FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        return StoredSession(*row) if row else None

    def update_session(self, session: StoredSession) -> None:
        self._db.execute(
            "UPDATE sessions SET path = ?, name = ?, type = ?, kernel_id = ? WHERE id = ?",
            (session.path, session.name, session.type, session.kernel_id, session.id),
        )

    def delete_session(self, session_id: str) -> None:
        self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def kernel_in_use(self, kernel_id: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM sessions WHERE kernel_id = ? LIMIT 1", (kernel_id,)).fetchone()
        return row is not None
