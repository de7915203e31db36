"""Each remote's health as the front's own requests find it, and the probes that take a sick
remote back.

The passive check of Nginx (`max_fails`, `proxy_next_upstream`) and Envoy (outlier detection):
a remote that refused a connection, dropped it, or did not answer in time is sick at once, with
no request of its own. One only slow to answer a listing (its bound passed, api/remotes.py) is
suspect: probed at once, sick only if the probe gets no answer either (a busy remote is not
taken out for being busy). While it is sick, listings over several remotes do not wait for it
(they answer from the others and the front's records) and placement skips it (api/remotes.py,
api/routing.py). A background probe asks its kind's cheap status path, bounded by
connect_timeout, less and less often; the first answer makes it healthy again, as does any
answer to any other request (a kernel's own requests still go to their remote).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
import structlog

from ..errors import RemoteKernelsError, unreachable

logger = structlog.get_logger()

# Seconds before the first probe of a remote that fell sick, doubled after each failed probe
# up to the last: a hung remote costs one connection per probe, a recovered one is back soon.
FIRST_PROBE_DELAY = 0.5
MAX_PROBE_DELAY = 10.0
# Answers that say a balancer or gateway in front of the remote cannot reach it: still sick.
_SICK_STATUSES = (502, 503, 504)


@dataclass
class Health:
    """One remote's health: healthy until a request finds it sick."""

    remote: str  # how the remote is named in errors and logs (no credentials)
    healthy: bool = True
    # When it fell sick (time.time()), and why.
    since: float | None = None
    reason: str | None = None
    # Slow to answer a listing: probed at once (see `suspect`).
    suspected: bool = False
    probes_failed: int = 0
    next_probe: float = 0.0  # time.monotonic()
    # Told when the remote falls sick (the probes wake up).
    on_sick: Callable[[], None] | None = field(default=None, repr=False)

    def failed(self, reason: str) -> None:
        """A request got no answer: sick from now on, if not already."""
        self.reason = reason
        if not self.healthy:
            return
        self.healthy, self.since, self.probes_failed = False, time.time(), 0
        self.next_probe = time.monotonic() + FIRST_PROBE_DELAY
        logger.warning("Remote marked unhealthy: listings and placement skip it until it "
                       "answers again", remote=self.remote, reason=reason)
        if self.on_sick is not None:
            self.on_sick()

    @property
    def avoided(self) -> bool:
        """Not to be waited for: sick, or suspect until its probe answers."""
        return not self.healthy or self.suspected

    def suspect(self, reason: str) -> None:
        """A listing gave up waiting for the remote: probe it now."""
        if self.avoided:
            return
        self.suspected, self.reason, self.next_probe = True, reason, time.monotonic()
        if self.on_sick is not None:
            self.on_sick()

    def answered(self, status: int) -> None:
        """A request got an answer with `status`."""
        if status in _SICK_STATUSES:
            return
        self.suspected = False
        if self.healthy:
            return
        logger.info("Remote answers again: healthy", remote=self.remote,
                    unhealthy_seconds=round(time.time() - (self.since or time.time()), 1))
        self.healthy, self.since, self.reason = True, None, None

    def probe_failed(self, reason: str) -> None:
        self.suspected = False
        self.failed(reason)
        self.probes_failed += 1
        delay = min(MAX_PROBE_DELAY, FIRST_PROBE_DELAY * 2 ** self.probes_failed)
        self.next_probe = time.monotonic() + delay

    def error(self) -> RemoteKernelsError:
        """What a request that skipped this sick remote answers (503: try again later)."""
        return unreachable(self.remote, f"{self.reason or 'no answer'} (not asked while "
                           "unhealthy; probed in the background)")


class Probes:
    """Probes the sick remotes in the background until each answers again."""

    def __init__(self, targets: Sequence[tuple[Health, Callable[[], Awaitable[None]]]]) -> None:
        """`targets`: each remote's health and its probe (raises RemoteKernelsError unless
        the remote answers; an answer is reported to the health by the request itself)."""
        self.targets = list(targets)
        self._wake: anyio.Event | None = None
        for health, _ in self.targets:
            health.on_sick = self._sick

    def _sick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        if not self.targets:
            return
        while True:
            self._wake = anyio.Event()
            sick = [(h, p) for h, p in self.targets if h.avoided]
            now = time.monotonic()
            due = [(h, p) for h, p in sick if h.next_probe <= now]
            if due:
                async with anyio.create_task_group() as tg:
                    for health, probe in due:
                        tg.start_soon(self._probe, health, probe)
                continue
            # Until the next probe is due, or a remote falls sick.
            wait = min((h.next_probe - now for h, _ in sick), default=None)
            with anyio.move_on_after(wait if wait is not None else float("inf")):
                await self._wake.wait()

    @staticmethod
    async def _probe(health: Health, probe: Callable[[], Awaitable[None]]) -> None:
        await confirm(health, probe)


async def confirm(health: Health, probe: Callable[[], Awaitable[None]]) -> bool:
    """Probe the remote once: whether it answers (if not, it is sick)."""
    try:
        await probe()
    except RemoteKernelsError as e:
        health.probe_failed(e.message)
        return False
    if health.avoided:  # an answer the health does not count as one (502 and so on)
        health.probe_failed("its probe got no answer")
        return False
    return True
