"""Local kernels next to remote ones (`remote_kernels.local_kernels`): a front that supervises
its own kernels-only Jupyverse child, with a real Jupyverse remote named `gpu` beside it."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from websockets.exceptions import InvalidStatus

from fps_remote_kernels.config import load_config
from fps_remote_kernels.local.kernel_host import TOKEN_VARIABLE
from tests.support.harness import logged_in, wait_until
from tests.support.kernel_client import KernelConnection
from tests.support.servers import Server, descendants, front_server

pytestmark = pytest.mark.anyio

WHERE = ("import os, json; print(json.dumps({'pid': os.getpid(), 'cwd': os.getcwd(), "
         "'pgid': os.getpgid(0), 'env': sorted(os.environ)}))")


def start_front(workdir: Path, remote: Server) -> Server:
    """A front with local kernels and `remote` as `gpu`."""
    return front_server(workdir, remote.url, remote.token, extra=[
        "--set", "remote_kernels.remote_name=gpu",
        "--set", "remote_kernels.local_kernels=true",
    ]).start()


@pytest.fixture(scope="module")
def local_front(remote: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    front = start_front(tmp_path_factory.mktemp("local-front"), remote)
    yield front
    front.stop()


def child_pids(front: Server) -> list[int]:
    """The front's local kernel servers (processes below it running
    fps_remote_kernels.local.kernel_host)."""
    assert front.process is not None
    return [pid for pid in descendants(front.process.pid)
            if b"fps_remote_kernels.local.kernel_host" in _read(f"/proc/{pid}/cmdline")]


def state_dir_of(child: int) -> Path:
    """The private directory of a local kernel server (the parent of its auth directory)."""
    [auth] = [arg for arg in _read(f"/proc/{child}/cmdline").split(b"\0")
              if arg.startswith(b"auth.directory=")]
    return Path(auth.decode().partition("=")[2]).parent


def group_members(pgid: int) -> list[int]:
    """The processes of a process group (Linux /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _read(f"/proc/{entry.name}/stat").decode(errors="replace")
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) > 2 and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
    return bool(stat) and stat.rsplit(")", 1)[-1].split()[0] != "Z"


async def both_listed(client: httpx.AsyncClient) -> dict:
    """The kernelspecs, once the local kernel server (started after the front) answers."""
    with anyio.fail_after(90):
        while True:
            specs = (await client.get("/api/kernelspecs")).json()["kernelspecs"]
            if {"python3", "local:python3"} <= set(specs):
                return specs
            await anyio.sleep(0.2)


async def run_where(front: Server, client: httpx.AsyncClient, kernel: str,
                    path: str | None = None) -> dict:
    """Start a session on `kernel` and report the pid, cwd, pgid and env names of its kernel."""
    response = await client.post("/api/sessions", json={
        "path": path or f"{kernel.replace(':', '-')}.ipynb", "type": "notebook",
        "name": "nb.ipynb",
        "kernel": {"name": kernel}})
    assert response.status_code == 201, response.text
    session = response.json()
    conn = await KernelConnection.open(
        f"ws://127.0.0.1:{front.port}/api/kernels/{session['kernel']['id']}/channels",
        cookie=f"fastapiusersauth={client.cookies['fastapiusersauth']}")
    try:
        execution = await conn.execute(WHERE)
    finally:
        await conn.close()
    return {**json.loads(execution.stdout), "session": session}


@pytest.fixture
async def client(local_front: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with logged_in(local_front) as client:
        yield client


async def test_local_and_remote_kernelspecs_are_listed_with_where_they_run(
        client: httpx.AsyncClient) -> None:
    """Both kernelspecs are listed: the remote's as python3 "... (gpu)", the local one as
    local:python3 "... (local)"; /api/status reports both remotes reachable."""
    specs = await both_listed(client)
    assert specs["python3"]["spec"]["display_name"].endswith(" (gpu)")
    assert specs["local:python3"]["spec"]["display_name"].endswith(" (local)")
    remotes = {r["name"]: r for r in (await client.get("/api/status")).json()["remotes"]}
    assert remotes["local"]["reachable"] and remotes["gpu"]["reachable"]
    assert remotes["local"]["url"].startswith("http://127.0.0.1:")


async def test_a_kernel_on_each_executes_where_it_should(
        local_front: Server, remote: Server, client: httpx.AsyncClient) -> None:
    """A local kernel runs in the child's process group and the front's working directory, a
    gpu kernel on the remote (in the remote's directory); neither sees the local token or the
    remote's token variable."""
    await both_listed(client)
    local = await run_where(local_front, client, "local:python3")
    gpu = await run_where(local_front, client, "python3")
    [child] = child_pids(local_front)
    assert local["pgid"] == child
    assert Path(local["cwd"]) == local_front.workdir
    assert gpu["pid"] not in descendants(local_front.process.pid)  # type: ignore[union-attr]
    assert Path(gpu["cwd"]) == remote.workdir
    for where in (local, gpu):
        assert TOKEN_VARIABLE not in where["env"]
    assert "REMOTE_KERNELS_TOKEN" not in local["env"]


async def test_local_token_is_kept_off_command_lines_and_logs(
        local_front: Server, remote: Server, client: httpx.AsyncClient) -> None:
    """The child's token comes by environment: it is not on the child's command line nor in
    the front's log (the child's own 'Server running ...?token=' line is scrubbed), and the
    child does not inherit the remote's token."""
    await both_listed(client)
    [child] = child_pids(local_front)
    environ = dict(item.split(b"=", 1) for item in _read(f"/proc/{child}/environ").split(b"\0")
                   if b"=" in item)
    token = environ[TOKEN_VARIABLE.encode()]
    assert len(token) >= 32
    assert token not in _read(f"/proc/{child}/cmdline")
    log = local_front.log_path.read_bytes()
    assert b"Server running" in log and b"?token=[token]" in log
    assert token not in log
    assert b"REMOTE_KERNELS_TOKEN" not in _read(f"/proc/{child}/environ")
    assert remote.token.encode() not in _read(f"/proc/{child}/environ")


async def test_killed_local_server_is_restarted_and_serves_new_kernels(
        local_front: Server, client: httpx.AsyncClient) -> None:
    """SIGKILL of the child: its kernels end with it (the old kernel is 404), the front logs
    the exit and counts the restart in its metrics, starts a new child, and a new local
    kernel executes."""
    await both_listed(client)
    before = await run_where(local_front, client, "local:python3")
    [child] = child_pids(local_front)
    os.kill(child, signal.SIGKILL)
    await wait_until(lambda: child_pids(local_front) not in ([], [child]), 60,
                     "a new local kernel server")
    await wait_until(lambda: not alive(before["pid"]), 10, "the killed server's kernel gone")
    await wait_until(lambda: b"Local kernel server exited; restarting" in
                     local_front.log_path.read_bytes(), 10, "the exit logged")
    with anyio.fail_after(90):
        while True:
            try:
                after = await run_where(local_front, client, "local:python3", "after.ipynb")
                break
            except (AssertionError, InvalidStatus):  # 503 until the new child answers
                await anyio.sleep(0.5)
    assert after["pgid"] == child_pids(local_front)[0] != child
    assert after["pid"] != before["pid"]
    old_kernel = before["session"]["kernel"]["id"]
    gone = await client.get(f"/api/kernels/{old_kernel}")  # dead, as JupyterLab reads it
    assert gone.status_code == 200 and gone.json()["execution_state"] == "dead", gone.text
    metrics = (await client.get("/metrics")).text
    restarts = [float(line.split()[1]) for line in metrics.splitlines()
                if line.startswith("remote_kernels_local_restarts_total ")]
    assert restarts and restarts[0] >= 1, metrics[-1500:]


async def test_listings_answer_200_while_the_local_server_restarts(
        local_front: Server, client: httpx.AsyncClient) -> None:
    """SIGKILL of the child while sessions on both hosts (their kernels never on a socket)
    are polled: GET /api/sessions and /api/kernels answer 200 every time, promptly, until
    the new child is healthy again (never a 500 for a `last_activity` the front lacks)."""
    await both_listed(client)
    for kernel, path in (("local:python3", "polled-local.ipynb"), ("python3", "polled.ipynb")):
        response = await client.post("/api/sessions", json={
            "path": path, "type": "notebook", "name": "", "kernel": {"name": kernel}})
        assert response.status_code == 201, response.text
    [child] = child_pids(local_front)
    os.kill(child, signal.SIGKILL)
    answers: list[tuple[str, int, float]] = []
    with anyio.fail_after(90):
        while True:
            for path in ("/api/sessions", "/api/kernels"):
                started = time.perf_counter()
                response = await client.get(path)
                answers.append((path, response.status_code, time.perf_counter() - started))
            remotes = {r["name"]: r for r in
                       (await client.get("/api/status")).json()["remotes"]}
            if child_pids(local_front) not in ([], [child]) and remotes["local"]["healthy"] \
                    and remotes["local"]["reachable"]:
                break
            await anyio.sleep(0.1)
    assert {status for _, status, _ in answers} == {200}, answers
    assert max(seconds for _, _, seconds in answers) < 5, answers  # connect_timeout


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
async def test_front_gone_leaves_no_local_server_or_kernel(
        remote: Server, tmp_path: Path, how: signal.Signals) -> None:
    """When the front stops (SIGTERM) or is killed (SIGKILL: the child sees its stdin close),
    the child's process group, kernels included, is gone, and so is its state directory."""
    front = start_front(tmp_path, remote)
    try:
        async with logged_in(front) as client:
            await both_listed(client)
            kernel = await run_where(front, client, "local:python3")
        [child] = child_pids(front)
        assert kernel["pid"] in group_members(child)
        state_dir = state_dir_of(child)
        assert state_dir.is_dir()
        assert front.process is not None
        os.kill(front.process.pid, how)
        await anyio.to_thread.run_sync(front.process.wait, 30)
        if how == signal.SIGTERM:
            assert front.process.returncode == 0, front.log_tail()
        await wait_until(lambda: not group_members(child), 15, "the local group ended")
        assert not alive(kernel["pid"])
        await wait_until(lambda: not state_dir.exists(), 10, "the state directory removed")
    finally:
        front.stop()


def test_local_name_must_not_clash_with_a_remote() -> None:
    """local_name equal to a remote's name, or a bad port, fails start-up naming the option."""
    with pytest.raises(ValueError, match=r"remote_kernels\.local_name 'gpu' is already"):
        load_config({"url": "http://gpu:8002", "remote_name": "gpu", "local_kernels": "true",
                     "local_name": "gpu"})
    with pytest.raises(ValueError,
                       match=r"remote_kernels\.local_port must be less than or equal to 65535"):
        load_config({"local_kernels": "true", "local_port": "70000"})
    assert load_config({"local_kernels": "true"}).all_remotes() == []


async def test_local_server_that_cannot_start_is_retried_with_backoff(
        remote: Server, tmp_path: Path) -> None:
    """A local port in use (the child logs its failure and hangs): the front still starts and
    serves the remote's kernels, reports `local` unreachable, kills the child that does not
    answer within local_start_timeout and starts it again with a growing, logged backoff."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: in use, and refuses connections
        port = taken.getsockname()[1]
        front = front_server(tmp_path, remote.url, remote.token, extra=[
            "--set", "remote_kernels.remote_name=gpu",
            "--set", "remote_kernels.local_kernels=true",
            "--set", f"remote_kernels.local_port={port}",
            "--set", "remote_kernels.local_start_timeout=3",
        ]).start()
        try:
            async with logged_in(front) as client:
                specs = (await client.get("/api/kernelspecs")).json()["kernelspecs"]
                assert list(specs) == ["python3"]
                remotes = {r["name"]: r for r in
                           (await client.get("/api/status")).json()["remotes"]}
                assert remotes["gpu"]["reachable"] and not remotes["local"]["reachable"]
            await wait_until(lambda: b"restart_in=2.0" in front.log_path.read_bytes(), 60,
                             "a second restart, after a longer wait")
            log = front.log_path.read_text()
            assert "Local kernel server exited; restarting it" in log
            assert "restart_in=1.0" in log
            assert "Local kernel server did not answer in time: killing it" in log
        finally:
            front.stop()
