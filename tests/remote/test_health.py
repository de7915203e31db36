"""A remote's health record and its background probes, in process (the real-server cases are
in tests/api/test_health.py)."""

from __future__ import annotations

import anyio
import pytest

from fps_remote_kernels.errors import RemoteKernelsError, unreachable
from fps_remote_kernels.remote.health import Health, Probes, confirm

pytestmark = [pytest.mark.fast, pytest.mark.anyio]


def test_a_failed_request_makes_a_remote_sick_at_once_and_an_answer_heals_it() -> None:
    """One failure is enough; an answer (even a 404) heals; a balancer's 502 does not."""
    health = Health("http://gpu:8002/")
    health.failed("ConnectError on GET api/kernels")
    assert not health.healthy and health.since is not None
    assert health.error().status == 503 and "ConnectError" in health.error().message
    health.answered(502)
    assert not health.healthy
    health.answered(404)
    assert health.healthy and health.since is None


def test_a_suspect_remote_is_avoided_until_its_probe_answers() -> None:
    """A remote slow to list is avoided (not waited for) but not sick; an answer clears it."""
    health = Health("http://gpu:8002/")
    health.suspect("no answer within 2 s")
    assert health.healthy and health.avoided
    health.answered(200)
    assert not health.avoided


async def test_a_probe_without_an_answer_makes_a_suspect_sick_with_backoff() -> None:
    """`confirm` with a probe that gets no answer: sick, the next probe later each time."""
    health = Health("http://gpu:8002/")
    health.suspect("no answer within 2 s")

    async def no_answer() -> None:
        raise unreachable(health.remote, "connection timed out")

    assert not await confirm(health, no_answer)
    assert not health.healthy and not health.suspected
    first = health.next_probe
    assert not await confirm(health, no_answer)
    assert health.next_probe > first and health.probes_failed == 2


async def test_probes_take_a_sick_remote_back_when_it_answers() -> None:
    """The background probes ask a sick remote until it answers, then stop asking."""
    health = Health("http://gpu:8002/")
    asked = 0

    async def probe() -> None:
        nonlocal asked
        asked += 1
        if asked < 2:
            raise RemoteKernelsError(503, "down")
        health.answered(200)  # as the client's request reports it

    probes = Probes([(health, probe)])
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(probes.run)
            health.failed("ConnectError")
            while not health.healthy:
                await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    assert asked == 2
