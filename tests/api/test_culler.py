"""Idle culling without remotes: jupyter_server's rule (cull_reason) at its edges, and one
culling round (Culler.cull_once) over a stand-in service with a real store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from fps_remote_kernels.activity import format_time
from fps_remote_kernels.api.culling import Culler, CullPolicy, cull_reason
from fps_remote_kernels.api.service import KernelService
from fps_remote_kernels.api.store import Store, StoredSession
from fps_remote_kernels.errors import RemoteKernelsError, not_found, unreachable

pytestmark = [pytest.mark.anyio, pytest.mark.fast]

POLICY = CullPolicy(idle_timeout=60, interval=300, connected=False, busy=False)


def model(kernel_id: str, idle: float, state: str = "idle", connections: int = 0,
          now: float | None = None) -> dict[str, Any]:
    moment = (now if now is not None else time.time()) - idle
    return {"id": kernel_id, "name": "python3", "execution_state": state,
            "last_activity": format_time(moment), "connections": connections}


NOW = 2_000_000.0


def test_exactly_at_the_timeout_is_kept() -> None:
    """Idle for exactly cull_idle_timeout is not yet idle too long (jupyter_server's `>`)."""
    assert cull_reason(model("k", 60, now=NOW), NOW, POLICY) is None
    assert cull_reason(model("k", 60.5, now=NOW), NOW, POLICY) == "inactive for 60 s"


def test_a_dead_kernel_is_culled_even_when_connected_and_recent() -> None:
    """`dead` culls at once, whatever the activity or connections."""
    assert cull_reason(model("k", 0, "dead", connections=3, now=NOW), NOW, POLICY) == "dead"


@pytest.mark.parametrize("last_activity", [None, 17, "yesterday"])
def test_no_readable_last_activity_means_no_culling(last_activity: Any) -> None:
    """A model without a parseable last_activity is never judged idle."""
    assert cull_reason({**model("k", 1000, now=NOW), "last_activity": last_activity}, NOW,
                       POLICY) is None


def test_a_naive_time_is_read_as_utc() -> None:
    """A last_activity without a zone (some remotes) counts as UTC."""
    naive = format_time(NOW - 120).removesuffix("Z")
    assert cull_reason({**model("k", 0, now=NOW), "last_activity": naive}, NOW, POLICY) == \
        "inactive for 120 s"


def test_connections_that_are_not_a_count_do_not_protect() -> None:
    """A remote that does not count connections (null) does not keep an idle kernel alive."""
    assert cull_reason({**model("k", 120, now=NOW), "connections": None}, NOW, POLICY) == \
        "inactive for 120 s"


class StandInService:
    """What Culler uses of KernelService: kernel(), shutdown_kernel() and the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.models: dict[str, dict[str, Any] | RemoteKernelsError] = {}
        self.shutdown_errors: dict[str, RemoteKernelsError] = {}
        self.shut_down: list[str] = []

    async def kernel(self, kernel_id: str) -> dict[str, Any]:
        found = self.models[kernel_id]
        if isinstance(found, RemoteKernelsError):
            raise found
        return found

    async def shutdown_kernel(self, kernel_id: str) -> None:
        error = self.shutdown_errors.get(kernel_id)
        if error is not None:
            raise error
        self.shut_down.append(kernel_id)
        self.store.forget_kernel(kernel_id)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "s.sqlite")
    yield opened
    opened.close()


def culler_of(service: StandInService, culled: list[tuple[str, str]]) -> Culler:
    return Culler(cast(KernelService, service), POLICY,
                  lambda kernel_id, remote: culled.append((kernel_id, remote)))


async def test_a_round_culls_only_idle_kernels_the_front_started(store: Store) -> None:
    """A round culls the idle kernels the front started, not busy, recent or others'."""
    service = StandInService(store)
    for kernel_id, remote, started, idle, state in [
        ("idle", "a", True, 600, "idle"), ("busy", "a", True, 600, "busy"),
        ("recent", "b", True, 5, "idle"), ("theirs", "b", False, 600, "idle"),
    ]:
        store.remember_kernel(kernel_id, remote, started_by_front=started)
        service.models[kernel_id] = model(kernel_id, idle, state)
    store.add_session(StoredSession("s", "nb.ipynb", "nb.ipynb", "notebook", "idle"))
    culled: list[tuple[str, str]] = []
    with anyio.fail_after(10):
        assert await culler_of(service, culled).cull_once() == ["idle"]
    assert service.shut_down == ["idle"] and culled == [("idle", "a")]
    assert store.sessions() == []  # its session went with it


async def test_an_unreachable_or_gone_kernel_is_not_culled(store: Store) -> None:
    """A kernel whose model cannot be had (remote down, or gone) is left for later."""
    service = StandInService(store)
    store.remember_kernel("down", "a", started_by_front=True)
    store.remember_kernel("gone", "a", started_by_front=True)
    service.models["down"] = unreachable("http://a/", "connection refused")
    service.models["gone"] = not_found("Kernel gone")
    culled: list[tuple[str, str]] = []
    with anyio.fail_after(10):
        assert await culler_of(service, culled).cull_once() == []
    assert culled == [] and service.shut_down == []


async def test_a_kernel_already_gone_at_shutdown_is_forgotten_and_counted(store: Store) -> None:
    """A 404 on shutdown means it is gone anyway: forgotten, and counted as culled."""
    service = StandInService(store)
    store.remember_kernel("k", "a", started_by_front=True)
    service.models["k"] = model("k", 600)
    service.shutdown_errors["k"] = not_found("Kernel k")
    culled: list[tuple[str, str]] = []
    with anyio.fail_after(10):
        assert await culler_of(service, culled).cull_once() == ["k"]
    assert culled == [("k", "a")] and store.kernel_remote("k") is None


async def test_a_failed_shutdown_keeps_the_kernel_for_the_next_round(store: Store) -> None:
    """A shutdown the remote fails (503) culls nothing and keeps the kernel known."""
    service = StandInService(store)
    store.remember_kernel("k", "a", started_by_front=True)
    service.models["k"] = model("k", 600)
    service.shutdown_errors["k"] = unreachable("http://a/", "connection lost")
    culled: list[tuple[str, str]] = []
    with anyio.fail_after(10):
        assert await culler_of(service, culled).cull_once() == []
    assert culled == [] and store.kernels_started_by_front() == [("k", "a")]
