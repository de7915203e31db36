"""Idle culling by the front, with real remotes: jupyter_server's rules (cull_idle_timeout,
cull_interval, cull_busy, cull_connected) applied to the kernels the front started, on a
Jupyverse remote (which culls nothing) and on jupyter_server; culled kernels' sessions go."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import httpx
import pytest

from tests.conftest import cookie_header, ws_url
from tests.support.harness import logged_in
from tests.support.kernel_client import KernelConnection
from tests.support.servers import Server, front_server, jupyter_server_remote, remote_server

pytestmark = pytest.mark.anyio

CULL = ["--set", "remote_kernels.cull_idle_timeout=3", "--set", "remote_kernels.cull_interval=1"]
# A kernel that should be culled is gone within timeout + interval, plus slack for a loaded
# machine.
CULLED_WITHIN = 40


@dataclass
class Servers:
    jupyverse: Server
    jupyter_server: Server
    # Single-remote fronts (sessions kept by the remote), default cull_busy/cull_connected.
    on_jupyverse: Server
    on_jupyter_server: Server
    # Both remotes (sessions kept by the front), with cull_busy and cull_connected.
    culls_all: Server


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    jupyverse = remote_server(tmp_path_factory.mktemp("jupyverse")).start()
    jupyter_server = jupyter_server_remote(tmp_path_factory.mktemp("jupyter-server")).start()
    started: list[Server] = [jupyverse, jupyter_server]
    try:
        on_jupyverse = front_server(tmp_path_factory.mktemp("front-jv"), jupyverse.url,
                                    jupyverse.token, extra=CULL).start()
        started.append(on_jupyverse)
        on_jupyter_server = front_server(
            tmp_path_factory.mktemp("front-js"), jupyter_server.url, jupyter_server.token,
            extra=[*CULL, "--set", "remote_kernels.kind=jupyter_server"]).start()
        started.append(on_jupyter_server)
        culls_all = front_server(tmp_path_factory.mktemp("front-all"), jupyverse.url,
                                 jupyverse.token, extra=[
            *CULL, "--set", "remote_kernels.cull_busy=true",
            "--set", "remote_kernels.cull_connected=true",
            "--set", "remote_kernels.remote_name=jv",
            "--set", "remote_kernels.remotes=" + json.dumps(
                [{"name": "js", "url": jupyter_server.url, "token_env": "JS_TOKEN"}])])
        culls_all.env["JS_TOKEN"] = jupyter_server.token
        culls_all.start()
        started.append(culls_all)
        yield Servers(jupyverse, jupyter_server, on_jupyverse, on_jupyter_server, culls_all)
    finally:
        for server in reversed(started):
            server.stop()


@asynccontextmanager
async def remote_api(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers,
                                 timeout=30) as client:
        if server.kind == "jupyverse":
            await client.get("/api/status", params={"token": server.token})
        yield client


async def runs(server: Server, kernel_id: str) -> bool:
    async with remote_api(server) as client:
        response = await client.get(f"/api/kernels/{kernel_id}")
        return response.status_code == 200 and response.json() is not None


async def new_session(api: httpx.AsyncClient, path: str, kernel: str = "python3") -> dict:
    response = await api.post("/api/sessions", json={
        "path": path, "type": "notebook", "name": path, "kernel": {"name": kernel}})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def session_ids(api: httpx.AsyncClient) -> set[str]:
    response = await api.get("/api/sessions")
    assert response.status_code == 200, response.text
    return {s["id"] for s in response.json()}


async def wait_culled(api: httpx.AsyncClient, kernel_id: str) -> None:
    """Until the front answers 404 for the kernel."""
    with anyio.fail_after(CULLED_WITHIN):
        while (await api.get(f"/api/kernels/{kernel_id}")).status_code != 404:
            await anyio.sleep(0.2)


async def two_culling_rounds(api: httpx.AsyncClient) -> None:
    """Two culling rounds have ended in which every kernel started before this call had
    been idle longer than the timeout: a kernel started now is culled (round r; every older
    kernel was idle longer), then another (round r' > r, so round r is over)."""
    for _ in range(2):
        created = await api.post("/api/kernels", json={"name": "python3"})
        assert created.status_code == 201, created.text
        await wait_culled(api, created.json()["id"])


async def busy_kernel(front: Server, api: httpx.AsyncClient, kernel_id: str,
                      seconds: float = 120) -> None:
    """Leave the kernel running a cell of `seconds`, with no socket open."""
    conn = await KernelConnection.open(ws_url(front, kernel_id), cookie=cookie_header(api),
                                       open_timeout=30)
    try:
        await conn.execute("1", timeout=30)
        msg_id = await conn.request("execute_request", {
            "code": f"import time; time.sleep({seconds})", "silent": False,
            "store_history": False,
            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
        await conn.wait_for("execute_input", parent=msg_id, timeout=30)
    finally:
        await conn.close()


@pytest.mark.parametrize("kind", ["jupyverse", "jupyter_server"])
async def test_an_idle_kernel_is_culled_with_its_session(servers: Servers, kind: str) -> None:
    """A kernel started through the front for a session (kept by the remote) and left idle
    is shut down on the remote after cull_idle_timeout; the remote drops its session; the
    front logs who culled it and why, and counts it in its metrics."""
    front, remote = ((servers.on_jupyverse, servers.jupyverse) if kind == "jupyverse"
                     else (servers.on_jupyter_server, servers.jupyter_server))
    async with logged_in(front) as api:
        session = await new_session(api, f"idle-{kind}.ipynb")
        kernel_id = session["kernel"]["id"]
        assert await runs(remote, kernel_id)
        await wait_culled(api, kernel_id)
        assert not await runs(remote, kernel_id)
        assert session["id"] not in await session_ids(api)
        metrics = (await api.get("/metrics")).text
    culls = [line for line in metrics.splitlines()
             if line.startswith("remote_kernels_kernels_culled_total{")]
    assert culls and all(float(line.rsplit(" ", 1)[1]) >= 1 for line in culls), metrics[-2000:]
    log = front.log_path.read_text(errors="replace")
    line = next(line for line in log.splitlines()
                if "Culling kernel" in line and kernel_id in line)
    assert "remote_kernels culler" in line and "inactive for" in line


async def test_a_busy_kernel_is_not_culled(servers: Servers) -> None:
    """A kernel running a long cell (no socket open) outlives rounds that cull idle kernels
    (cull_busy is off by default) and is still busy."""
    front = servers.on_jupyverse
    async with logged_in(front) as api:
        session = await new_session(api, "busy.ipynb")
        kernel_id = session["kernel"]["id"]
        try:
            await busy_kernel(front, api, kernel_id)
            await two_culling_rounds(api)
            model = (await api.get(f"/api/kernels/{kernel_id}")).json()
            assert model["execution_state"] == "busy", model
            assert session["id"] in await session_ids(api)
        finally:
            await api.delete(f"/api/sessions/{session['id']}")


async def test_a_kernel_left_busy_is_culled_once_its_cell_ends(servers: Servers) -> None:
    """A kernel whose last client left while a cell ran reads idle once the cell ends, and
    is then culled (cull_busy off)."""
    front = servers.on_jupyverse
    async with logged_in(front) as api:
        response = await api.post("/api/kernels", json={"name": "python3"})
        assert response.status_code == 201, response.text
        kernel_id = response.json()["id"]
        await busy_kernel(front, api, kernel_id, seconds=6)
        model = (await api.get(f"/api/kernels/{kernel_id}")).json()
        assert model["execution_state"] == "busy", model
        with anyio.fail_after(30):
            while model["execution_state"] == "busy":
                await anyio.sleep(0.2)
                model = (await api.get(f"/api/kernels/{kernel_id}")).json()
        assert model["execution_state"] == "idle", model
        await wait_culled(api, kernel_id)


async def test_a_connected_kernel_is_not_culled(servers: Servers) -> None:
    """An idle kernel with a socket open through the front outlives rounds that cull idle
    kernels (cull_connected is off by default)."""
    front = servers.on_jupyverse
    async with logged_in(front) as api:
        session = await new_session(api, "connected.ipynb")
        kernel_id = session["kernel"]["id"]
        conn = await KernelConnection.open(ws_url(front, kernel_id), cookie=cookie_header(api),
                                           open_timeout=30)
        try:
            await conn.execute("1", timeout=30)
            await two_culling_rounds(api)
            assert (await api.get(f"/api/kernels/{kernel_id}")).status_code == 200
            assert (await conn.execute("print(6*7)")).stdout == "42\n"
        finally:
            await conn.close()
            await api.delete(f"/api/sessions/{session['id']}")


async def test_cull_busy_culls_a_busy_kernel_and_its_front_kept_session(
        servers: Servers) -> None:
    """With cull_busy, a kernel busy without activity for cull_idle_timeout is culled; the
    session the front kept for it goes (several remotes: the front keeps sessions)."""
    front = servers.culls_all
    async with logged_in(front) as api:
        session = await new_session(api, "busy-culled.ipynb", "js:python3")
        kernel_id = session["kernel"]["id"]
        await busy_kernel(front, api, kernel_id)
        await wait_culled(api, kernel_id)
        assert not await runs(servers.jupyter_server, kernel_id)
        assert session["id"] not in await session_ids(api)


async def test_cull_connected_culls_a_connected_idle_kernel(servers: Servers) -> None:
    """With cull_connected, an idle kernel is culled although a socket is open to it, and
    that socket is closed."""
    front = servers.culls_all
    async with logged_in(front) as api:
        session = await new_session(api, "connected-culled.ipynb", "python3")
        kernel_id = session["kernel"]["id"]
        conn = await KernelConnection.open(ws_url(front, kernel_id), cookie=cookie_header(api),
                                           open_timeout=30)
        try:
            await conn.execute("1", timeout=30)
            await wait_culled(api, kernel_id)
            assert not await runs(servers.jupyverse, kernel_id)
            assert session["id"] not in await session_ids(api)
            with anyio.fail_after(30):
                await conn.ws.wait_closed()
        finally:
            await conn.close()
