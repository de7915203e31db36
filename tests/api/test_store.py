"""The front's SQLite store (api/store.py) on a file of the test's own: what it remembers of
kernels and sessions, across a reopening of the file as across a restart of the front."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fps_remote_kernels.api.store import Store, StoredSession, default_store_path

pytestmark = pytest.mark.fast


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "front" / "sessions.sqlite"


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    opened = Store(path)
    yield opened
    opened.close()


def session(session_id: str, kernel_id: str, path: str = "nb.ipynb") -> StoredSession:
    return StoredSession(session_id, path, "nb.ipynb", "notebook", kernel_id)


def test_the_file_and_its_directory_are_created(path: Path, store: Store) -> None:
    """A store on a path whose directory does not exist yet creates both."""
    assert path.is_file()


def test_kernels_and_sessions_survive_reopening(path: Path, store: Store) -> None:
    """What one Store wrote, another Store on the same file reads (a restarted front)."""
    store.remember_kernel("k1", "gpu", started_by_front=True, name="python3")
    store.add_session(session("s1", "k1"))
    store.close()
    again = Store(path)
    try:
        assert again.kernel_remote("k1") == "gpu"
        assert again.kernel_name("k1") == "python3"
        assert again.kernels_started_by_front() == [("k1", "gpu")]
        assert again.sessions() == [session("s1", "k1")]
    finally:
        again.close()


def test_an_unknown_kernel_has_no_remote_and_no_name(store: Store) -> None:
    """Kernels never remembered answer None."""
    assert store.kernel_remote("nope") is None
    assert store.kernel_name("nope") is None
    assert not store.is_doomed("nope")


def test_seeing_a_kernel_again_moves_it_but_keeps_started_by_front(store: Store) -> None:
    """A later sighting on another remote updates the remote; started_by_front stays set."""
    store.remember_kernel("k1", "a", started_by_front=True)
    store.remember_kernel("k1", "b")
    assert store.kernel_remote("k1") == "b"
    assert store.kernels_started_by_front() == [("k1", "b")]
    assert store.kernels_of("a") == [] and store.kernels_of("b") == ["k1"]


def test_forgetting_a_kernel_forgets_its_sessions(store: Store) -> None:
    """A kernel gone takes its sessions with it; other kernels' sessions stay."""
    store.remember_kernel("k1", "a")
    store.remember_kernel("k2", "a")
    store.add_session(session("s1", "k1", "one.ipynb"))
    store.add_session(session("s2", "k2", "two.ipynb"))
    store.forget_kernel("k1")
    assert [s.id for s in store.sessions()] == ["s2"]
    assert store.kernel_remote("k1") is None
    assert not store.kernel_in_use("k1") and store.kernel_in_use("k2")


def test_a_doomed_kernel_leaves_listings_and_its_sessions_at_once(store: Store) -> None:
    """A doomed kernel leaves listings and sessions at once, still known for its shutdown."""
    store.remember_kernel("k1", "a", started_by_front=True)
    store.add_session(session("s1", "k1"))
    store.doom_kernel("k1")
    assert store.kernels_of("a") == [] and store.kernel_counts() == {}
    assert store.sessions() == []
    assert store.doomed_of("a") == ["k1"] and store.is_doomed("k1")
    assert store.kernel_remote("k1") == "a"  # still routable, to shut it down


def test_sessions_are_listed_in_creation_order_and_updated_in_place(store: Store) -> None:
    """sessions() keeps the order they were added; update_session changes one row."""
    for i in range(3):
        store.add_session(session(f"s{i}", f"k{i}", f"{i}.ipynb"))
    renamed = StoredSession("s1", "moved/1.ipynb", "1.ipynb", "notebook", "k9")
    store.update_session(renamed)
    assert [s.id for s in store.sessions()] == ["s0", "s1", "s2"]
    assert store.session("s1") == renamed
    store.delete_session("s1")
    assert store.session("s1") is None
    assert [s.id for s in store.sessions()] == ["s0", "s2"]


def test_a_session_id_is_unique(store: Store) -> None:
    """Adding a second session with an existing id fails instead of overwriting it."""
    store.add_session(session("s1", "k1"))
    with pytest.raises(sqlite3.IntegrityError):
        store.add_session(session("s1", "k2"))
    assert store.session("s1") == session("s1", "k1")


def test_a_file_of_the_first_release_gets_the_new_columns(path: Path) -> None:
    """A first-release file gets the `name` and `doomed` columns, its rows kept."""
    path.parent.mkdir(parents=True)
    old = sqlite3.connect(path)
    old.executescript("CREATE TABLE kernels (id TEXT PRIMARY KEY, remote TEXT NOT NULL, "
                      "started_by_front INTEGER NOT NULL DEFAULT 0);"
                      "INSERT INTO kernels VALUES ('k1', 'a', 1);")
    old.close()
    store = Store(path)
    try:
        assert store.kernels_started_by_front() == [("k1", "a")]
        assert store.kernel_name("k1") is None and not store.is_doomed("k1")
        store.remember_kernel("k1", "a", name="python3")
        assert store.kernel_name("k1") == "python3"
    finally:
        store.close()


def test_an_in_memory_store_works_without_a_file() -> None:
    """`:memory:` is accepted (no directory is made for it)."""
    store = Store(":memory:")
    store.remember_kernel("k1", "a")
    assert store.kernel_counts() == {"a": 1}
    store.close()


def test_the_default_path_follows_jupyters_data_dir(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    """JUPYTER_DATA_DIR wins; otherwise XDG_DATA_HOME/jupyter."""
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    assert default_store_path() == tmp_path / "data" / "fps_remote_kernels" / "sessions.sqlite"
    monkeypatch.delenv("JUPYTER_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_path() == (tmp_path / "xdg" / "jupyter" / "fps_remote_kernels"
                                    / "sessions.sqlite")
