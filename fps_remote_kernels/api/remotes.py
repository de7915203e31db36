"""The remotes behind the kernels API, and asking them all at once.

The base of the kernels API's parts (kernelspecs.py, routing.py, sessions.py, service.py):
the remotes in their configured order, the store, the pools, and one call on every remote at
once where a remote's failure is its result, never the whole request's. Among several
remotes, one known sick is not asked (remote/health.py), and one that does not answer within
`listing_timeout` is sick from then on: one hung host never holds the others' answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from ..errors import RemoteKernelsError, timed_out
from ..remote.health import confirm as health_probe
from ..remote.kernels import RemoteKernels
from .placement import Pools
from .store import Store

T = TypeVar("T")


class Remotes:
    """What every part of the kernels API works on."""

    remotes: dict[str, RemoteKernels]
    order: list[str]
    store: Store
    patterns: dict[str, list[str]]
    pools: Pools
    # How long a call on all remotes waits for one of several (about connect_timeout).
    listing_timeout: float

    @property
    def single(self) -> RemoteKernels | None:
        return self.remotes[self.order[0]] if len(self.order) == 1 else None

    async def remote_sessions(self) -> RemoteKernels | None:
        """The remote that keeps sessions, if sessions live on the remote."""
        single = self.single
        if single is not None and (await single.kind()).remote_sessions:
            return single
        return None

    async def _on_each(self, call: Callable[[RemoteKernels], Awaitable[T]],
                       when_sick: Callable[[RemoteKernels], T | None] | None = None
                       ) -> dict[str, T | RemoteKernelsError]:
        """`call` on every remote at once; a remote's failure is its result, not ours. Among
        several remotes, a sick one's result is `when_sick`'s (e.g. a cached answer), or the
        error saying it is sick."""
        results: dict[str, T | RemoteKernelsError] = {}

        if len(self.order) == 1:
            # The common case: no task group and no deadline on every request; a lone
            # remote's own timeouts say best what it did.
            remote = self.remotes[self.order[0]]
            try:
                results[remote.name] = await call(remote)
            except RemoteKernelsError as e:
                results[remote.name] = e
            return results

        async def one(name: str) -> None:
            remote = self.remotes[name]
            kept = when_sick(remote) if when_sick is not None and \
                remote.client.health.avoided else None
            results[name] = kept if kept is not None else await self._bounded(remote, call)

        async with anyio.create_task_group() as tg:
            for name in self.order:
                tg.start_soon(one, name)
        return results

    async def _bounded(self, remote: RemoteKernels,
                       call: Callable[[RemoteKernels], Awaitable[T]],
                       timeout: float | None = None, confirm: bool = False
                       ) -> T | RemoteKernelsError:
        """`call` on `remote` for an answer about several remotes: not asked if it is known
        sick (or suspect); left out if it does not answer within `timeout`
        (listing_timeout), and probed then: in the background, or now with `confirm`
        (placement must know)."""
        health = remote.client.health
        if health.avoided:
            return health.error()
        limit = self.listing_timeout if timeout is None else timeout
        with anyio.move_on_after(limit):
            try:
                return await call(remote)
            except RemoteKernelsError as e:
                return e
        if confirm:
            await health_probe(health, remote.client.probe)
        else:
            health.suspect(f"no answer within {limit:g} s")
        return timed_out(remote.client.name, limit)

    @staticmethod
    def _raise_if_all_failed(results: dict[str, Any]) -> None:
        errors = [r for r in results.values() if isinstance(r, RemoteKernelsError)]
        if errors and len(errors) == len(results):
            raise errors[0]


async def gather(calls: list[Awaitable[T]]) -> list[T]:
    """Await all `calls` at once; the first RemoteKernelsError, if any, is raised after."""
    results: list[Any] = [None] * len(calls)
    errors: list[RemoteKernelsError] = []

    async def one(index: int, call: Awaitable[T]) -> None:
        try:
            results[index] = await call
        except RemoteKernelsError as e:
            errors.append(e)

    async with anyio.create_task_group() as tg:
        for index, call in enumerate(calls):
            tg.start_soon(one, index, call)
    if errors:
        raise errors[0]
    return results
