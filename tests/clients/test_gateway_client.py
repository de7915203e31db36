"""jupyter_server with `--gateway-url` pointed at the front: the front as a kernel gateway.

The front authenticates with its fps-auth cookie, which jupyter_server's gateway client sends
with every request and WebSocket handshake through `--GatewayClient.headers`. Every kernel it
starts must run on the remote.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
import websockets

from tests.support.kernel_client import V1, KernelConnection
from tests.support.servers import Server, free_port

pytestmark = pytest.mark.anyio


@dataclass
class JupyterServer:
    url: str
    token: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http"):]

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def front_cookie(front: Server) -> str:
    """The cookie a browser gets from `?token=` (fps-auth reads no Authorization header)."""
    response = httpx.get(f"{front.url}api/me", params={"token": front.token}, timeout=30)
    assert response.status_code == 200, response.text
    return f"fastapiusersauth={response.cookies['fastapiusersauth']}"


@pytest.fixture(scope="module")
def jupyter_server(front: Server, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[JupyterServer]:
    """A jupyter_server whose kernels are managed by the front as its gateway."""
    workdir = tmp_path_factory.mktemp("jupyter_server")
    port, token = free_port(), secrets.token_hex(16)
    log_path = workdir / "jupyter_server.log"
    env = {
        **os.environ,
        # Nothing from the user's own Jupyter configuration.
        "JUPYTER_CONFIG_DIR": str(workdir / "config"),
        "JUPYTER_DATA_DIR": str(workdir / "data"),
        "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"),
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "jupyter_server",
                "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
                "--port-retries=0", f"--ServerApp.root_dir={workdir}",
                f"--IdentityProvider.token={token}",
                f"--gateway-url={front.url}",
                "--GatewayClient.headers=" + json.dumps({"Cookie": front_cookie(front)}),
            ],
            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = JupyterServer(f"http://127.0.0.1:{port}/", token, process, log_path)
    try:
        wait_until_serving(server, timeout=60)
        yield server
    finally:
        stop(process)


def wait_until_serving(server: JupyterServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"jupyter_server exited:\n{server.log_tail()}")
        try:
            httpx.get(f"{server.url}api/status", params={"token": server.token}, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)  # polling for the port to open: there is no event to wait on
    raise TimeoutError(f"jupyter_server did not start in {timeout} s:\n{server.log_tail()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
            process.wait(10)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
async def gateway(jupyter_server: JupyterServer) -> AsyncIterator[httpx.AsyncClient]:
    """jupyter_server's API, authenticated with its own token."""
    async with httpx.AsyncClient(
        base_url=jupyter_server.url, timeout=60,
        headers={"Authorization": f"token {jupyter_server.token}"},
    ) as client:
        yield client


@pytest.fixture
async def kernel_id(gateway: httpx.AsyncClient) -> AsyncIterator[str]:
    """A kernel started through jupyter_server (so through the front), shut down afterwards."""
    response = await gateway.post("/api/kernels", json={"name": "python3"})
    assert response.status_code == 201, response.text
    kernel_id = response.json()["id"]
    yield kernel_id
    await gateway.delete(f"/api/kernels/{kernel_id}")


async def open_channels(server: JupyterServer, kernel_id: str) -> KernelConnection:
    session = uuid.uuid4().hex
    ws = await websockets.connect(
        f"{server.ws_url}api/kernels/{kernel_id}/channels?session_id={session}",
        subprotocols=[websockets.Subprotocol(V1)],
        additional_headers={"Authorization": f"token {server.token}"},
        max_size=None,
    )
    return KernelConnection(ws, session)


async def remote_kernel_ids(remote_api: httpx.AsyncClient) -> set[str]:
    response = await remote_api.get("/api/kernels")
    assert response.status_code == 200
    return {kernel["id"] for kernel in response.json()}


async def test_kernelspecs_and_logos_reach_jupyter_server_from_the_remote(
    gateway: httpx.AsyncClient, remote_api: httpx.AsyncClient
) -> None:
    """jupyter_server lists the remote's kernelspecs and serves their logos through the front."""
    response = await gateway.get("/api/kernelspecs")
    assert response.status_code == 200, response.text
    specs = response.json()
    remote_specs = (await remote_api.get("/api/kernelspecs")).json()
    assert specs["default"] == remote_specs["default"]
    assert set(specs["kernelspecs"]) == set(remote_specs["kernelspecs"])
    one = await gateway.get("/api/kernelspecs/python3")
    assert one.status_code == 200 and one.json()["name"] == "python3"
    logo = await gateway.get(specs["kernelspecs"]["python3"]["resources"]["logo-64x64"])
    remote_logo = await remote_api.get("/kernelspecs/python3/logo-64x64.png")
    assert logo.status_code == 200
    assert logo.content == remote_logo.content and logo.content[:4] == b"\x89PNG"


async def test_kernel_started_through_jupyter_server_runs_on_the_remote(
    jupyter_server: JupyterServer, gateway: httpx.AsyncClient, kernel_id: str,
    remote_api: httpx.AsyncClient
) -> None:
    """POST /api/kernels on jupyter_server starts a remote kernel that executes over its socket."""
    assert kernel_id in await remote_kernel_ids(remote_api)
    listed = (await gateway.get("/api/kernels")).json()
    assert kernel_id in {kernel["id"] for kernel in listed}
    connection = await open_channels(jupyter_server, kernel_id)
    try:
        execution = await connection.execute("print(6*7)", timeout=60)
    finally:
        await connection.close()
    assert execution.reply is not None and execution.reply["content"]["status"] == "ok"
    assert execution.stdout == "42\n"


async def test_interrupt_through_jupyter_server_stops_a_running_cell(
    jupyter_server: JupyterServer, gateway: httpx.AsyncClient, kernel_id: str
) -> None:
    """POST …/interrupt on jupyter_server ends time.sleep(60) with KeyboardInterrupt."""
    connection = await open_channels(jupyter_server, kernel_id)
    try:
        await connection.execute("pass", timeout=60)  # the kernel is up and answering
        msg_id = await connection.request("execute_request", {
            "code": "print('sleeping', flush=True); import time; time.sleep(60)",
            "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True,
        })
        await connection.wait_for("stream", timeout=30, parent=msg_id)  # inside the cell
        response = await gateway.post(f"/api/kernels/{kernel_id}/interrupt")
        assert response.status_code == 204, response.text
        execution = await connection.collect(msg_id, timeout=10)
    finally:
        await connection.close()
    assert execution.reply is not None
    assert execution.reply["content"]["status"] == "error"
    assert execution.reply["content"]["ename"] == "KeyboardInterrupt"


async def test_restart_through_jupyter_server_gives_a_fresh_kernel(
    jupyter_server: JupyterServer, gateway: httpx.AsyncClient, kernel_id: str
) -> None:
    """POST …/restart on jupyter_server restarts the remote kernel: state gone, count 1."""
    connection = await open_channels(jupyter_server, kernel_id)
    try:
        await connection.execute("before_restart = 1", timeout=60)
        response = await gateway.post(f"/api/kernels/{kernel_id}/restart")
        assert response.status_code == 200, response.text
        assert response.json()["id"] == kernel_id
    finally:
        await connection.close()
    # As JupyterLab does after a restart: a new connection.
    connection = await open_channels(jupyter_server, kernel_id)
    try:
        execution = await connection.execute("print('before_restart' in globals())", timeout=60)
    finally:
        await connection.close()
    assert execution.stdout == "False\n"
    assert execution.reply is not None and execution.reply["content"]["execution_count"] == 1


async def test_shutdown_through_jupyter_server_ends_the_remote_kernel(
    gateway: httpx.AsyncClient, kernel_id: str, remote_api: httpx.AsyncClient
) -> None:
    """DELETE /api/kernels/{id} on jupyter_server ends the kernel on the remote."""
    assert kernel_id in await remote_kernel_ids(remote_api)
    response = await gateway.delete(f"/api/kernels/{kernel_id}")
    assert response.status_code == 204, response.text
    assert kernel_id not in await remote_kernel_ids(remote_api)
    assert (await gateway.get(f"/api/kernels/{kernel_id}")).status_code == 404


async def test_session_through_jupyter_server_starts_and_ends_a_remote_kernel(
    gateway: httpx.AsyncClient, remote_api: httpx.AsyncClient
) -> None:
    """A notebook session on jupyter_server gets a remote kernel, ended with the session."""
    response = await gateway.post("/api/sessions", json={
        "path": "gateway.ipynb", "type": "notebook", "name": "gateway.ipynb",
        "kernel": {"name": "python3"},
    })
    assert response.status_code == 201, response.text
    session = response.json()
    assert session["kernel"]["id"] in await remote_kernel_ids(remote_api)
    with anyio.fail_after(60):
        deleted = await gateway.delete(f"/api/sessions/{session['id']}")
    assert deleted.status_code == 204, deleted.text
    assert session["kernel"]["id"] not in await remote_kernel_ids(remote_api)
