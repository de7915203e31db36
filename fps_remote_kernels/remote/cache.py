"""A short-lived value shared by concurrent callers (many browser tabs poll the same lists)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class _Flight(Generic[T]):
    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: T | None = None
        self.ok = False
        self.error: Exception | None = None


class CoalescingCache(Generic[T]):
    """Keeps a fetched value for `ttl` seconds; concurrent misses share one fetch.

    With `ttl == 0` nothing is kept, but identical concurrent requests still share one
    remote call. An error is shared by the callers of that fetch only, never cached.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._value: T | None = None
        self._expires = 0.0
        self._flight: _Flight[T] | None = None

    def fresh(self) -> T | None:
        """The kept value if it has not expired, without fetching."""
        if self._value is not None and time.monotonic() < self._expires:
            return self._value
        return None

    def invalidate(self) -> None:
        self._expires = 0.0

    async def get(self, fetch: Callable[[], Awaitable[T]]) -> T:
        while True:
            if self._value is not None and time.monotonic() < self._expires:
                return self._value
            flight = self._flight
            if flight is None:
                break
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            if flight.ok:
                return flight.value  # type: ignore[return-value]
            # The fetching caller was cancelled (e.g. its client left): fetch ourselves.
        flight = self._flight = _Flight()
        try:
            value = await fetch()
        except Exception as e:
            flight.error = e
            raise
        else:
            flight.value, flight.ok = value, True
            if self.ttl > 0:
                self._value, self._expires = value, time.monotonic() + self.ttl
        finally:
            self._flight = None
            flight.done.set()
        return value
