"""The kernels API over one or several remotes, in parts: the remotes and calls on all of
them (remotes.py), merged kernelspecs (kernelspecs.py), kernels routed to their remote and
placed in pools (routing.py), sessions on the remote or kept by the front (sessions.py), and
here, the remotes' health.
"""

from __future__ import annotations

from typing import Any

from ..activity import format_time
from ..errors import RemoteKernelsError
from ..remote.kernels import RemoteKernels
from . import vanished
from .placement import Pools
from .sessions import Sessions
from .store import Store


class KernelService(Sessions):
    """The kernels API over one or several remotes: kernelspecs (kernelspecs.py), kernels
    and their routing (routing.py), sessions (sessions.py), and the remotes' health."""

    def __init__(self, remotes: list[RemoteKernels], store: Store, env_allowlist: list[str],
                 patterns: dict[str, list[str]], pools: Pools | None = None,
                 reconcile_timeout: float = 5.0, listing_timeout: float = 5.0) -> None:
        self.remotes = {remote.name: remote for remote in remotes}
        self.order = [remote.name for remote in remotes]
        self.store = store
        self.env_allowlist = env_allowlist
        self.patterns = patterns
        self.pools = pools or Pools({})
        # How long a start waits for a pool member's listing before placing (see _reconcile).
        self.reconcile_timeout = reconcile_timeout
        # How long a listing over several remotes waits for one (see Remotes._bounded).
        self.listing_timeout = listing_timeout
        self.vanished = vanished.VanishedKernels()
        # When the front learnt of each recent kernel (time.monotonic()).
        self._learnt: dict[str, float] = {}

    async def status(self) -> list[dict[str, Any]]:
        # The pools' kernel counts come from the store: in line with what members run now.
        pooled = [name for name in self.order if self.pools.pool_of(name) is not None]
        if pooled:
            await self._reconcile(pooled)
        results = await self._on_each(lambda remote: remote.status())
        health = []
        for name in self.order:
            remote = self.remotes[name]
            result = results.get(name)
            record = remote.client.health
            entry: dict[str, Any] = {"name": name, "url": remote.client.name,
                                     "kind": remote.kind_name, "reachable": True,
                                     # Sick: skipped by listings and placement (health.py).
                                     "healthy": record.healthy,
                                     "unhealthy_since": None if record.since is None
                                     else format_time(record.since),
                                     "message": None, "kernels": None,
                                     "pool": self.pools.pool_of(name),
                                     # REST may answer where the kernel socket cannot open.
                                     "kernel_socket_error": remote.client.kernel_socket_problem}
            if isinstance(result, RemoteKernelsError):
                entry["reachable"] = False
                entry["message"] = result.message
            elif isinstance(result, dict) and isinstance(result.get("kernels"), int):
                entry["kernels"] = result["kernels"]
            health.append(entry)
        return health

    def pool_status(self, health: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each pool's members, their health (from `status()`) and kernel counts."""
        return self.pools.summaries(health, self.store.kernel_counts())
