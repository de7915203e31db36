"""A front with the collaboration plugins survives a notebook deleted while its room is open
(fps-yrooms 0.2.4 fails the whole server on it without the front's guard)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from jupyverse_yrooms import AsyncWebSocketClient

from tests.conftest import login
from tests.support.servers import Server, front_server

pytestmark = pytest.mark.anyio

_EMPTY = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture(scope="module")
def collab_front(remote: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A front with JupyterLab and the collaboration plugins."""
    server = front_server(tmp_path_factory.mktemp("collab-front"), remote.url, remote.token,
                          collaboration=True).start()
    yield server
    server.stop()


async def _notebook(api: httpx.AsyncClient, path: str) -> str:
    """Create `path` through the contents API; its room id."""
    response = await api.put(f"/api/contents/{path}", json={
        "type": "notebook", "format": "json", "path": path, "content": _EMPTY})
    assert response.status_code in (200, 201), response.text
    response = await api.put(f"/api/collaboration/session/{path}",
                             json={"format": "json", "type": "notebook"})
    assert response.status_code in (200, 201), response.text
    return f"json:notebook:{response.json()['fileId']}"


def _room(front: Server, api: httpx.AsyncClient, room_id: str) -> AsyncWebSocketClient:
    cookies = httpx2.Cookies()
    cookies.set("fastapiusersauth", api.cookies["fastapiusersauth"])
    return AsyncWebSocketClient(id=room_id, cookies=cookies,
                                url=f"ws://127.0.0.1:{front.port}/api/collaboration/room")


async def test_front_survives_an_open_notebook_deleted(collab_front: Server) -> None:
    """Deleting a notebook whose room is open closes that room only: the front keeps serving."""
    api = await login(collab_front)
    try:
        room_id = await _notebook(api, "doomed.ipynb")
        async with _room(collab_front, api, room_id):
            # Created and deleted at once: fps-file-id 0.4.4 would fail the server on it
            # (FileNotFoundError) without the front's guard of its watching loop.
            assert (await api.delete("/api/contents/doomed.ipynb")).status_code == 204
            with anyio.fail_after(20):
                while "Collaboration room failed and was closed" not in collab_front.log_tail(200):
                    assert collab_front.process is not None
                    assert collab_front.process.poll() is None, collab_front.log_tail()
                    await anyio.sleep(0.1)
        assert collab_front.process is not None and collab_front.process.poll() is None
        assert (await api.get("/api/status")).status_code == 200
        # Other documents still open.
        other = await _notebook(api, "other.ipynb")
        with anyio.fail_after(20):
            async with _room(collab_front, api, other):
                pass
        assert (await api.get("/api/kernelspecs")).status_code == 200
    finally:
        await api.aclose()


@pytest.mark.fast
def test_collaboration_plugins_off_by_default(tmp_path: Path) -> None:
    """front_server enables the collaboration plugins only when asked."""
    args = front_server(tmp_path, "http://127.0.0.1:1/", "t", ui=True).args
    assert "yjs" in args and "yrooms" in args  # as --disable arguments
