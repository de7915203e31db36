"""The remotes behind the kernels API, and asking them all at once.

The base of the kernels API's parts (kernelspecs.py, routing.py, sessions.py, service.py):
the remotes in their configured order, the store, the pools, and one call on every remote at
once where a remote's failure is its result, never the whole request's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from ..errors import RemoteKernelsError
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

    @property
    def single(self) -> RemoteKernels | None:
        return self.remotes[self.order[0]] if len(self.order) == 1 else None

    async def remote_sessions(self) -> RemoteKernels | None:
        """The remote that keeps sessions, if sessions live on the remote."""
        single = self.single
        if single is not None and (await single.kind()).remote_sessions:
            return single
        return None

    async def _on_each(self, call: Callable[[RemoteKernels], Awaitable[T]]
                       ) -> dict[str, T | RemoteKernelsError]:
        """`call` on every remote at once; a remote's failure is its result, not ours."""
        results: dict[str, T | RemoteKernelsError] = {}

        async def one(name: str) -> None:
            try:
                results[name] = await call(self.remotes[name])
            except RemoteKernelsError as e:
                results[name] = e

        if len(self.order) == 1:
            await one(self.order[0])  # the common case: no task group on every request
            return results
        async with anyio.create_task_group() as tg:
            for name in self.order:
                tg.start_soon(one, name)
        return results

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
