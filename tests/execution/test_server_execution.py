"""Server-side execution on each kind of remote: a front with the collaboration plugins runs
notebook cells POSTed to /api/kernels/{id}/execute, with no browser attached, and the outputs
land in the collaboration room's Y document and in the .ipynb on disk."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ALL_KINDS
from tests.support.collab import (
    cell_of,
    code,
    ended,
    execute,
    new_notebook,
    room,
    run_cells,
    saved_when,
    start_kernel,
    text_of,
)
from tests.support.servers import Server, front_server

pytestmark = [pytest.mark.anyio, ALL_KINDS]

OUTPUTS = """\
import sys
from IPython.display import display, clear_output
print("a")
print("b", flush=True)  # the kernel's own stdout and stderr flush apart: order them here
print("e", file=sys.stderr)
display({"text/plain": "shown"}, raw=True, metadata={"m": 1})
handle = display("v1", display_id=True)
handle.update("v2")
print("after display")
1 + 1
"""


def _ended_without_answer(cell: dict) -> bool:
    """No count: the front ended it. Enterprise Gateway (jupyter_client 6) interrupts a kernel
    before restarting or stopping it: then the cell has the kernel's own answer."""
    outputs = cell["outputs"]
    return cell["execution_count"] is None or outputs[-1].get("ename") == "KeyboardInterrupt"


@pytest.fixture(scope="module")
def collab(remote: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A front with JupyterLab, the collaboration plugins and this plugin."""
    server = front_server(tmp_path_factory.mktemp("collab-exec"), remote.url, remote.token,
                          collaboration=True).start()
    yield server
    server.stop()


async def test_outputs_land_in_the_room_and_on_disk(collab: Server, capi: httpx.AsyncClient,
                                                    kernel: str) -> None:
    """stream, display_data (with metadata), update_display_data, execute_result, error and
    the count are written into the Y cell and saved, with no browser connected."""
    doc = await new_notebook(capi, "outputs.ipynb", [code(OUTPUTS, "c1"), code("1/0", "c2")])
    await run_cells(capi, kernel, doc, "c1", "c2")
    saved = await saved_when(collab, "outputs.ipynb", ended("c1", "c2"))
    first = cell_of(saved, "c1")
    kinds = [(o["output_type"], o.get("name")) for o in first["outputs"]]
    assert kinds == [("stream", "stdout"), ("stream", "stderr"), ("display_data", None),
                     ("display_data", None), ("stream", "stdout"), ("execute_result", None)], \
        first["outputs"]  # the texts, to tell a kernel's own warning from a lost message
    assert first["outputs"][0]["text"] == "a\nb\n"
    assert first["outputs"][2] == {"output_type": "display_data", "metadata": {"m": 1},
                                   "data": {"text/plain": "shown"}}
    assert first["outputs"][3]["data"] == {"text/plain": "'v2'"}
    assert first["outputs"][4]["text"] == "after display\n"
    assert first["outputs"][5]["data"] == {"text/plain": "2"}
    assert first["outputs"][5]["execution_count"] == first["execution_count"]
    second = cell_of(saved, "c2")
    assert second["execution_count"] == first["execution_count"] + 1
    assert [o["output_type"] for o in second["outputs"]] == ["error"]
    assert second["outputs"][0]["ename"] == "ZeroDivisionError"
    async with room(collab, capi, doc) as view:
        assert view.content("c1")["outputs"] == first["outputs"]
        assert view.state("c1") == "idle" and view.state("c2") == "idle"


async def test_clear_output_and_input(collab: Server, capi: httpx.AsyncClient,
                                      kernel: str) -> None:
    """clear_output(wait=True) clears at the next output, clear_output() at once; input()
    fails at once (stdin is not offered) instead of hanging."""
    doc = await new_notebook(capi, "clear.ipynb", [
        code("from IPython.display import clear_output\nprint('old')\n"
             "clear_output(wait=True)\nprint('new')", "c1"),
        code("from IPython.display import clear_output\nprint('gone')\nclear_output()", "c2"),
        code("input('name? ')", "c3"),
    ])
    started = time.monotonic()
    await run_cells(capi, kernel, doc, "c1", "c2", "c3")
    saved = await saved_when(collab, "clear.ipynb", ended("c1", "c2", "c3"))
    assert time.monotonic() - started < 30
    assert cell_of(saved, "c1")["outputs"] == [
        {"output_type": "stream", "name": "stdout", "text": "new\n"}]
    assert cell_of(saved, "c2")["outputs"] == []
    error = cell_of(saved, "c3")["outputs"][0]
    assert error["output_type"] == "error" and error["ename"] == "StdinNotImplementedError"


async def test_cells_posted_in_a_row_run_in_order(collab: Server, capi: httpx.AsyncClient,
                                                  kernel: str) -> None:
    """Each POST answers once its cell is queued; the cells run in the order they were
    POSTed, each shown running ([*]) until it ends."""
    doc = await new_notebook(capi, "order.ipynb", [
        code("import time\ntime.sleep(2)\norder = [1]", "c1"),
        code("order.append(2)", "c2"),
        code("print(order)", "c3"),
    ])
    async with room(collab, capi, doc) as view:
        started = time.monotonic()
        await run_cells(capi, kernel, doc, "c1", "c2", "c3")
        assert time.monotonic() - started < 1.5, "the route waited for the cell to run"
        await view.wait(lambda: view.state("c3") == "running", "the last cell queued ([*])",
                        timeout=1.5)
        await view.wait(lambda: view.state("c3") == "idle", "the last cell ended")
    saved = await saved_when(collab, "order.ipynb", ended("c1", "c2", "c3"))
    counts = [cell_of(saved, c)["execution_count"] for c in ("c1", "c2", "c3")]
    assert counts == sorted(counts) and len(set(counts)) == 3
    assert text_of(cell_of(saved, "c3")) == "[1, 2]\n"


async def test_interrupt_during_a_run(collab: Server, capi: httpx.AsyncClient,
                                      kernel: str) -> None:
    """An interrupt ends the running cell (KeyboardInterrupt) and aborts the queued one (idle,
    no count); the next cell runs."""
    doc = await new_notebook(capi, "interrupt.ipynb", [
        code("import time\nprint('start', flush=True)\ntime.sleep(120)", "c1"),
        code("print('never')", "c2"),
        code("print('ok')", "c3"),
    ])
    async with room(collab, capi, doc) as view:
        await run_cells(capi, kernel, doc, "c1", "c2")
        await view.wait(lambda: "start" in str(view.content("c1")["outputs"]), "c1 printed")
        response = await capi.post(f"/api/kernels/{kernel}/interrupt")
        assert response.status_code == 204, response.text
        await view.wait(lambda: view.state("c1") == "idle" and view.state("c2") == "idle",
                        "both cells ended", timeout=20)
        first, second = view.content("c1"), view.content("c2")
        assert first["outputs"][-1]["ename"] == "KeyboardInterrupt"
        assert second["execution_count"] is None and second["outputs"] == []
        await run_cells(capi, kernel, doc, "c3")
        await view.wait(lambda: view.content("c3")["execution_count"] is not None, "c3 ran")
        assert text_of(view.content("c3")) == "ok\n"


async def test_restart_during_a_run(collab: Server, capi: httpx.AsyncClient,
                                    kernel: str) -> None:
    """A restart ends the running and the queued cells (idle, the queued one with no count);
    after it the next cell runs on the fresh kernel."""
    doc = await new_notebook(capi, "restart.ipynb", [
        code("import time\nx = 1\nprint('start', flush=True)\ntime.sleep(120)", "c1"),
        code("print('queued')", "c2"),
        code("print('x' in dir())", "c3"),
    ])
    async with room(collab, capi, doc) as view:
        await run_cells(capi, kernel, doc, "c1", "c2")
        await view.wait(lambda: "start" in str(view.content("c1")["outputs"]), "c1 printed")
        response = await capi.post(f"/api/kernels/{kernel}/restart")
        assert response.status_code == 200, response.text
        await view.wait(lambda: view.state("c1") == "idle" and view.state("c2") == "idle",
                        "both cells ended", timeout=20)
        assert _ended_without_answer(view.content("c1"))
        assert view.content("c2")["execution_count"] is None
        await run_cells(capi, kernel, doc, "c3")
        await view.wait(lambda: view.content("c3")["execution_count"] is not None, "c3 ran",
                        timeout=60)
        assert text_of(view.content("c3")) == "False\n"


async def test_shutdown_during_a_run(collab: Server, capi: httpx.AsyncClient) -> None:
    """Shutting the kernel down ends its running cell: idle, no count, nothing left [*]."""
    kernel_id = await start_kernel(capi)
    doc = await new_notebook(capi, "shutdown.ipynb", [
        code("import time\nprint('start', flush=True)\ntime.sleep(120)", "c1")])
    async with room(collab, capi, doc) as view:
        await run_cells(capi, kernel_id, doc, "c1")
        await view.wait(lambda: "start" in str(view.content("c1")["outputs"]), "c1 printed")
        response = await capi.delete(f"/api/kernels/{kernel_id}")
        assert response.status_code == 204, response.text
        await view.wait(lambda: view.state("c1") == "idle", "c1 ended", timeout=20)
        assert _ended_without_answer(view.content("c1"))
    response = await execute(capi, kernel_id, doc, "c1")
    assert response.status_code == 404, response.text


async def test_kernel_culled_on_the_remote_during_a_run(
        collab: Server, capi: httpx.AsyncClient, remote_api: httpx.AsyncClient) -> None:
    """A kernel shut down on the remote itself (culled) while its cell runs: the executor
    socket closes and the cell goes idle."""
    kernel_id = await start_kernel(capi)
    doc = await new_notebook(capi, "culled.ipynb", [
        code("import time\nprint('start', flush=True)\ntime.sleep(120)", "c1")])
    async with room(collab, capi, doc) as view:
        await run_cells(capi, kernel_id, doc, "c1")
        await view.wait(lambda: "start" in str(view.content("c1")["outputs"]), "c1 printed")
        response = await remote_api.delete(f"/api/kernels/{kernel_id}")
        assert response.status_code == 204, response.text
        await view.wait(lambda: view.state("c1") == "idle", "c1 ended", timeout=60)
        assert _ended_without_answer(view.content("c1"))
