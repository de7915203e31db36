"""Opening a kernel socket costs one round trip to the remote: the front asks a Jupyverse
remote whether the kernel exists only when it has not heard from the kernel a moment ago (its
handshake accepts unknown kernels), and a kernel it shut down is checked again."""

from __future__ import annotations

import httpx
import pytest
import websockets

from tests.conftest import cookie_header, ws_url
from tests.support.fault_proxy import BackgroundLoop, FaultProxy
from tests.support.harness import logged_in
from tests.support.kernel_client import KernelConnection
from tests.support.servers import Server, front_server

pytestmark = pytest.mark.anyio


async def execute_once(front: Server, client: httpx.AsyncClient, kernel_id: str) -> None:
    conn = await KernelConnection.open(ws_url(front, kernel_id), cookie=cookie_header(client))
    try:
        assert (await conn.execute("print(1)")).stdout == "1\n"
    finally:
        await conn.close()


def kernel_checks(proxy: FaultProxy, kernel_id: str) -> int:
    return sum(1 for r in proxy.requests
               if r.method == "GET" and r.path == f"/api/kernels/{kernel_id}")


async def test_a_kernel_heard_from_is_not_checked_and_a_deleted_one_is(
    remote: Server, loop: BackgroundLoop, tmp_path
) -> None:
    """The first socket to a kernel checks it on the remote; a reconnect right after its
    traffic does not; after the kernel is shut down through the front, a socket to it is
    refused at the handshake (404), not accepted into silence."""
    proxy = FaultProxy(remote.port, loop=loop)
    front = front_server(tmp_path, proxy.url, remote.token).start()
    try:
        async with logged_in(front) as client:
            response = await client.post("/api/kernels", json={"name": "python3"})
            assert response.status_code == 201, response.text
            kernel_id = response.json()["id"]
            await execute_once(front, client, kernel_id)
            first = kernel_checks(proxy, kernel_id)
            await execute_once(front, client, kernel_id)
            assert kernel_checks(proxy, kernel_id) == first, "checked a kernel just heard from"
            assert (await client.delete(f"/api/kernels/{kernel_id}")).status_code == 204
            with pytest.raises(websockets.InvalidStatus) as refused:
                await KernelConnection.open(ws_url(front, kernel_id),
                                            cookie=cookie_header(client))
            assert refused.value.response.status_code == 404
    finally:
        front.stop()
