"""The execute route's answers and the documents it runs in (a Jupyverse remote): bad requests,
the queue limit, a room kept open and saved while its cell runs with no client, a notebook
deleted or renamed mid-cell, the remote going away, and a front without the collaboration
plugins."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.conftest import login
from tests.support.collab import (
    cell_of,
    code,
    ended,
    execute,
    markdown,
    new_notebook,
    room,
    run_cells,
    saved_when,
    start_kernel,
    text_of,
)
from tests.support.servers import Server, front_server, remote_server

pytestmark = pytest.mark.anyio

# Lines printed every 0.5 s: the cell outlives the room's cleanup delay (2 s here).
PRINTS = "import time\nfor i in range({n}):\n    print(f'line {{i}}', flush=True)\n" \
         "    time.sleep(0.5)"


def _collab_front(workdir: Path, remote: Server) -> Server:
    return front_server(workdir, remote.url, remote.token, collaboration=True, extra=[
        "--set", "remote_kernels.execution_queue_limit=3",
        "--set", "yrooms.document_cleanup_delay=2",
    ])


@pytest.fixture(scope="module")
def collab(remote: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A front with the collaboration plugins, 3 cells per kernel at most, rooms closed 2 s
    after their last client left."""
    server = _collab_front(tmp_path_factory.mktemp("collab-route"), remote).start()
    yield server
    server.stop()


async def test_malformed_bodies_are_refused(capi: httpx.AsyncClient, kernel: str) -> None:
    """A body that is not JSON, not an object, or lacks a string document_id or cell_id: 400."""
    url = f"/api/kernels/{kernel}/execute"
    for body in (b"{", b"[]", b'{"cell_id": "c"}', b'{"document_id": "d"}',
                 b'{"document_id": 1, "cell_id": "c"}', b'{"document_id": "d", "cell_id": []}'):
        response = await capi.post(url, content=body,
                                   headers={"Content-Type": "application/json"})
        assert response.status_code == 400, (body, response.text)
        assert response.json()["message"]


async def test_unknown_kernel_document_or_cell(capi: httpx.AsyncClient, kernel: str) -> None:
    """An unknown kernel, document or cell: 404 with a message, never a 500."""
    doc = await new_notebook(capi, "known.ipynb", [code("1", "c1")])
    assert (await execute(capi, str(uuid.uuid4()), doc, "c1")).status_code == 404
    assert (await execute(capi, "not-a-kernel", doc, "c1")).status_code == 404
    for document_id in ("json:notebook:0123456789abcdef", "nonsense", "json:file:x",
                        "json:notebook:"):
        response = await execute(capi, kernel, document_id, "c1")
        assert response.status_code == 404, (document_id, response.text)
    response = await execute(capi, kernel, doc, "no-such-cell")
    assert response.status_code == 404 and "no-such-cell" in response.json()["message"]


async def test_markdown_cell_runs_nothing(collab: Server, capi: httpx.AsyncClient,
                                          kernel: str) -> None:
    """A markdown cell: 200, and nothing runs (its neighbour keeps no count)."""
    doc = await new_notebook(capi, "md.ipynb", [markdown("# title", "m1"), code("1", "c1")])
    response = await execute(capi, kernel, doc, "m1")
    assert response.status_code == 200 and response.json()["queued"] is False
    async with room(collab, capi, doc) as view:
        assert view.content("m1")["source"] == "# title"
        assert view.content("c1")["execution_count"] is None


async def test_queue_limit(collab: Server, capi: httpx.AsyncClient, kernel: str) -> None:
    """Over execution_queue_limit cells queued or running on a kernel: 429 naming the option;
    the queued cells still run."""
    doc = await new_notebook(capi, "limit.ipynb", [
        code("import time\ntime.sleep(2)", "c1"), code("2", "c2"), code("3", "c3"),
        code("4", "c4")])
    await run_cells(capi, kernel, doc, "c1", "c2", "c3")
    response = await execute(capi, kernel, doc, "c4")
    assert response.status_code == 429, response.text
    assert "execution_queue_limit" in response.json()["message"]
    saved = await saved_when(collab, "limit.ipynb", ended("c1", "c2", "c3"))
    assert cell_of(saved, "c4")["execution_count"] is None
    await run_cells(capi, kernel, doc, "c4")
    await saved_when(collab, "limit.ipynb", ended("c4"))


async def test_outputs_saved_after_the_last_client_left(collab: Server, capi: httpx.AsyncClient,
                                                         kernel: str) -> None:
    """The room stays open and saving while its cell runs, after its only client left and
    past the cleanup delay; it closes after the cell ended."""
    doc = await new_notebook(capi, "left.ipynb", [code(PRINTS.format(n=12), "c1")])
    async with room(collab, capi, doc) as view:
        await run_cells(capi, kernel, doc, "c1")
        await view.wait(lambda: "line 0" in text_of(view.content("c1")), "the first line")
    # 6 s of output to come, the room's cleanup delay is 2 s.
    saved = await saved_when(collab, "left.ipynb", ended("c1"), timeout=30)
    assert text_of(cell_of(saved, "c1")) == "".join(f"line {i}\n" for i in range(12))
    with anyio.fail_after(20):
        while "Closed collaboration room" not in collab.log_tail(50):
            await anyio.sleep(0.2)


async def test_front_survives_a_notebook_deleted_while_its_cell_runs(
        collab: Server, capi: httpx.AsyncClient, kernel: str) -> None:
    """Deleting a notebook whose cell runs (and saves every second) leaves the front serving;
    the kernel's next cell, in another notebook, runs."""
    doc = await new_notebook(capi, "doomed.ipynb", [code(PRINTS.format(n=8), "c1")])
    await run_cells(capi, kernel, doc, "c1")
    await saved_when(collab, "doomed.ipynb", lambda nb: "line 1" in text_of(cell_of(nb, "c1")))
    assert (await capi.delete("/api/contents/doomed.ipynb")).status_code == 204
    other = await new_notebook(capi, "survivor.ipynb", [code("print('alive')", "c1")])
    await run_cells(capi, kernel, other, "c1")
    saved = await saved_when(collab, "survivor.ipynb", ended("c1"), timeout=30)
    assert text_of(cell_of(saved, "c1")) == "alive\n"
    assert collab.process is not None and collab.process.poll() is None
    assert not (collab.workdir / "doomed.ipynb").exists()


async def test_renamed_notebook_keeps_its_cells_outputs(collab: Server, capi: httpx.AsyncClient,
                                                        kernel: str) -> None:
    """A notebook renamed while its cell runs gets every output under its new name."""
    doc = await new_notebook(capi, "before.ipynb", [code(PRINTS.format(n=8), "c1")])
    await run_cells(capi, kernel, doc, "c1")
    await saved_when(collab, "before.ipynb", lambda nb: "line 1" in text_of(cell_of(nb, "c1")))
    response = await capi.patch("/api/contents/before.ipynb", json={"path": "after.ipynb"})
    assert response.status_code == 200, response.text
    saved = await saved_when(collab, "after.ipynb", ended("c1"), timeout=30)
    assert text_of(cell_of(saved, "c1")) == "".join(f"line {i}\n" for i in range(8))
    assert collab.process is not None and collab.process.poll() is None


async def test_remote_going_away_ends_the_running_cell(tmp_path: Path) -> None:
    """The remote stopping mid-cell: the cell goes idle (no count); the front keeps serving."""
    remote = remote_server(tmp_path / "remote").start()
    front = _collab_front(tmp_path / "front", remote).start()
    try:
        api = await login(front)
        try:
            kernel_id = await start_kernel(api)
            doc = await new_notebook(api, "gone.ipynb", [code(PRINTS.format(n=100), "c1")])
            async with room(front, api, doc) as view:
                await run_cells(api, kernel_id, doc, "c1")
                await view.wait(lambda: "line 1" in text_of(view.content("c1")), "c1 printed")
                remote.stop()
                await view.wait(lambda: view.state("c1") == "idle", "c1 ended", timeout=60)
                assert view.content("c1")["execution_count"] is None
            assert (await execute(api, kernel_id, doc, "c1")).status_code in (404, 503)
            await saved_when(front, "gone.ipynb",
                             lambda nb: "line 1" in text_of(cell_of(nb, "c1")))
        finally:
            await api.aclose()
    finally:
        front.stop()
        remote.stop()


async def test_without_collaboration_plugins(front: Server, api: httpx.AsyncClient,
                                             session: dict) -> None:
    """Without the collaboration plugins the route answers 501 saying what to install, and the
    front said at start-up that server-side execution is unavailable."""
    response = await api.post(f"/api/kernels/{session['kernel']['id']}/execute",
                              json={"document_id": "json:notebook:x", "cell_id": "c"})
    assert response.status_code == 501
    assert "jupyverse[jupyterlab,auth,collaboration]" in response.json()["message"]
    log = front.log_path.read_text()
    assert log.count("Server-side execution unavailable") == 1


async def test_start_up_says_execution_is_available(collab: Server) -> None:
    """A front with the collaboration plugins logs once that server-side execution works."""
    assert collab.log_path.read_text().count("Server-side execution available") == 1


async def test_collaboration_labextensions_only_with_the_plugins(
        collab: Server, capi: httpx.AsyncClient, front: Server, api: httpx.AsyncClient) -> None:
    """JupyterLab's page loads the docprovider extension (and its replacement cell executor)
    only on a front whose collaboration plugins run."""
    with_plugins = (await capi.get("/lab")).text
    assert "@jupyter/docprovider-extension" in with_plugins
    assert "@jupyterlab/notebook-extension:cell-executor" in with_plugins  # it is replaced
    without = (await api.get("/lab")).text
    assert "@jupyter/docprovider-extension" not in without
    assert "@jupyterlab/notebook-extension:cell-executor" not in without
