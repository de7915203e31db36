"""One sick pool member never makes the front sick, with real servers: a pool of two Jupyverse
remotes, `gpu2` reached through a fault proxy, so that it can hang (its process group
SIGSTOPped: connections are accepted and nothing is answered) or refuse connections."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import anyio
import httpx
import pytest

from tests.support.fault_proxy import BackgroundLoop, FaultProxy
from tests.support.harness import logged_in
from tests.support.servers import Server, front_server, remote_server

pytestmark = pytest.mark.anyio

CONNECT_TIMEOUT = 2.0
# What a listing or a start may take with one member sick: about connect_timeout, never
# request_timeout (30 s) times the retries.
BOUND = 2 * CONNECT_TIMEOUT + 2


@dataclass
class Pool:
    gpu1: Server
    gpu2: Server
    proxy2: FaultProxy
    front: Server
    # A session (never opened on a socket) whose kernel runs on each member: {member: id}.
    kernels: dict[str, str]


@pytest.fixture(scope="module")
def pool(loop: BackgroundLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    gpu1 = remote_server(tmp_path_factory.mktemp("gpu1")).start()
    gpu2 = remote_server(tmp_path_factory.mktemp("gpu2")).start()
    proxy2 = FaultProxy(gpu2.port, loop=loop, record_ws=False)
    front = front_server(tmp_path_factory.mktemp("front"), gpu1.url, gpu1.token, extra=[
        "--set", "remote_kernels.remote_name=gpu1",
        "--set", "remote_kernels.pool=gpu",
        "--set", f"remote_kernels.connect_timeout={CONNECT_TIMEOUT}",
        "--set", "remote_kernels.remotes=" + json.dumps([
            {"name": "gpu2", "url": proxy2.url, "pool": "gpu", "token_env": "GPU2_TOKEN"}]),
    ])
    front.env["GPU2_TOKEN"] = gpu2.token
    front.start()
    try:
        kernels = anyio.run(_one_session_per_member, front, gpu1)
        yield Pool(gpu1, gpu2, proxy2, front, kernels)
    finally:
        front.stop()
        proxy2.close()
        gpu2.stop()
        gpu1.stop()


async def _one_session_per_member(front: Server, gpu1: Server) -> dict[str, str]:
    async with logged_in(front) as api:
        on1 = await kernels_on(gpu1)
        kernels: dict[str, str] = {}
        for i in range(2):  # placement spreads them: one on each member
            response = await api.post("/api/sessions", json={
                "path": f"nb{i}.ipynb", "type": "notebook", "name": "",
                "kernel": {"name": "python3"}}, timeout=120)
            assert response.status_code == 201, response.text
            kernel_id = response.json()["kernel"]["id"]
            kernels["gpu1" if kernel_id in await kernels_on(gpu1) - on1 else "gpu2"] = kernel_id
        assert set(kernels) == {"gpu1", "gpu2"}, kernels
        return kernels


async def kernels_on(server: Server) -> set[str]:
    """The ids of the kernels a remote runs, asked directly."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        await client.get("/api/status", params={"token": server.token})
        response = await client.get("/api/kernels")
        assert response.status_code == 200, response.text
        return {k["id"] for k in response.json()}


@pytest.fixture
async def api(pool: Pool) -> AsyncIterator[httpx.AsyncClient]:
    async with logged_in(pool.front) as client:
        yield client


@pytest.fixture
def hung(pool: Pool) -> Iterator[None]:
    """gpu2 hangs: its processes stopped, its port still accepting."""
    assert pool.gpu2.process is not None
    os.killpg(pool.gpu2.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pool.gpu2.process.pid, signal.SIGCONT)


@pytest.fixture
def refused(pool: Pool) -> Iterator[None]:
    """gpu2 is down: connections to it are refused (and the open ones cut)."""
    pool.proxy2.down()
    try:
        yield
    finally:
        pool.proxy2.up()


async def timed(api: httpx.AsyncClient, method: str, path: str, **kwargs: object
                ) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    with anyio.fail_after(120):
        response = await api.request(method, path, timeout=120, **kwargs)  # type: ignore[arg-type]
    return response, time.perf_counter() - started


async def member_health(api: httpx.AsyncClient, member: str) -> dict[str, object]:
    remotes = (await api.get("/api/status")).json()["remotes"]
    return next(r for r in remotes if r["name"] == member)


async def test_listings_answer_within_the_bound_while_a_member_hangs(
        pool: Pool, api: httpx.AsyncClient, hung: None) -> None:
    """With gpu2 hung, GET /api/kernels and /api/sessions answer 200 within about the connect
    timeout, three times in a row, listing gpu2's kernel as unreachable and gpu1's as is."""
    for _ in range(3):
        kernels, seconds = await timed(api, "GET", "/api/kernels")
        assert kernels.status_code == 200, kernels.text
        assert seconds < BOUND, seconds
        listed = {k["id"]: k for k in kernels.json()}
        assert listed[pool.kernels["gpu2"]]["reachable"] is False
        assert "reachable" not in listed[pool.kernels["gpu1"]]

        sessions, seconds = await timed(api, "GET", "/api/sessions")
        assert sessions.status_code == 200, sessions.text
        assert seconds < BOUND, seconds
        by_kernel = {s["kernel"]["id"]: s["kernel"] for s in sessions.json()}
        assert set(pool.kernels.values()) <= set(by_kernel)
        # Jupyverse's session model keeps only jupyter_server's kernel fields.
        assert by_kernel[pool.kernels["gpu2"]]["execution_state"] == "unknown"
        assert isinstance(by_kernel[pool.kernels["gpu2"]]["last_activity"], str)


async def test_starts_go_to_the_healthy_member_within_the_bound_while_a_member_hangs(
        pool: Pool, api: httpx.AsyncClient) -> None:
    """gpu2 hangs while healthy as far as the front knows: three kernel starts in a row each
    land on gpu1 within about the connect timeout (the first finds it hung) plus the start
    itself: placement never waits for the sick member."""
    with anyio.fail_after(30):
        while not (await member_health(api, "gpu2"))["healthy"]:
            await anyio.sleep(0.2)
    assert pool.gpu2.process is not None
    os.killpg(pool.gpu2.process.pid, signal.SIGSTOP)
    try:
        started = await three_starts(api)
    finally:
        os.killpg(pool.gpu2.process.pid, signal.SIGCONT)
    try:
        assert set(started) <= await kernels_on(pool.gpu1)
    finally:
        for kernel_id in started:
            await api.delete(f"/api/kernels/{kernel_id}")


async def three_starts(api: httpx.AsyncClient) -> list[str]:
    started = []
    for _ in range(3):
        response, seconds = await timed(api, "POST", "/api/kernels", json={"name": "python3"})
        assert response.status_code == 201, response.text
        assert seconds < BOUND + 10, seconds  # a kernel start takes seconds on its own
        started.append(response.json()["id"])
    return started


async def test_a_hung_member_is_shown_unhealthy_in_status_and_metrics(
        api: httpx.AsyncClient, hung: None) -> None:
    """Once a listing found gpu2 hung (and the probe that follows got no answer either),
    /api/status says `healthy: false` since when and /metrics gauges it 0, gpu1 1."""
    await timed(api, "GET", "/api/kernels")
    with anyio.fail_after(BOUND):
        while (await member_health(api, "gpu2"))["healthy"]:
            await anyio.sleep(0.1)
    status, seconds = await timed(api, "GET", "/api/status")
    assert status.status_code == 200 and seconds < BOUND, seconds
    members = {m["name"]: m for m in status.json()["pools"][0]["members"]}
    assert members["gpu2"]["healthy"] is False and members["gpu1"]["healthy"] is True
    gpu2 = {r["name"]: r for r in status.json()["remotes"]}["gpu2"]
    assert gpu2["healthy"] is False and gpu2["reachable"] is False
    assert isinstance(gpu2["unhealthy_since"], str)
    metrics = (await api.get("/metrics")).text
    assert 'remote_kernels_remote_healthy{remote="gpu2"} 0.0' in metrics
    assert 'remote_kernels_remote_healthy{remote="gpu1"} 1.0' in metrics


async def test_a_hung_member_is_taken_back_after_sigcont(
        pool: Pool, api: httpx.AsyncClient) -> None:
    """A member found hung is probed in the background: after SIGCONT it is healthy again
    without any request of ours to it, and its kernel is listed reachable."""
    assert pool.gpu2.process is not None
    os.killpg(pool.gpu2.process.pid, signal.SIGSTOP)
    try:
        await timed(api, "GET", "/api/kernels")
        with anyio.fail_after(BOUND):
            while (await member_health(api, "gpu2"))["healthy"]:
                await anyio.sleep(0.1)
    finally:
        os.killpg(pool.gpu2.process.pid, signal.SIGCONT)
    with anyio.fail_after(30):
        while not (await member_health(api, "gpu2"))["healthy"]:
            await anyio.sleep(0.2)
    listed = {k["id"]: k for k in (await api.get("/api/kernels")).json()}
    assert "reachable" not in listed[pool.kernels["gpu2"]]


async def test_a_refused_member_answers_listings_at_once_with_a_last_activity(
        pool: Pool, api: httpx.AsyncClient, refused: None) -> None:
    """With gpu2 refusing connections, GET /api/sessions answers 200 at once (never 500),
    the session whose kernel never had a socket open carrying a `last_activity` time, and
    GET /api/kernels too."""
    for _ in range(3):
        sessions, seconds = await timed(api, "GET", "/api/sessions")
        assert sessions.status_code == 200, sessions.text
        assert seconds < CONNECT_TIMEOUT, seconds
        kernel = {s["kernel"]["id"]: s["kernel"] for s in sessions.json()}[pool.kernels["gpu2"]]
        assert kernel["execution_state"] == "unknown"
        assert isinstance(kernel["last_activity"], str) and kernel["last_activity"]
        kernels, seconds = await timed(api, "GET", "/api/kernels")
        assert kernels.status_code == 200, kernels.text
        assert seconds < CONNECT_TIMEOUT, seconds


async def test_starts_go_to_the_healthy_member_while_a_member_refuses(
        pool: Pool, api: httpx.AsyncClient, refused: None) -> None:
    """With gpu2 refusing connections, a kernel start lands on gpu1, and gpu2 is shown
    unhealthy."""
    response, seconds = await timed(api, "POST", "/api/kernels", json={"name": "python3"})
    assert response.status_code == 201, response.text
    try:
        assert seconds < BOUND + 10, seconds
        assert response.json()["id"] in await kernels_on(pool.gpu1)
        assert (await member_health(api, "gpu2"))["healthy"] is False
    finally:
        await api.delete(f"/api/kernels/{response.json()['id']}")
