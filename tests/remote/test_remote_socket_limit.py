"""A Jupyverse that runs kernels holds one of fps-auth's 15 pooled database connections per open
kernel WebSocket, so its 16th socket (all fronts and users together) waits 30 s and fails.
Installed on that server too (no url: it proxies nothing there), this package lifts the limit.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

from tests.conftest import cookie_header, ws_url
from tests.support.harness import logged_in
from tests.support.kernel_client import KernelConnection
from tests.support.servers import Server, front_server, remote_server

pytestmark = pytest.mark.anyio

# More sockets than fps-auth's pool has connections (5 + 10 overflow).
SOCKETS = 20


@pytest.fixture(scope="module")
def plugin_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A kernels-only Jupyverse with this package's module loaded too."""
    server = remote_server(tmp_path_factory.mktemp("plugin-remote"), with_plugin=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plugin_remote_front(plugin_remote: Server, tmp_path_factory: pytest.TempPathFactory
                        ) -> Iterator[Server]:
    server = front_server(tmp_path_factory.mktemp("plugin-remote-front"), plugin_remote.url,
                          plugin_remote.token).start()
    yield server
    server.stop()


async def test_remote_with_the_package_serves_20_kernel_sockets_and_rest_meanwhile(
    plugin_remote: Server, plugin_remote_front: Server
) -> None:
    """20 kernel WebSockets open at once through the front each answer kernel_info, and the
    remote's REST API keeps answering at once while they are open."""
    assert "authenticated at the handshake only" in plugin_remote.log_tail(200), (
        plugin_remote.log_tail())
    async with logged_in(plugin_remote_front) as api:
        created = await api.post("/api/sessions", json={
            "path": "many-sockets.ipynb", "type": "notebook", "name": "many-sockets.ipynb",
            "kernel": {"name": "python3"},
        })
        assert created.status_code == 201, created.text
        session_id, kernel_id = created.json()["id"], created.json()["kernel"]["id"]
        connections: list[KernelConnection] = []
        try:
            # Without the package, the 16th socket waits 30 s for a database connection.
            with anyio.fail_after(25):
                for _ in range(SOCKETS):
                    connections.append(await KernelConnection.open(
                        ws_url(plugin_remote_front, kernel_id), cookie=cookie_header(api)))
            for conn in connections:
                msg_id = await conn.request("kernel_info_request", {})
                reply = await conn.wait_for("kernel_info_reply", timeout=30, parent=msg_id)
                assert reply["content"]["status"] == "ok"
            with anyio.fail_after(5):
                listed = await api.get(f"/api/kernels/{kernel_id}")
            assert listed.status_code == 200
            assert listed.json()["connections"] >= SOCKETS
        finally:
            # At once: with unread output queued, each close takes its ~2.5 s handshake
            # (the same when connected to the remote directly).
            async with anyio.create_task_group() as tg:
                for conn in connections:
                    tg.start_soon(conn.close)
            await api.delete(f"/api/sessions/{session_id}")
            await api.delete(f"/api/kernels/{kernel_id}")
