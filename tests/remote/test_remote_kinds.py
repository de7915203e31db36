"""The other kinds of remote start, answer with their token, run kernels and stop cleanly:
jupyter_server, Kernel Gateway and Enterprise Gateway, as tests.support.servers starts them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.support.kernel_client import V1, KernelConnection
from tests.support.servers import (
    Server,
    enterprise_gateway_remote,
    jupyter_server_remote,
    kernel_gateway_remote,
)

pytestmark = pytest.mark.anyio

LAUNCHERS: dict[str, Callable[[Path], Server]] = {
    "jupyter_server": jupyter_server_remote,
    "kernel_gateway": kernel_gateway_remote,
    "enterprise_gateway": enterprise_gateway_remote,
}


@pytest.fixture(scope="module", params=list(LAUNCHERS))
def kind_server(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One running server of each kind, shared by the tests of this module."""
    server = LAUNCHERS[request.param](tmp_path_factory.mktemp(request.param)).start(120)
    yield server
    server.stop()


def ws_url(server: Server, kernel_id: str) -> str:
    return f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels"


async def start_kernel(client: httpx.AsyncClient, server: Server) -> str:
    response = await client.post("/api/kernels", headers=server.headers,
                                 json={"name": "python3"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def run(server: Server, kernel_id: str, code: str) -> str:
    """The stdout of `code`, run over the kernel WebSocket with header auth."""
    conn = await KernelConnection.open(ws_url(server, kernel_id),
                                       additional_headers=server.headers, open_timeout=30)
    try:
        return (await conn.execute(code, timeout=60)).stdout
    finally:
        await conn.close()


async def test_answers_with_its_token_only(kind_server: Server) -> None:
    """GET /api/kernelspecs answers 200 with `Authorization: token`, and refuses no credentials."""
    async with httpx.AsyncClient(base_url=kind_server.url, timeout=30) as client:
        response = await client.get("/api/kernelspecs", headers=kind_server.headers)
        assert response.status_code == 200, response.text
        assert "python3" in response.json()["kernelspecs"]
    # A fresh client: jupyter_server answers a token with a login cookie.
    async with httpx.AsyncClient(base_url=kind_server.url, timeout=30) as client:
        refused = await client.get("/api/kernelspecs")
        assert refused.status_code in (401, 403), refused.text


async def test_runs_code_over_the_kernel_websocket(kind_server: Server) -> None:
    """A kernel started with POST /api/kernels prints 42 over a v1 WebSocket with header auth."""
    async with httpx.AsyncClient(base_url=kind_server.url, timeout=60) as client:
        kernel_id = await start_kernel(client, kind_server)
        try:
            conn = await KernelConnection.open(ws_url(kind_server, kernel_id),
                                               additional_headers=kind_server.headers,
                                               open_timeout=30)
            try:
                assert conn.protocol == V1
                execution = await conn.execute("print(6*7)", timeout=60)
                assert execution.stdout == "42\n"
            finally:
                await conn.close()
        finally:
            await client.delete(f"/api/kernels/{kernel_id}", headers=kind_server.headers)


@pytest.mark.parametrize("kind", list(LAUNCHERS))
async def test_stop_ends_its_kernels(kind: str, tmp_path: Path) -> None:
    """Stopping a server also ends the kernels it started (they run in sessions of their own)."""
    server = LAUNCHERS[kind](tmp_path)
    await anyio.to_thread.run_sync(lambda: server.start(120))
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            kernel_id = await start_kernel(client, server)
            pid = int(await run(server, kernel_id, "import os; print(os.getpid())"))
    finally:
        await anyio.to_thread.run_sync(server.stop)
    with anyio.fail_after(20):
        while alive(pid):
            await anyio.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose: it only waits for its parent to reap it.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
