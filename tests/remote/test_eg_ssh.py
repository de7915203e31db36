"""Enterprise Gateway's DistributedProcessProxy for real: kernels launched over SSH on a list
of hosts (round robin), behind a front.

The hosts are loopback addresses (127.0.0.2, 127.0.0.3) served by one real sshd started here
(tests/support/sshd.py) with a key made here; Enterprise Gateway 3.3 (`.venv-eg/`) reaches them with
paramiko and runs our own launcher (tests/support/eg_launcher/launch_ipykernel.py: the PyPI wheel
ships none), which starts an ipykernel bound to the address it was reached on and reports
its connection info back to EG, encrypted, as EG's launchers do.
"""

from __future__ import annotations

import json
import os
import re
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from tests.support.harness import logged_in, wait_until
from tests.support.kernel_client import KernelConnection
from tests.support.servers import (
    EG_VENV,
    Server,
    enterprise_gateway_remote,
    free_port,
    front_server,
)
from tests.support.sshd import SshHosts, sshd_unavailable

HOSTS = ["127.0.0.2", "127.0.0.3"]
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(sshd_unavailable(HOSTS) is not None, reason=str(sshd_unavailable(HOSTS))),
]
LAUNCHER = Path(__file__).parents[1] / "support" / "eg_launcher" / "launch_ipykernel.py"
KERNELSPEC = "python_ssh"
DISTRIBUTED = "enterprise_gateway.services.processproxies.distributed.DistributedProcessProxy"


@dataclass
class Deployment:
    ssh: SshHosts
    gateway: Server
    front: Server
    marker: str  # in the environment of every process the kernelspec starts
    kernel_logs: Path


def write_kernelspec(root: Path, marker: str) -> None:
    spec = root / "kernels" / KERNELSPEC
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "display_name": "Python on the SSH hosts",
        "language": "python",
        "argv": [str(EG_VENV / "bin" / "python"), str(LAUNCHER),
                 "--RemoteProcessProxy.kernel-id", "{kernel_id}",
                 "--RemoteProcessProxy.response-address", "{response_address}",
                 "--RemoteProcessProxy.public-key", "{public_key}",
                 "--RemoteProcessProxy.port-range", "{port_range}"],
        # EG exports the kernelspec's env in the command it runs over SSH.
        "env": {"EG_SSH_TEST_RUN": marker},
        "metadata": {"process_proxy": {"class_name": DISTRIBUTED}},
    }))


def processes_with(marker: str) -> list[int]:
    """The processes whose environment holds `marker`: launchers and kernels of this run."""
    needle = f"EG_SSH_TEST_RUN={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def ssh(tmp_path_factory: pytest.TempPathFactory,
        monkeypatch_module: pytest.MonkeyPatch) -> Iterator[SshHosts]:
    """One sshd on 127.0.0.2 and 127.0.0.3, the same port on both."""
    # EG exports its whole environment in the remote command: an SSH_CONNECTION of the test
    # runner's own session would replace the one sshd gives the kernel's session.
    for name in ("SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY", "SSH_AUTH_SOCK"):
        monkeypatch_module.delenv(name, raising=False)
    hosts = SshHosts(tmp_path_factory.mktemp("ssh"), HOSTS).start()
    refused = hosts.login_refused()
    if refused is not None:
        hosts.stop()
        pytest.skip(refused)
    yield hosts
    hosts.stop()


@contextmanager
def deployed(workdir: Path, ssh: SshHosts, hosts: list[str],
             env: dict[str, str] | None = None) -> Iterator[Deployment]:
    """Enterprise Gateway with DistributedProcessProxy over `hosts` (and `env`), and a front
    before it. Ends whatever the kernelspec started, even when a test fails."""
    marker = uuid.uuid4().hex
    write_kernelspec(workdir / "jupyter-path", marker)
    kernel_logs = workdir / "kernel-logs"
    kernel_logs.mkdir()
    gateway = enterprise_gateway_remote(workdir / "eg", extra=[
        "--EnterpriseGatewayApp.log_level=INFO"])
    gateway.env.update({
        "JUPYTER_PATH": str(workdir / "jupyter-path"),
        "EG_REMOTE_HOSTS": ",".join(hosts),
        "EG_SSH_PORT": str(ssh.port),
        "EG_REMOTE_USER": ssh.user,
        # paramiko reads the client key and known_hosts from ~/.ssh, and refuses unknown hosts.
        "HOME": str(ssh.client_home),
        # EG listens for the launchers' answers on its first public address unless told.
        "EG_RESPONSE_IP": "127.0.0.1",
        "EG_RESPONSE_PORT": str(free_port()),
        "EG_KERNEL_LOG_DIR": str(kernel_logs),
        **(env or {}),
    })
    front: Server | None = None
    try:
        gateway.start()
        front = front_server(workdir / "front", gateway.url, gateway.token, extra=[
            "--set", "remote_kernels.kind=enterprise_gateway"]).start()
        yield Deployment(ssh, gateway, front, marker, kernel_logs)
    finally:
        if front is not None:
            front.stop()
        gateway.stop()
        for pid in processes_with(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, ssh: SshHosts
               ) -> Iterator[Deployment]:
    with deployed(tmp_path_factory.mktemp("eg-ssh"), ssh, HOSTS) as deployment:
        yield deployment


def ws_url(front: Server, kernel_id: str) -> str:
    return f"ws://127.0.0.1:{front.port}/api/kernels/{kernel_id}/channels"

async def ssh_host_of(front: Server, cookie: str, kernel_id: str) -> str:
    """The address of the SSH host a kernel runs on, as the kernel itself sees it (sshd sets
    SSH_CONNECTION: "client_ip client_port server_ip server_port")."""
    conn = await KernelConnection.open(ws_url(front, kernel_id), cookie=cookie)
    try:
        execution = await conn.execute(
            "import os; print(os.environ['SSH_CONNECTION'].split()[2])")
    finally:
        await conn.close()
    assert execution.reply is not None
    assert execution.reply["content"]["status"] == "ok", execution.reply["content"]
    return execution.stdout.strip()



async def test_kernels_go_round_robin_over_the_ssh_hosts_and_end_with_their_sessions(
        deployment: Deployment) -> None:
    """Two kernels started through the front run one on each SSH host, execute there, and
    leave no launcher or kernel process behind once their sessions are deleted."""
    front, marker = deployment.front, deployment.marker
    logins_before = {host: deployment.ssh.connections_on(host) for host in HOSTS}
    async with logged_in(front) as client:
        sessions = []
        for i in range(2):
            created = await client.post("/api/sessions", json={
                "path": f"ssh{i}.ipynb", "type": "notebook", "kernel": {"name": KERNELSPEC}})
            assert created.status_code == 201, created.text
            sessions.append(created.json())
        cookie = f"fastapiusersauth={client.cookies['fastapiusersauth']}"
        host_of = {}
        for session in sessions:
            kernel_id = session["kernel"]["id"]
            host_of[kernel_id] = await ssh_host_of(front, cookie, kernel_id)
        assert sorted(host_of.values()) == HOSTS
        eg_log = deployment.gateway.log_path.read_text(errors="replace")
        for kernel_id, host in host_of.items():
            launched = [line for line in eg_log.splitlines()
                        if "Kernel launched on" in line and f"ID: {kernel_id}" in line]
            assert len(launched) == 1 and f"Kernel launched on '{host}'" in launched[0], launched
            assert deployment.ssh.connections_on(host) > logins_before[host]
        assert len(processes_with(marker)) == 4  # a launcher and its kernel, twice

        for session in sessions:
            deleted = await client.delete(f"/api/sessions/{session['id']}")
            assert deleted.status_code == 204, deleted.text
        await wait_until(lambda: not processes_with(marker), 30,
                         "the launchers and kernels on the SSH hosts ended")
        for kernel_id in host_of:  # each launcher ended its kernel and itself (no SIGKILL)
            log = (deployment.kernel_logs / f"kernel-{kernel_id}.log").read_text()
            assert log.rstrip().endswith(f"launcher: kernel {kernel_id} ended"), log
        listed = await client.get("/api/sessions")
        assert listed.json() == []


async def test_a_kernel_started_with_kernel_remote_host_runs_on_that_host(
        deployment: Deployment) -> None:
    """`KERNEL_REMOTE_HOST` in a start's `env`, passed on by the front, picks the SSH host
    instead of round robin."""
    front = deployment.front
    async with logged_in(front) as client:
        cookie = f"fastapiusersauth={client.cookies['fastapiusersauth']}"
        for host in (HOSTS[1], HOSTS[1]):  # twice the same: round robin would alternate
            created = await client.post("/api/kernels", json={
                "name": KERNELSPEC, "env": {"KERNEL_REMOTE_HOST": host}})
            assert created.status_code == 201, created.text
            kernel_id = created.json()["id"]
            assert await ssh_host_of(front, cookie, kernel_id) == host
            deleted = await client.delete(f"/api/kernels/{kernel_id}")
            assert deleted.status_code == 204, deleted.text
        await wait_until(lambda: not processes_with(deployment.marker), 30,
                         "the pinned kernels' processes ended")


async def test_an_interrupt_through_the_front_reaches_a_kernel_on_an_ssh_host(
        deployment: Deployment) -> None:
    """An interrupt sent to the front stops a running cell of a kernel on an SSH host
    (EG signals the launcher over its comm port, the launcher the kernel)."""
    front = deployment.front
    async with logged_in(front) as client:
        created = await client.post("/api/kernels", json={"name": KERNELSPEC})
        assert created.status_code == 201, created.text
        kernel_id = created.json()["id"]
        cookie = f"fastapiusersauth={client.cookies['fastapiusersauth']}"
        conn = await KernelConnection.open(ws_url(front, kernel_id), cookie=cookie)
        try:
            msg_id = await conn.request("execute_request", {
                "code": "import time; print('sleeping', flush=True); time.sleep(60)",
                "silent": False, "store_history": False, "user_expressions": {},
                "allow_stdin": False, "stop_on_error": True})
            stream = await conn.wait_for("stream", 30, parent=msg_id)
            assert stream["content"]["text"] == "sleeping\n"
            interrupted = await client.post(f"/api/kernels/{kernel_id}/interrupt")
            assert interrupted.status_code == 204, interrupted.text
            reply = await conn.wait_for("execute_reply", 30, parent=msg_id)
            assert reply["content"]["status"] == "error"
            assert reply["content"]["ename"] == "KeyboardInterrupt"
        finally:
            await conn.close()
        deleted = await client.delete(f"/api/kernels/{kernel_id}")
        assert deleted.status_code == 204, deleted.text
        await wait_until(lambda: not processes_with(deployment.marker), 30,
                         "the interrupted kernel's processes ended")


async def test_a_kernel_host_without_sshd_is_answered_at_once_and_the_next_start_goes_on(
        ssh: SshHosts, tmp_path: Path) -> None:
    """A start that EG places on a host where SSH is refused is answered 502 naming that
    host, well before the launch timeout; the next start (round robin) runs on the live host."""
    dead = "127.0.0.4"  # no sshd there
    with deployed(tmp_path, ssh, [dead, HOSTS[0]]) as deployment:
        async with logged_in(deployment.front) as client:
            with anyio.fail_after(30):  # the launch timeout is 120 s
                refused = await client.post("/api/kernels", json={"name": KERNELSPEC})
            assert refused.status_code == 502, refused.text
            # EG 3.3 words every SSH failure (here: connection refused) as an authentication
            # failure; the host it chose is named.
            assert f"Failure occurred starting kernel on '{dead}'" in refused.json()["message"]
            started = await client.post("/api/kernels", json={"name": KERNELSPEC})
            assert started.status_code == 201, started.text
            kernel_id = started.json()["id"]
            cookie = f"fastapiusersauth={client.cookies['fastapiusersauth']}"
            assert await ssh_host_of(deployment.front, cookie, kernel_id) == HOSTS[0]
            deleted = await client.delete(f"/api/kernels/{kernel_id}")
            assert deleted.status_code == 204, deleted.text
            await wait_until(lambda: not processes_with(deployment.marker), 30,
                             "the kernel's processes ended")


async def test_the_kernel_ports_stay_in_enterprise_gateways_port_range(
        ssh: SshHosts, tmp_path: Path) -> None:
    """With `EG_PORT_RANGE`, the kernel on the SSH host listens (five ports and the launcher's
    comm port) only within that range."""
    # EG wants upper - lower >= 1000; a smaller range fails every start with an opaque 500.
    lower, upper = 42000, 43000
    with deployed(tmp_path, ssh, HOSTS, {"EG_PORT_RANGE": f"{lower}..{upper}"}) as deployment:
        async with logged_in(deployment.front) as client:
            started = await client.post("/api/kernels", json={"name": KERNELSPEC})
            assert started.status_code == 201, started.text
            kernel_id = started.json()["id"]
            cookie = f"fastapiusersauth={client.cookies['fastapiusersauth']}"
            conn = await KernelConnection.open(ws_url(deployment.front, kernel_id),
                                               cookie=cookie)
            try:
                execution = await conn.execute(
                    "from ipykernel.connect import get_connection_info\n"
                    "print(get_connection_info())")  # the kernel's own connection file
            finally:
                await conn.close()
            assert execution.reply is not None
            assert execution.reply["content"]["status"] == "ok", execution.reply["content"]
            info = json.loads(execution.stdout)
            ports = [info[f"{name}_port"] for name in
                     ("shell", "iopub", "stdin", "hb", "control")]
            assert all(lower <= port <= upper for port in ports), ports
            log = (deployment.kernel_logs / f"kernel-{kernel_id}.log").read_text()
            comm_port = re.search(r"comm port (\d+)", log)
            assert comm_port is not None and lower <= int(comm_port[1]) <= upper, log
            deleted = await client.delete(f"/api/kernels/{kernel_id}")
            assert deleted.status_code == 204, deleted.text
