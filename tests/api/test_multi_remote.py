"""Several remotes of different kinds behind one front: merged kernelspecs, routing by
kernelspec and kernel id, one remote down, and state that survives a restart of the front."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from tests.support.kernel_client import KernelConnection
from tests.support.servers import (
    Server,
    enterprise_gateway_remote,
    front_server,
    kernel_gateway_remote,
    remote_server,
)

pytestmark = pytest.mark.anyio


def start_front(workdir: Path, local: Server, gpu: Server, extra: list[str] | None = None
                ) -> Server:
    """A front with the Jupyverse remote inline (named `local`) and the gateway as `gpu`."""
    front = front_server(workdir, local.url, local.token, extra=[
        "--set", "remote_kernels.remote_name=local",
        "--set", "remote_kernels.remotes=" + json.dumps(
            [{"name": "gpu", "url": gpu.url, "token_env": "GPU_REMOTE_TOKEN"}]),
        *(extra or []),
    ])
    front.env["GPU_REMOTE_TOKEN"] = gpu.token
    return front.start()


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[Server, Server, Server]]:
    local = remote_server(tmp_path / "local").start()
    gpu = kernel_gateway_remote(tmp_path / "gpu").start()
    front = start_front(tmp_path / "front", local, gpu)
    yield local, gpu, front
    front.stop()
    gpu.stop()
    local.stop()


@asynccontextmanager
async def logged_in(front: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=front.url, timeout=60) as client:
        await client.get("/api/status", params={"token": front.token})
        yield client


async def on_gateway(gpu: Server, kernel_id: str) -> bool:
    async with httpx.AsyncClient(base_url=gpu.url, headers=gpu.headers, timeout=30) as client:
        return (await client.get(f"/api/kernels/{kernel_id}")).status_code == 200


async def new_session(client: httpx.AsyncClient, path: str, kernel: str) -> dict:
    response = await client.post("/api/sessions", json={
        "path": path, "type": "notebook", "name": path, "kernel": {"name": kernel}})
    assert response.status_code == 201, response.text
    return response.json()


async def test_two_remotes_route_by_kernelspec_and_survive_one_going_down(
    servers: tuple[Server, Server, Server], tmp_path: Path
) -> None:
    """Specs are merged (clash → `gpu:python3`, display names say where); sessions land on the
    remote of their spec; with the gateway stopped, the Jupyverse remote keeps working and the
    gateway's session stays listed with its kernel unreachable."""
    local, gpu, front = servers
    async with logged_in(front) as client:
        specs = (await client.get("/api/kernelspecs")).json()
        assert set(specs["kernelspecs"]) == {"python3", "gpu:python3"}
        assert specs["default"] == "python3"
        gpu_spec = specs["kernelspecs"]["gpu:python3"]
        assert gpu_spec["spec"]["display_name"].endswith("(gpu)")
        assert specs["kernelspecs"]["python3"]["spec"]["display_name"].endswith("(local)")
        assert (await client.get("/api/kernelspecs/gpu:python3")).status_code == 200

        on_local = await new_session(client, "local.ipynb", "python3")
        on_gpu = await new_session(client, "gpu.ipynb", "gpu:python3")
        assert on_gpu["kernel"]["name"] == "gpu:python3"
        assert await on_gateway(gpu, on_gpu["kernel"]["id"])
        assert not await on_gateway(gpu, on_local["kernel"]["id"])
        listed = {k["id"]: k["name"] for k in (await client.get("/api/kernels")).json()}
        assert listed == {on_local["kernel"]["id"]: "python3",
                          on_gpu["kernel"]["id"]: "gpu:python3"}

        cookie = f"fastapiusersauth={client.cookies['fastapiusersauth']}"
        for session in (on_local, on_gpu):
            conn = await KernelConnection.open(
                f"ws://127.0.0.1:{front.port}/api/kernels/{session['kernel']['id']}/channels",
                cookie=cookie)
            try:
                assert (await conn.execute("print(6*7)")).stdout == "42\n"
            finally:
                await conn.close()

        gpu.stop()
        # Kernelspecs are cached for kernelspecs_cache_ttl (2 s): the dead remote's specs go
        # when the cache next asks it.
        with anyio.fail_after(10):
            while set((await client.get("/api/kernelspecs")).json()["kernelspecs"]) != {
                    "python3"}:
                await anyio.sleep(0.2)
        # The gateway's session stays listed, its kernel's state unknown (JupyterLab drops
        # the connection of a session missing from the list).
        sessions = {s["id"]: s for s in (await client.get("/api/sessions")).json()}
        assert list(sessions) == [on_local["id"], on_gpu["id"]]
        assert sessions[on_gpu["id"]]["kernel"]["execution_state"] == "unknown"
        assert sessions[on_gpu["id"]]["kernel"]["name"] == "gpu:python3"
        assert sessions[on_local["id"]]["kernel"]["execution_state"] != "unknown"
        listed = {k["id"]: k for k in (await client.get("/api/kernels")).json()}
        assert listed[on_gpu["kernel"]["id"]]["reachable"] is False
        assert listed[on_gpu["kernel"]["id"]]["name"] == "gpu:python3"
        status = (await client.get("/api/status")).json()
        health = {r["name"]: r["reachable"] for r in status["remotes"]}
        assert health == {"local": True, "gpu": False}
        gone = await client.get(f"/api/kernels/{on_gpu['kernel']['id']}")
        assert gone.status_code == 503
        assert (await client.get(f"/api/kernels/{on_local['kernel']['id']}")).status_code == 200
        assert (await new_session(client, "later.ipynb", "python3"))["kernel"]["id"]


async def test_sessions_and_kernels_survive_a_front_restart(
    servers: tuple[Server, Server, Server], tmp_path: Path
) -> None:
    """The front keeps its sessions in SQLite: after a restart they are listed again and their
    kernels (left running on the remotes) are reachable; culled kernels drop their sessions."""
    local, gpu, front = servers
    async with logged_in(front) as client:
        kept = await new_session(client, "kept.ipynb", "gpu:python3")
        culled = await new_session(client, "culled.ipynb", "gpu:python3")
    front.stop()
    async with httpx.AsyncClient(base_url=gpu.url, headers=gpu.headers) as direct:
        # The kernel disappears on the remote while the front is away (culled, crashed).
        assert (await direct.delete(f"/api/kernels/{culled['kernel']['id']}")).status_code == 204
        assert await on_gateway(gpu, kept["kernel"]["id"])  # the front left it running
    front.start()
    async with logged_in(front) as client:
        sessions = {s["id"]: s for s in (await client.get("/api/sessions")).json()}
        assert list(sessions) == [kept["id"]]
        assert sessions[kept["id"]]["kernel"]["id"] == kept["kernel"]["id"]
        assert (await client.get(f"/api/sessions/{culled['id']}")).status_code == 404
        cookie = f"fastapiusersauth={client.cookies['fastapiusersauth']}"
        conn = await KernelConnection.open(
            f"ws://127.0.0.1:{front.port}/api/kernels/{kept['kernel']['id']}/channels",
            cookie=cookie)
        try:
            assert (await conn.execute("print(6*7)")).stdout == "42\n"
        finally:
            await conn.close()


async def test_kernel_env_carries_username_and_allowlist_only(tmp_path: Path) -> None:
    """On kernel start the remote gets KERNEL_USERNAME, allowlisted front variables and the
    request's variables, nothing else of the front's environment; bad values are 400."""
    gpu = kernel_gateway_remote(tmp_path / "gpu").start()
    front = front_server(tmp_path / "front", gpu.url, gpu.token, extra=[
        "--set", 'remote_kernels.env_allowlist=["KERNEL_NAMESPACE"]',
        "--set", "remote_kernels.kernel_username=alice",
    ])
    front.env.update({"KERNEL_NAMESPACE": "team-a", "KERNEL_SECRET": "front-only"})
    front.start()
    try:
        async with logged_in(front) as client:
            created = await client.post("/api/kernels", json={
                "name": "python3", "env": {"KERNEL_FROM_REQUEST": "yes"}})
            assert created.status_code == 201, created.text
            cookie = f"fastapiusersauth={client.cookies['fastapiusersauth']}"
            conn = await KernelConnection.open(
                f"ws://127.0.0.1:{front.port}/api/kernels/{created.json()['id']}/channels",
                cookie=cookie)
            try:
                execution = await conn.execute(
                    "import os, json; print(json.dumps({k: v for k, v in os.environ.items()"
                    " if k.startswith('KERNEL_')}))")
            finally:
                await conn.close()
            seen = json.loads(execution.stdout)
            assert seen["KERNEL_USERNAME"] == "alice"
            assert seen["KERNEL_NAMESPACE"] == "team-a"
            assert seen["KERNEL_FROM_REQUEST"] == "yes"
            assert "KERNEL_SECRET" not in seen
            for value in ("$(id)", "a`b", "a\nb", "a\rb", "a\0b", "x" * 4097):
                refused = await client.post("/api/kernels", json={
                    "name": "python3", "env": {"KERNEL_X": value}})
                assert refused.status_code == 400, value
            assert (await client.post("/api/kernels", json={
                "name": "python3", "env": {"KERNEL_X": 3}})).status_code == 400
    finally:
        front.stop()
        gpu.stop()


async def test_front_shuts_down_its_kernels_on_stop_when_asked(tmp_path: Path) -> None:
    """With shutdown_kernels_on_stop, stopping the front shuts down the kernels it started
    (and only those); by default they keep running (see the restart test)."""
    gpu = kernel_gateway_remote(tmp_path / "gpu").start()
    # Jupyverse gives modules 1 s to stop unless told otherwise (--stop-timeout).
    front = front_server(tmp_path / "front", gpu.url, gpu.token, extra=[
        "--set", "remote_kernels.shutdown_kernels_on_stop=true", "--stop-timeout", "15"]).start()
    try:
        async with httpx.AsyncClient(base_url=gpu.url, headers=gpu.headers) as direct:
            foreign = (await direct.post("/api/kernels", json={"name": "python3"})).json()["id"]
        async with logged_in(front) as client:
            created = await client.post("/api/kernels", json={"name": "python3"})
            assert created.status_code == 201
        front.stop()
        assert not await on_gateway(gpu, created.json()["id"])
        assert await on_gateway(gpu, foreign)
    finally:
        front.stop()
        gpu.stop()


async def test_enterprise_gateway_is_told_the_launch_timeout_and_the_user(tmp_path: Path
                                                                          ) -> None:
    """Enterprise Gateway gets KERNEL_LAUNCH_TIMEOUT = kernel_start_timeout and the
    KERNEL_USERNAME of the front, so it gives up when the front does."""
    gateway = enterprise_gateway_remote(tmp_path / "eg").start()
    front = front_server(tmp_path / "front", gateway.url, gateway.token, extra=[
        "--set", "remote_kernels.kernel_start_timeout=77",
        "--set", "remote_kernels.kernel_username=bob",
    ]).start()
    try:
        async with logged_in(front) as client:
            created = await client.post("/api/sessions", json={
                "path": "eg.ipynb", "type": "notebook", "kernel": {"name": "python3"}})
            assert created.status_code == 201, created.text
            cookie = f"fastapiusersauth={client.cookies['fastapiusersauth']}"
            conn = await KernelConnection.open(
                f"ws://127.0.0.1:{front.port}/api/kernels/{created.json()['kernel']['id']}"
                "/channels", cookie=cookie)
            try:
                execution = await conn.execute(
                    "import os; print(os.environ.get('KERNEL_LAUNCH_TIMEOUT'),"
                    " os.environ.get('KERNEL_USERNAME'))")
            finally:
                await conn.close()
            assert execution.stdout == "77 bob\n"
    finally:
        front.stop()
        gateway.stop()
