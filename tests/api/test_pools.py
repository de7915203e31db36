"""Pools of remotes with real servers: two Jupyverse remotes in pool `gpu` (each reached
through a fault proxy, so that a member can vanish from the network while its kernels keep
running) and a jupyter_server alone (`cpu`), behind one front."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import anyio
import httpx
import pytest

from tests.support.fault_proxy import BackgroundLoop, FaultProxy
from tests.support.harness import logged_in
from tests.support.servers import Server, front_server, jupyter_server_remote, remote_server

pytestmark = pytest.mark.anyio


@dataclass
class Servers:
    gpu1: Server
    gpu2: Server
    cpu: Server
    proxy1: FaultProxy
    proxy2: FaultProxy
    front: Server


@pytest.fixture(scope="module")
def servers(loop: BackgroundLoop, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Servers]:
    gpu1 = remote_server(tmp_path_factory.mktemp("gpu1")).start()
    gpu2 = remote_server(tmp_path_factory.mktemp("gpu2")).start()
    cpu = jupyter_server_remote(tmp_path_factory.mktemp("cpu")).start()
    proxy1 = FaultProxy(gpu1.port, loop=loop, record_ws=False)
    proxy2 = FaultProxy(gpu2.port, loop=loop, record_ws=False)
    front = front_server(tmp_path_factory.mktemp("front"), proxy1.url, gpu1.token, extra=[
        "--set", "remote_kernels.remote_name=gpu1",
        "--set", "remote_kernels.pool=gpu",
        # Short timeouts: a member that vanished shows within a second.
        "--set", "remote_kernels.connect_timeout=2",
        # Members stay in the kernelspecs for a minute after they vanish: placement picks
        # them and must skip them.
        "--set", "remote_kernels.kernelspecs_cache_ttl=60",
        "--set", "remote_kernels.remotes=" + json.dumps([
            {"name": "gpu2", "url": proxy2.url, "pool": "gpu", "token_env": "GPU2_TOKEN"},
            {"name": "cpu", "url": cpu.url, "token_env": "CPU_TOKEN"}]),
    ])
    front.env.update({"GPU2_TOKEN": gpu2.token, "CPU_TOKEN": cpu.token})
    front.start()
    yield Servers(gpu1, gpu2, cpu, proxy1, proxy2, front)
    front.stop()
    for proxy in (proxy1, proxy2):
        proxy.close()
    for server in (cpu, gpu2, gpu1):
        server.stop()


@pytest.fixture
async def api(servers: Servers) -> AsyncIterator[httpx.AsyncClient]:
    async with logged_in(servers.front) as client:
        yield client


async def kernels_on(server: Server) -> set[str]:
    """The ids of the kernels a remote runs, asked directly."""
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers,
                                 timeout=30) as client:
        if server.kind == "jupyverse":
            await client.get("/api/status", params={"token": server.token})
        response = await client.get("/api/kernels")
        assert response.status_code == 200, response.text
        return {k["id"] for k in response.json()}


async def start_kernels(api: httpx.AsyncClient, count: int, name: str = "python3"
                        ) -> list[str]:
    """Start `count` kernels at once through the front."""
    ids: list[str] = []

    async def one() -> None:
        response = await api.post("/api/kernels", json={"name": name}, timeout=180)
        assert response.status_code == 201, response.text
        assert response.json()["name"] == name.removeprefix("gpu2:")
        ids.append(response.json()["id"])

    with anyio.fail_after(240):
        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(one)
    return ids


@pytest.fixture(scope="module")
async def ten(servers: Servers) -> list[str]:
    """Ten kernels started at once through the front on the pool's kernelspec."""
    async with logged_in(servers.front) as client:
        return await start_kernels(client, 10)


async def test_a_pool_offers_its_kernelspecs_once(api: httpx.AsyncClient) -> None:
    """The members' shared spec is offered once under its plain name, its display name says
    the pool; the lone remote's clashing spec keeps its prefix."""
    specs = (await api.get("/api/kernelspecs")).json()
    assert set(specs["kernelspecs"]) == {"python3", "cpu:python3"}
    assert specs["default"] == "python3"
    assert specs["kernelspecs"]["python3"]["spec"]["display_name"].endswith("(gpu)")
    assert specs["kernelspecs"]["cpu:python3"]["spec"]["display_name"].endswith("(cpu)")


async def test_a_member_can_be_named(servers: Servers, api: httpx.AsyncClient) -> None:
    """`member:spec` starts the pool's spec on that member only."""
    (kernel_id,) = await start_kernels(api, 1, "gpu2:python3")
    try:
        assert kernel_id in await kernels_on(servers.gpu2)
    finally:
        assert (await api.delete(f"/api/kernels/{kernel_id}")).status_code == 204


async def test_ten_kernels_spread_five_and_five(servers: Servers, api: httpx.AsyncClient,
                                                ten: list[str]) -> None:
    """Ten kernels started at once on the pool's spec land five on each member (none on
    the lone remote), and /api/status counts them per member."""
    on1, on2 = await kernels_on(servers.gpu1), await kernels_on(servers.gpu2)
    assert len(set(ten) & on1) == 5 and len(set(ten) & on2) == 5
    assert not set(ten) & await kernels_on(servers.cpu)
    status = (await api.get("/api/status")).json()
    (pool,) = status["pools"]
    assert pool["name"] == "gpu" and pool["reachable"] == 2
    assert {m["name"]: m["kernels"] for m in pool["members"]} == {"gpu1": 5, "gpu2": 5}
    assert {r["name"]: r["pool"] for r in status["remotes"]} == {
        "gpu1": "gpu", "gpu2": "gpu", "cpu": None}
    listed = {k["id"]: k for k in (await api.get("/api/kernels")).json()}
    assert set(ten) <= set(listed)
    assert all(listed[k]["name"] == "python3" for k in ten)


async def test_a_member_down_is_skipped_and_its_kernels_stay_listed(
        servers: Servers, api: httpx.AsyncClient, ten: list[str]) -> None:
    """With one member unreachable, new kernels go to the other (the placement's first
    choice, the vanished member, is skipped as unhealthy); the lost member's kernels are
    listed with state `unknown` and `reachable: false`, GET on one answers 503, a deleted
    one goes at once; back, its kernels are reachable again and the deleted one is shut
    down on it."""
    on2 = set(ten) & await kernels_on(servers.gpu2)
    spare = sorted(on2)[-1]
    assert (await api.delete(f"/api/kernels/{spare}")).status_code == 204
    on2.discard(spare)  # gpu2 has the fewest kernels now: placement chooses it first
    servers.proxy2.down()
    try:
        new = await start_kernels(api, 2)
        assert set(new) <= await kernels_on(servers.gpu1)

        listed = {k["id"]: k for k in (await api.get("/api/kernels")).json()}
        assert (set(ten) - {spare}) | set(new) <= set(listed)
        for kernel_id in on2:
            assert listed[kernel_id]["execution_state"] == "unknown"
            assert listed[kernel_id]["reachable"] is False
            assert listed[kernel_id]["name"] == "python3"
        assert not any("reachable" in listed[k] for k in set(listed) - on2)
        lost = sorted(on2)[0]
        assert (await api.get(f"/api/kernels/{lost}")).status_code == 503

        status = (await api.get("/api/status")).json()
        members = {m["name"]: m for m in status["pools"][0]["members"]}
        assert members["gpu2"]["reachable"] is False and members["gpu2"]["kernels"] == 4
        assert members["gpu2"]["healthy"] is False  # found refusing: placement skips it
        assert members["gpu1"]["reachable"] is True and members["gpu1"]["kernels"] == 7

        deleted = sorted(on2)[1]
        assert (await api.delete(f"/api/kernels/{deleted}")).status_code == 204
        assert deleted not in {k["id"] for k in (await api.get("/api/kernels")).json()}
        assert (await api.get(f"/api/kernels/{deleted}")).status_code == 404
    finally:
        servers.proxy2.up()

    with anyio.fail_after(30):
        while True:
            listed = {k["id"]: k for k in (await api.get("/api/kernels")).json()}
            if not any("reachable" in k for k in listed.values()):
                break
            await anyio.sleep(0.2)
    assert on2 - {deleted} <= set(listed)
    assert deleted not in listed
    assert (await api.get(f"/api/kernels/{lost}")).status_code == 200
    assert deleted not in await kernels_on(servers.gpu2)  # shut down once it was back


async def test_the_whole_pool_down_answers_503_naming_it(
        servers: Servers, api: httpx.AsyncClient) -> None:
    """With every member unreachable, a kernel for the pool's spec is refused with 503
    naming the pool; the lone remote still starts its own."""
    servers.proxy1.down()
    servers.proxy2.down()
    try:
        refused = await api.post("/api/kernels", json={"name": "python3"}, timeout=60)
        assert refused.status_code == 503, refused.text
        assert "No member of pool gpu could start" in refused.json()["message"]
        assert (await start_kernels(api, 1, "cpu:python3"))
    finally:
        servers.proxy1.up()
        servers.proxy2.up()
