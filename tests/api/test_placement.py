"""Placement in pools and the culling rule, as pure functions (the real remotes are in
test_pools.py and test_culling.py)."""

from __future__ import annotations

import pytest

from fps_remote_kernels.activity import format_time
from fps_remote_kernels.api.culling import CullPolicy, cull_reason
from fps_remote_kernels.api.placement import Pools, placement_order
from fps_remote_kernels.api.store import Store
from fps_remote_kernels.config import load_config

pytestmark = pytest.mark.fast

MEMBERS = ["a", "b", "c"]


def test_fewest_kernels_first() -> None:
    """The member with the fewest kernels comes first, then the others by count."""
    assert placement_order(MEMBERS, MEMBERS, {"a": 3, "b": 1, "c": 2}, 0) == ["b", "c", "a"]


def test_ties_go_round_robin() -> None:
    """Among members with equal counts, the order starts at the cursor."""
    assert placement_order(MEMBERS, MEMBERS, {}, 1) == ["b", "c", "a"]
    assert placement_order(MEMBERS, ["a", "c"], {}, 1) == ["c", "a"]


def test_concurrent_starts_spread() -> None:
    """Starts in flight count as kernels and move the round robin on: four starts at once,
    none finished yet, alternate between two members."""
    pools = Pools({"a": "gpu", "b": "gpu", "x": None})
    chosen = []
    starting = []
    for _ in range(4):
        member = pools.order("gpu", ["a", "b"], {})[0]
        chosen.append(member)
        context = pools.starting("gpu", member)
        context.__enter__()
        starting.append(context)
    assert chosen == ["a", "b", "a", "b"]
    for context in starting:
        context.__exit__(None, None, None)
    assert pools.pools["gpu"].starting == {}


def test_pools_from_configuration() -> None:
    """Remotes naming a pool are its members, in configuration order; others offer alone."""
    pools = Pools({"a": "gpu", "x": None, "b": "gpu"})
    assert pools.pools["gpu"].members == ["a", "b"]
    assert pools.offerer("a") == "gpu" and pools.offerer("x") == "x"
    summary = pools.summaries(
        [{"name": "a", "reachable": True, "healthy": True, "message": None},
         {"name": "b", "reachable": False, "healthy": False, "message": "down"}],
        {"a": 2, "b": 3})
    assert summary == [{"name": "gpu", "reachable": 1, "kernels": 5, "members": [
        {"name": "a", "reachable": True, "healthy": True, "message": None, "kernels": 2},
        {"name": "b", "reachable": False, "healthy": False, "message": "down", "kernels": 3}]}]


def test_a_pool_may_not_share_a_remote_name() -> None:
    """A pool named like a remote is refused at start-up, naming the option."""
    with pytest.raises(ValueError, match="remote_kernels.remotes: pool 'gpu'"):
        load_config({"url": "http://h:1", "remote_name": "gpu", "remotes": [
            {"name": "g1", "url": "http://h:2", "pool": "gpu"}]})
    with pytest.raises(ValueError, match="remote_kernels.remotes.0.pool"):
        load_config({"remotes": [{"name": "g1", "url": "http://h:2", "pool": "a b"}]})
    with pytest.raises(ValueError, match="remote_kernels.cull_interval"):
        load_config({"url": "http://h:1", "cull_interval": 0})
    with pytest.raises(ValueError, match="remote_kernels.cull_idle_timeout"):
        load_config({"url": "http://h:1", "cull_idle_timeout": -1})


def test_store_counts_and_doomed_kernels(tmp_path) -> None:
    """The store counts kernels per remote without the doomed ones, and keeps their names."""
    store = Store(tmp_path / "s.sqlite")
    store.remember_kernel("k1", "a", started_by_front=True, name="python3")
    store.remember_kernel("k2", "a")
    store.remember_kernel("k1", "a")  # seen again in a listing: the name stays
    assert store.kernel_counts() == {"a": 2}
    assert store.kernel_names_of("a") == [("k1", "python3"), ("k2", None)]
    store.doom_kernel("k1")
    assert store.kernel_counts() == {"a": 1}
    assert store.is_doomed("k1") and store.doomed_of("a") == ["k1"]
    assert store.kernels_started_by_front() == []
    store.close()


NOW = 1_000_000.0
POLICY = CullPolicy(idle_timeout=60, interval=1, connected=False, busy=False)


def model(idle: float, state: str = "idle", connections: int = 0) -> dict:
    return {"id": "k", "name": "python3", "execution_state": state,
            "last_activity": format_time(NOW - idle), "connections": connections}


def test_cull_rule_is_jupyter_servers() -> None:
    """Idle past the timeout: culled; busy or connected: kept unless cull_busy /
    cull_connected; dead: culled at once; no last_activity: kept."""
    assert cull_reason(model(30), NOW, POLICY) is None
    assert cull_reason(model(61), NOW, POLICY) == "inactive for 61 s"
    assert cull_reason(model(61, "busy"), NOW, POLICY) is None
    assert cull_reason(model(61, connections=1), NOW, POLICY) is None
    assert cull_reason(model(61, "busy"), NOW,
                       CullPolicy(60, 1, connected=False, busy=True)) is not None
    assert cull_reason(model(61, connections=2), NOW,
                       CullPolicy(60, 1, connected=True, busy=False)) is not None
    assert cull_reason(model(0, "dead"), NOW, POLICY) == "dead"
    assert cull_reason({**model(61), "last_activity": ""}, NOW, POLICY) is None
