"""The front reaches a remote through the environment's forward proxy, for REST and for the
kernel WebSocket alike, with a real proxy (tinyproxy, Debian's package).

The remote is named by a host name that only the proxy can resolve (tinyproxy runs in a
mount namespace of its own with an /etc/hosts that names it), as when the kernel host is
reachable only through a corporate proxy: a kernel socket that bypassed the proxy would fail
to resolve the name, as every cell did before ("Connecting" for ever).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest

from fps_remote_kernels.remote.proxy import Proxy, ProxyError, proxy_for
from tests.conftest import cookie_header, ws_url
from tests.support.harness import logged_in
from tests.support.kernel_client import KernelConnection
from tests.support.servers import Server, free_port, front_server

pytestmark = pytest.mark.anyio

PROXIED_NAME = "kernel-host.proxied.test"
USER, PASSWORD = "front", "proxy-secret"


@dataclass
class ForwardProxy:
    url: str  # with credentials, as HTTP_PROXY holds it
    log: Path
    process: subprocess.Popen[bytes]


def can_run_tinyproxy() -> str | None:
    if shutil.which("tinyproxy") is None or shutil.which("unshare") is None:
        return "tinyproxy or unshare missing (scripts/setup.sh installs tinyproxy)"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    return None if probe.returncode == 0 else "no mount namespaces here (needs root)"


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def start_tinyproxy(workdir: Path, *, connect_ports: list[int] | None = None) -> ForwardProxy:
    """tinyproxy on a free loopback port, with basic auth, resolving PROXIED_NAME to
    127.0.0.1; `connect_ports`: the only ports it tunnels to (CONNECT), all if None."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    hosts = workdir / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n127.0.0.1 {PROXIED_NAME}\n")
    log = workdir / "tinyproxy.log"
    config = workdir / "tinyproxy.conf"
    config.write_text("\n".join([
        f"Port {port}", "Listen 127.0.0.1", "Timeout 120", "MaxClients 200",
        "Allow 127.0.0.1", "LogLevel Connect", f'LogFile "{log}"',
        f"BasicAuth {USER} {PASSWORD}", "DisableViaHeader Yes",
        *[f"ConnectPort {p}" for p in connect_ports or []],
    ]) + "\n")
    os.chmod(workdir, 0o777)
    script = f'mount --bind "{hosts}" /etc/hosts && exec tinyproxy -d -c "{config}"'
    process = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                script], stdout=(workdir / "stdout.log").open("wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 20
    try:
        while not accepts(port):
            assert process.poll() is None, (workdir / "stdout.log").read_text()
            assert time.monotonic() < deadline, "tinyproxy did not start"
            time.sleep(0.05)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return ForwardProxy(f"http://{USER}:{PASSWORD}@127.0.0.1:{port}", log, process)


@pytest.fixture
def forward_proxy(tmp_path: Path) -> Iterator[ForwardProxy]:
    reason = can_run_tinyproxy()
    if reason:
        pytest.skip(reason)
    proxy = start_tinyproxy(tmp_path / "proxy")
    yield proxy
    os.killpg(proxy.process.pid, signal.SIGKILL)


def proxied_front(remote: Server, proxy_url: str, workdir: Path) -> Server:
    """A front whose remote is named PROXIED_NAME, with HTTP_PROXY set as operators set it."""
    front = front_server(workdir, f"http://{PROXIED_NAME}:{remote.port}/", remote.token)
    front.env.update({"HTTP_PROXY": proxy_url, "NO_PROXY": "", "no_proxy": ""})
    return front.start()


async def start_kernel(client: httpx.AsyncClient) -> str:
    started = await client.post("/api/kernels", json={"name": "python3"})
    assert started.status_code == 201, started.text
    return str(started.json()["id"])


async def test_kernel_socket_goes_through_the_environments_proxy(
        remote: Server, forward_proxy: ForwardProxy, tmp_path: Path) -> None:
    """With HTTP_PROXY set (credentials in its URL), a remote only the proxy resolves serves
    kernels through the front: started over REST, and a cell runs on its kernel socket,
    tunnelled by CONNECT."""
    front = proxied_front(remote, forward_proxy.url, tmp_path / "front")
    try:
        async with logged_in(front) as client:
            kernel_id = await start_kernel(client)
            conn = await KernelConnection.open(ws_url(front, kernel_id),
                                               cookie=cookie_header(client))
            try:
                with anyio.fail_after(60):
                    assert (await conn.execute("print(6 * 7)")).stdout == "42\n"
            finally:
                await conn.close()
            status = (await client.get("/api/status")).json()
            assert status["remote"]["kernel_socket_error"] is None
            await client.delete(f"/api/kernels/{kernel_id}")
        assert f"CONNECT {PROXIED_NAME}:{remote.port}" in forward_proxy.log.read_text() \
            or f"{PROXIED_NAME}:{remote.port}" in forward_proxy.log.read_text()
        assert PASSWORD not in front.log_path.read_text()
    finally:
        front.stop()


async def test_a_kernel_socket_the_proxy_refuses_is_reported(
        remote: Server, tmp_path: Path) -> None:
    """A proxy that forwards REST but refuses to tunnel to the remote's port: the socket is
    refused with 503 and a message naming the proxy (never its password), and /api/status
    says the kernel socket failed while REST answers."""
    reason = can_run_tinyproxy()
    if reason:
        pytest.skip(reason)
    proxy = start_tinyproxy(tmp_path / "proxy", connect_ports=[443])
    front = proxied_front(remote, proxy.url, tmp_path / "front")
    try:
        async with logged_in(front) as client:
            kernel_id = await start_kernel(client)
            with pytest.raises(Exception) as refused:
                await KernelConnection.open(ws_url(front, kernel_id),
                                            cookie=cookie_header(client))
            assert "503" in str(refused.value) or "1011" in str(refused.value), refused.value
            status = (await client.get("/api/status")).json()
            assert status["remote"]["reachable"] is True
            problem = status["remote"]["kernel_socket_error"]
            assert problem and "refused the tunnel" in problem, status
            assert PASSWORD not in str(status)
            await client.delete(f"/api/kernels/{kernel_id}")
    finally:
        front.stop()
        os.killpg(proxy.process.pid, signal.SIGKILL)


@pytest.mark.fast
@pytest.mark.parametrize(("env", "url", "expected"), [
    ({"HTTP_PROXY": "http://p:3128"}, "ws://gpu-box:8002/", ("p", 3128)),
    ({"HTTPS_PROXY": "http://p:3128"}, "wss://gpu-box:8002/", ("p", 3128)),
    ({"HTTPS_PROXY": "http://p:3128"}, "ws://gpu-box:8002/", None),
    ({"ALL_PROXY": "http://p:1"}, "ws://gpu-box/", ("p", 1)),
    ({"http_proxy": "http://low:2", "HTTP_PROXY": "http://up:1"}, "ws://gpu-box/", ("low", 2)),
    ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "gpu-box"}, "ws://gpu-box:8002/", None),
    ({"HTTP_PROXY": "http://p:1", "NO_PROXY": ".cluster"}, "ws://a.cluster/", None),
    ({"HTTP_PROXY": "http://p:1", "no_proxy": "*"}, "ws://gpu-box/", None),
    ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "box"}, "ws://gpu-box/", ("p", 1)),
    ({}, "ws://gpu-box/", None),
])
def test_the_proxy_is_chosen_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                  env: dict[str, str], url: str,
                                                  expected: tuple[str, int] | None) -> None:
    """ws:// takes HTTP_PROXY, wss:// HTTPS_PROXY, ALL_PROXY otherwise, lower case first;
    NO_PROXY names hosts and domains that connect directly."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    proxy = proxy_for(url)
    assert (None if proxy is None else (proxy.host, proxy.port)) == expected


@pytest.mark.fast
def test_proxy_credentials_become_basic_auth_and_stay_out_of_its_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials in the proxy URL (percent-encoded) go as Basic auth; its name has none;
    a proxy that is not http:// is refused with a clear error, not bypassed."""
    monkeypatch.setenv("HTTP_PROXY", "http://me:p%40ss@proxy.example:8080")
    proxy = proxy_for("ws://gpu-box/")
    assert proxy == Proxy("proxy.example", 8080, "Basic bWU6cEBzcw==",
                          "http://proxy.example:8080")
    monkeypatch.setenv("HTTP_PROXY", "socks5://proxy.example:1080")
    with pytest.raises(ProxyError, match="not an http:// proxy"):
        proxy_for("ws://gpu-box/")
