"""JupyterLab's own client library, @jupyterlab/services, scripted from Node against the front.

The scenario lives in tests/support/node/services-client.mjs (installed by scripts/setup.sh with
`npm ci`); each of its steps prints `ok - …` or `not ok - …`, and its last line is a JSON summary.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anyio
import httpx
import pytest

from tests.support.servers import Server, front_server, remote_server

pytestmark = pytest.mark.anyio

NODE_DIR = Path(__file__).parents[1] / "support" / "node"
SCRIPT = NODE_DIR / "services-client.mjs"
STEPS = [
    "log in with ?token= and keep the cookie",
    "KernelSpecManager lists the remote specs",
    "KernelManager.startNew starts a kernel on the remote",
    "requestKernelInfo answers with the kernel language",
    "the WebSocket speaks the expected protocol",
    "execute print(6*7) streams 42",
    "comm open and message round-trip a binary buffer",
    "interrupt stops a running cell with KeyboardInterrupt",
    "restart then execute again from a fresh count",
    "SessionManager.startNew creates a session on the remote",
    "session setPath and setName are PATCHed on the server",
    "session and kernel shut down, and are gone from the remote",
]


async def run_services_client(front: Server, remote: Server, protocol: str
                              ) -> tuple[list[str], dict]:
    node = shutil.which("node")
    assert node, "node is not installed"
    assert (NODE_DIR / "node_modules" / "@jupyterlab" / "services").is_dir(), (
        "tests/support/node is not installed: run scripts/setup.sh (npm ci)"
    )
    with anyio.fail_after(150):
        result = await anyio.run_process(
            [node, str(SCRIPT), front.url, front.token, remote.url, remote.token, protocol],
            cwd=NODE_DIR, check=False,
        )
    output = result.stdout.decode(errors="replace")
    lines = output.splitlines()
    assert result.returncode == 0, (
        f"node exited with {result.returncode}:\n{output}\n"
        f"{result.stderr.decode(errors='replace')}\n--- front log ---\n{front.log_tail()}"
        f"\n--- remote log ---\n{remote.log_tail()}"
    )
    return lines, json.loads(lines[-1])


@pytest.mark.parametrize("protocol", ["v1", "legacy"])
async def test_jupyterlab_services_client_runs_kernels_and_sessions_through_the_front(
    front: Server, remote: Server, remote_api: httpx.AsyncClient, protocol: str
) -> None:
    """@jupyterlab/services specs, kernels, comms, interrupt, restart and sessions work."""
    lines, summary = await run_services_client(front, remote, protocol)
    assert [line.removeprefix("ok - ") for line in lines if line.startswith("ok - ")] == STEPS
    expected = "v1.kernel.websocket.jupyter.org" if protocol == "v1" else ""
    assert summary["subprotocols"] and set(summary["subprotocols"]) == {expected}
    assert len(summary["kernels"]) == 2 and len(summary["sessions"]) == 1
    remote_kernels = {k["id"] for k in (await remote_api.get("/api/kernels")).json()}
    assert not remote_kernels & set(summary["kernels"]), "a kernel outlived its shutdown"


async def test_json_bodies_typed_text_plain_as_fetch_types_them_are_accepted(
    api: httpx.AsyncClient, front: Server
) -> None:
    """A JSON body typed text/plain;charset=UTF-8 (fetch's type for a string) starts a kernel."""
    plain = {"Content-Type": "text/plain;charset=UTF-8"}
    for headers in (plain, {**plain, "Origin": front.url.rstrip("/")}):
        created = await api.post("/api/kernels", content=b'{"name": "python3"}', headers=headers)
        assert created.status_code == 201, created.text
        assert (await api.delete(f"/api/kernels/{created.json()['id']}")).status_code == 204


async def test_a_kernel_whose_host_restarted_is_dead_to_jupyterlab(tmp_path: Path) -> None:
    """The kernel host restarts under a running cell: JupyterLab's client sees the kernel
    `dead` and the cell ended (it can pick another kernel), not "Disconnected" for good."""
    node = shutil.which("node")
    assert node, "node is not installed"
    remote = remote_server(tmp_path / "remote").start()
    front = front_server(tmp_path / "front", remote.url, remote.token)
    front.start()
    try:
        process = await anyio.open_process(
            [node, str(NODE_DIR / "kernel-host-restart.mjs"), front.url, front.token],
            cwd=NODE_DIR)
        assert process.stdout is not None
        output = b""
        with anyio.fail_after(240):
            async for chunk in process.stdout:
                output += chunk
                if b"ready\n" in output:
                    break
            assert b"ready" in output, output.decode(errors="replace")
            remote.stop()  # the kernel host restarts: its kernels are gone
            remote.start()
            async for chunk in process.stdout:
                output += chunk
            await process.wait()
        text = output.decode(errors="replace")
        assert "ok - the kernel is dead once its host restarted" in text, \
            f"{text}\n--- front log ---\n{front.log_tail()}"
        assert "ok - the running cell ended" in text, text
        assert process.returncode == 0, text
    finally:
        front.stop()
        remote.stop()
