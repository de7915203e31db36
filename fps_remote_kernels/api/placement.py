"""Pools of remotes: which member of a pool gets a new kernel.

Remotes that name the same `pool` offer their kernelspecs together, once each, under plain
names. A new kernel for a pool's kernelspec goes to the member with the fewest kernels the
front knows of (the store's, plus starts in flight), ties broken round robin; the service
tries the members in that order, each once, skipping those that are down or refuse. A
kernelspec only some members have is offered too, and placed only on those members.

Only choices live here (no I/O): the service asks, then reports what it started.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Pool:
    name: str
    members: list[str]  # in configuration order
    # Round robin among members with equal counts: the index the next tie starts from.
    cursor: int = 0
    # Kernel starts under way on each member, counted as kernels while they run.
    starting: dict[str, int] = field(default_factory=dict)


def placement_order(members: list[str], candidates: list[str], counts: Mapping[str, int],
                    cursor: int) -> list[str]:
    """`candidates` (members able to take the kernel) in the order to try them: fewest
    kernels first; among equals, the first at or after `cursor` in `members`' order."""
    size = len(members)
    return sorted(candidates,
                  key=lambda m: (counts.get(m, 0), (members.index(m) - cursor) % size))


class Pools:
    """The pools of one front, from the configured remotes (remote name → pool or None)."""

    def __init__(self, pool_of: Mapping[str, str | None]) -> None:
        self._pool_of = {remote: pool for remote, pool in pool_of.items() if pool}
        self.pools: dict[str, Pool] = {}
        for remote, pool in self._pool_of.items():
            self.pools.setdefault(pool, Pool(pool, [])).members.append(remote)

    def pool_of(self, remote: str) -> str | None:
        return self._pool_of.get(remote)

    def offerer(self, remote: str) -> str:
        """Who offers `remote`'s kernelspecs: its pool, or the remote itself."""
        return self._pool_of.get(remote, remote)

    def order(self, pool_name: str, candidates: list[str], counts: Mapping[str, int]
              ) -> list[str]:
        """The members of `candidates` in the order to try for one new kernel. The round
        robin moves on at once, so that concurrent starts spread too."""
        pool = self.pools[pool_name]
        with_starting = {m: counts.get(m, 0) + pool.starting.get(m, 0) for m in candidates}
        ordered = placement_order(pool.members, candidates, with_starting, pool.cursor)
        if ordered:
            pool.cursor = (pool.members.index(ordered[0]) + 1) % len(pool.members)
        return ordered

    @contextmanager
    def starting(self, pool_name: str, member: str) -> Iterator[None]:
        """A kernel start on `member` is under way."""
        starting = self.pools[pool_name].starting
        starting[member] = starting.get(member, 0) + 1
        try:
            yield
        finally:
            starting[member] -= 1
            if not starting[member]:
                del starting[member]

    def summaries(self, health: list[dict[str, Any]], counts: Mapping[str, int]
                  ) -> list[dict[str, Any]]:
        """Each pool's members with their health (entries of the service's status) and the
        number of kernels the front knows of on each, for `/api/status`."""
        by_name = {entry["name"]: entry for entry in health}
        summaries = []
        for pool in self.pools.values():
            members = [{"name": m, "reachable": by_name.get(m, {}).get("reachable", False),
                        "healthy": by_name.get(m, {}).get("healthy", False),
                        "message": by_name.get(m, {}).get("message"),
                        "kernels": counts.get(m, 0)} for m in pool.members]
            summaries.append({
                "name": pool.name, "members": members,
                "reachable": sum(1 for m in members if m["reachable"]),
                "kernels": sum(m["kernels"] for m in members),
            })
        return summaries

