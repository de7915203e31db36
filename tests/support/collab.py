"""Helpers for tests of server-side execution: notebooks made through the contents API, the
execute route, the notebook as saved on disk and as its collaboration room holds it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import httpx2
from jupyter_ydoc import YNotebook
from jupyverse_yrooms import AsyncWebSocketClient
from pycrdt import Doc

from tests.support.servers import Server


def code(source: str, cell_id: str) -> dict[str, Any]:
    return {"cell_type": "code", "id": cell_id, "source": source, "metadata": {},
            "outputs": [], "execution_count": None}


def markdown(source: str, cell_id: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "id": cell_id, "source": source, "metadata": {}}


async def new_notebook(api: httpx.AsyncClient, path: str, cells: list[dict[str, Any]]) -> str:
    """Create `path` through the contents API; its document id, as JupyterLab names it."""
    content = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    response = await api.put(f"/api/contents/{path}", json={
        "type": "notebook", "format": "json", "path": path, "content": content})
    assert response.status_code in (200, 201), response.text
    response = await api.put(f"/api/collaboration/session/{path}",
                             json={"format": "json", "type": "notebook"})
    assert response.status_code in (200, 201), response.text
    return f"json:notebook:{response.json()['fileId']}"


async def start_kernel(api: httpx.AsyncClient) -> str:
    response = await api.post("/api/kernels", json={"name": "python3"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def execute(api: httpx.AsyncClient, kernel_id: str, document_id: str,
                  cell_id: str) -> httpx.Response:
    return await api.post(f"/api/kernels/{kernel_id}/execute",
                          json={"document_id": document_id, "cell_id": cell_id})


async def run_cells(api: httpx.AsyncClient, kernel_id: str, document_id: str,
                    *cell_ids: str) -> None:
    for cell_id in cell_ids:
        response = await execute(api, kernel_id, document_id, cell_id)
        assert response.status_code == 200, response.text


def on_disk(front: Server, path: str) -> dict[str, Any] | None:
    """The notebook as saved in the front's root directory (None while unreadable)."""
    try:
        return json.loads((front.workdir / path).read_text())
    except (OSError, ValueError):
        return None


async def saved_when(front: Server, path: str, condition: Callable[[dict[str, Any]], bool],
                     timeout: float = 60) -> dict[str, Any]:
    """The saved notebook once `condition` holds for it; fails after `timeout` seconds."""
    last: dict[str, Any] | None = None
    try:
        with anyio.fail_after(timeout):
            while True:
                last = on_disk(front, path)
                if last is not None and condition(last):
                    return last
                await anyio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"{path} on disk never matched; last seen: {last}") from None


def cell_of(notebook: dict[str, Any], cell_id: str) -> dict[str, Any]:
    return next(c for c in notebook["cells"] if c["id"] == cell_id)


def ended(*cell_ids: str) -> Callable[[dict[str, Any]], bool]:
    """A condition: each of these cells has its count."""
    return lambda nb: all(cell_of(nb, c).get("execution_count") for c in cell_ids)


def text_of(cell: dict[str, Any], name: str = "stdout") -> str:
    return "".join(
        "".join(o["text"]) if isinstance(o["text"], list) else o["text"]
        for o in cell.get("outputs", [])
        if o.get("output_type") == "stream" and o.get("name") == name)


class RoomView:
    """A client joined to a notebook's collaboration room, reading its live Y document."""

    def __init__(self, doc: Doc) -> None:
        self.notebook = YNotebook(doc)

    def cell(self, cell_id: str) -> Any:
        return next(c for c in self.notebook.ycells if c.get("id") == cell_id)

    def state(self, cell_id: str) -> Any:
        return self.cell(cell_id).get("execution_state")

    def content(self, cell_id: str) -> dict[str, Any]:
        return cell_of(self.notebook.get(), cell_id)

    async def wait(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        try:
            with anyio.fail_after(timeout):
                while not condition():
                    await anyio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"not within {timeout} s: {what}; "
                                 f"notebook: {self.notebook.get()}") from None


@asynccontextmanager
async def room(front: Server, api: httpx.AsyncClient, document_id: str
               ) -> AsyncIterator[RoomView]:
    cookies = httpx2.Cookies()
    cookies.set("fastapiusersauth", api.cookies["fastapiusersauth"])
    doc = Doc()
    async with AsyncWebSocketClient(
            id=document_id, doc=doc, cookies=cookies,
            url=f"ws://127.0.0.1:{front.port}/api/collaboration/room"):
        view = RoomView(doc)
        await view.wait(lambda: len(view.notebook.ycells) > 0, "the room's document synced")
        yield view
