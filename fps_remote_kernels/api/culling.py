"""Idle culling: the front shuts down the kernels it started once they have been idle too long.

jupyter_server culls its own kernels (MappingKernelManager: `cull_idle_timeout`,
`cull_interval`, `cull_connected`, `cull_busy`); Jupyverse culls nothing, and no remote knows
of the front's sockets. So the front applies the same rules, with the same option names and
meaning, to the kernels it started (the store's `started_by_front`), on any kind of remote,
from the kernel models it answers: the remote's, merged with the activity the front saw
(activity.py). As in jupyter_server: a kernel is culled when it has had no activity for longer
than the timeout, unless it is busy (and `cull_busy` is off) or has connections (and
`cull_connected` is off); a dead kernel is culled at once. Its sessions go with it: the front
forgets the ones it keeps; Jupyverse and jupyter_server drop theirs when the kernel is deleted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from ..activity import parse_time
from ..errors import RemoteKernelsError
from .service import KernelService

logger = structlog.get_logger()

# Kernels checked at once: each check is one request to its remote.
_CONCURRENT_CHECKS = 10


@dataclass(frozen=True)
class CullPolicy:
    idle_timeout: float  # seconds; 0: culling is off
    interval: float
    connected: bool
    busy: bool


def cull_reason(model: dict[str, Any], now: float, policy: CullPolicy) -> str | None:
    """Why the kernel of `model` is to be culled at time `now` (seconds since the epoch),
    or None to keep it (jupyter_server's `cull_kernel_if_idle`)."""
    state = model.get("execution_state")
    if state == "dead":
        return "dead"
    last_activity = parse_time(model.get("last_activity"))
    if last_activity is None:
        return None  # nothing to judge by (jupyter_server: no last_activity, no culling)
    idle = now - last_activity
    if idle <= policy.idle_timeout:
        return None
    if state == "busy" and not policy.busy:
        return None
    connections = model.get("connections")
    if isinstance(connections, int) and connections > 0 and not policy.connected:
        return None
    return f"inactive for {int(idle)} s"


class Culler:
    """Checks the kernels the front started every `interval` seconds and culls the idle ones."""

    def __init__(self, service: KernelService, policy: CullPolicy,
                 culled: Callable[[str, str], None] | None = None) -> None:
        self.service = service
        self.policy = policy
        # Told each culled kernel's id and remote (the routes close the sockets open to it,
        # the metrics count it).
        self.culled = culled

    async def run(self) -> None:
        logger.info("Culling idle kernels the front started", cull_idle_timeout=self.policy
                    .idle_timeout, cull_interval=self.policy.interval,
                    cull_connected=self.policy.connected, cull_busy=self.policy.busy)
        while True:
            await anyio.sleep(self.policy.interval)
            try:
                await self.cull_once()
            except Exception:  # a failed round must not end culling for good
                logger.exception("Culling round failed")

    async def cull_once(self) -> list[str]:
        """One round: the ids of the kernels culled."""
        culled: list[str] = []
        limiter = anyio.CapacityLimiter(_CONCURRENT_CHECKS)

        async def check(kernel_id: str, remote: str) -> None:
            async with limiter:
                if await self._cull_if_idle(kernel_id, remote):
                    culled.append(kernel_id)

        async with anyio.create_task_group() as tg:
            for kernel_id, remote in self.service.store.kernels_started_by_front():
                tg.start_soon(check, kernel_id, remote)
        return culled

    async def _cull_if_idle(self, kernel_id: str, remote: str) -> bool:
        try:
            model = await self.service.kernel(kernel_id)
        except RemoteKernelsError:
            return False  # gone (forgotten by the service) or unreachable: nothing to cull
        reason = cull_reason(model, time.time(), self.policy)
        if reason is None:
            return False
        # jupyter_server logs culling as a warning too.
        logger.warning("Culling kernel", kernel_id=kernel_id, remote=remote,
                       kernel_name=model.get("name"), culled_by="remote_kernels culler",
                       reason=reason, execution_state=model.get("execution_state"),
                       connections=model.get("connections"),
                       last_activity=model.get("last_activity"),
                       cull_idle_timeout=self.policy.idle_timeout)
        try:
            await self.service.shutdown_kernel(kernel_id)
        except RemoteKernelsError as e:
            if e.status != 404:
                logger.warning("Could not cull kernel", kernel_id=kernel_id, remote=remote,
                               status=e.status, message=e.message)
                return False
            self.service.store.forget_kernel(kernel_id)
        if self.culled is not None:
            self.culled(kernel_id, remote)
        return True
