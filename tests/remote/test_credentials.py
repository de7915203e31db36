"""The front's credentials to a remote as deployments hand them out: an auth scheme (Bearer),
a custom header, HTTP basic auth in front of the gateway, a token file that rotates."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from tests.conftest import ws_url
from tests.support.fault_proxy import BackgroundLoop, FaultProxy
from tests.support.http_proxy import AFFINITY_COOKIE, _Head, checking_proxy, sticky_proxy
from tests.support.kernel_client import KernelConnection
from tests.support.servers import (
    Server,
    enterprise_gateway_remote,
    front_server,
    jupyter_server_remote,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def jupyter_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = jupyter_server_remote(tmp_path_factory.mktemp("js")).start()
    yield server
    server.stop()


@asynccontextmanager
async def logged_in(front: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=front.url, timeout=60) as client:
        await client.get("/api/status", params={"token": front.token})
        yield client


async def start_and_execute(front: Server, client: httpx.AsyncClient) -> httpx.Response:
    """Start a kernel through the front and execute on its socket; the start's answer."""
    response = await client.post("/api/kernels", json={"name": "python3"})
    assert response.status_code == 201, response.text
    cookie = f"fastapiusersauth={client.cookies['fastapiusersauth']}"
    conn = await KernelConnection.open(ws_url(front, response.json()["id"]), cookie=cookie)
    try:
        assert (await conn.execute("print(6 * 7)")).stdout == "42\n"
    finally:
        await conn.close()
    return response


async def run_a_kernel(front: Server, client: httpx.AsyncClient) -> None:
    """Start a kernel through the front, execute on its socket, shut it down."""
    kernel_id = (await start_and_execute(front, client)).json()["id"]
    assert (await client.delete(f"/api/kernels/{kernel_id}")).status_code == 204


async def test_bearer_scheme_is_sent_and_accepted(
    jupyter_remote: Server, loop: BackgroundLoop, tmp_path: Path
) -> None:
    """With auth_scheme=Bearer the remote gets `Authorization: Bearer <t>` on REST and on the
    kernel WebSocket handshake, and a real jupyter_server accepts it."""
    proxy = FaultProxy(jupyter_remote.port, loop=loop)
    front = front_server(tmp_path, proxy.url, jupyter_remote.token, extra=[
        "--set", "remote_kernels.kind=jupyter_server",
        "--set", "remote_kernels.auth_scheme=Bearer"]).start()
    try:
        async with logged_in(front) as client:
            await run_a_kernel(front, client)
        sent = {r.header("authorization") for r in proxy.requests}
        assert sent == {f"Bearer {jupyter_remote.token}"}
        assert any(r.header("upgrade") for r in proxy.requests), "no WebSocket handshake seen"
    finally:
        front.stop()
        proxy.close()


async def test_basic_auth_and_a_custom_token_header_pass_a_checking_gateway(
    jupyter_remote: Server, loop: BackgroundLoop, tmp_path: Path
) -> None:
    """Behind a Knox-like proxy that wants basic auth and the token in X-Gateway-Token, every
    request and the kernel handshake pass; the password and token stay out of the log."""
    password = "knox-" + os.urandom(8).hex()
    basic = "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()
    token = "gw-" + os.urandom(8).hex()
    proxy = checking_proxy(jupyter_remote.port, loop=loop, remote_token=jupyter_remote.token,
                           required={"Authorization": basic, "X-Gateway-Token": token})
    front = front_server(tmp_path, proxy.url, token, extra=[
        "--set", "remote_kernels.kind=jupyter_server",
        "--set", "remote_kernels.auth_header=X-Gateway-Token",
        "--set", "remote_kernels.auth_scheme=",
        "--set", "remote_kernels.http_user=alice",
        "--set", "remote_kernels.http_pwd_env=KNOX_PASSWORD",
        "--debug"])
    front.env["KNOX_PASSWORD"] = password
    front.start()
    try:
        async with logged_in(front) as client:
            await run_a_kernel(front, client)
        assert proxy.refused == [], "the gateway refused some of the front's requests"
        assert any("channels" in r.target for r in proxy.routed)
        log = front.log_path.read_text(errors="replace")
        assert password not in log and token not in log
        assert base64.b64encode(f"alice:{password}".encode()).decode() not in log
    finally:
        front.stop()
        proxy.close()


async def test_without_the_basic_auth_the_checking_gateway_refusal_is_named(
    jupyter_remote: Server, loop: BackgroundLoop, tmp_path: Path
) -> None:
    """The same gateway refuses a front without http_user: 502 naming the credentials, and
    the token is not in the answer."""
    token = "gw-" + os.urandom(8).hex()
    proxy = checking_proxy(jupyter_remote.port, loop=loop, remote_token=jupyter_remote.token,
                           required={"Authorization": "Basic x", "X-Gateway-Token": token})
    front = front_server(tmp_path, proxy.url, token, extra=[
        "--set", "remote_kernels.kind=jupyter_server",
        "--set", "remote_kernels.auth_header=X-Gateway-Token"]).start()
    try:
        async with logged_in(front) as client:
            response = await client.get("/api/kernels")
        assert response.status_code == 502
        assert "refused the front's credentials" in response.json()["message"]
        assert token not in response.text
    finally:
        front.stop()
        proxy.close()


async def test_token_file_rotation_with_a_restarted_remote(
    tmp_path: Path
) -> None:
    """A remote restarted with a new token: a token file rewritten with its new content (same
    size and modification time: unseen until refused) is re-read after the refusal and the
    request retried once; a later rewrite is picked up from its modification time."""
    first = jupyter_server_remote(tmp_path / "js1").start()
    token_file = tmp_path / "token"
    token_file.write_text(first.token + "\n")
    front = front_server(tmp_path / "front", first.url, "not-the-token", extra=[
        "--set", "remote_kernels.kind=jupyter_server",
        "--set", f"remote_kernels.token_file={token_file}"]).start()
    second: Server | None = None
    third: Server | None = None
    try:
        async with logged_in(front) as client:
            assert (await client.get("/api/kernels")).status_code == 200
            first.stop()
            second = jupyter_server_remote(tmp_path / "js2", port=first.port).start()
            stamp = token_file.stat()
            token_file.write_text(second.token + "\n")  # same length: both are 32 hex digits
            os.utime(token_file, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
            response = await client.get("/api/kernels")
            assert response.status_code == 200, response.text
            second.stop()
            third = jupyter_server_remote(tmp_path / "js3", port=first.port).start()
            token_file.write_text(third.token + "\n")
            later = stamp.st_mtime_ns + 5_000_000_000
            os.utime(token_file, ns=(later, later))
            with anyio.fail_after(30):
                response = await client.get("/api/kernels")
            assert response.status_code == 200, response.text
        log = front.log_path.read_text(errors="replace")
        assert "The remote's token file changed" in log
        for server in (first, second, third):
            assert server.token not in log
    finally:
        front.stop()
        for server in (second, third):
            if server is not None:
                server.stop()


async def test_every_call_of_a_kernel_lands_on_the_replica_its_affinity_cookie_names(
    loop: BackgroundLoop, tmp_path: Path
) -> None:
    """Behind a sticky balancer over two real jupyter_server replicas, the front carries the
    affinity cookie back on REST and on the kernel WebSocket handshake: start, execute over
    the socket, restart and delete all reach the replica that started the kernel; the
    browser never sees the cookie."""
    replicas = [jupyter_server_remote(tmp_path / f"r{i}").start() for i in range(2)]

    def replica_token(head: _Head, replica: int) -> None:
        head.remove("authorization")
        head.headers.append(("Authorization", f"token {replicas[replica].token}"))

    proxy = sticky_proxy([r.port for r in replicas], loop=loop, rewrite=replica_token)
    front = front_server(tmp_path / "front", proxy.url, "balancer", extra=[
        "--set", "remote_kernels.kind=jupyter_server"]).start()
    try:
        async with logged_in(front) as client:
            response = await start_and_execute(front, client)
            assert AFFINITY_COOKIE not in response.headers.get("set-cookie", "")
            kernel_id = response.json()["id"]
            restart = await client.post(f"/api/kernels/{kernel_id}/restart")
            assert restart.status_code == 200, restart.text
            assert (await client.delete(f"/api/kernels/{kernel_id}")).status_code == 204
        calls = [r for r in proxy.routed if kernel_id in r.target]
        assert any("channels" in r.target for r in calls)
        assert all(r.cookie and AFFINITY_COOKIE in r.cookie for r in calls)
        assert len({r.replica for r in calls}) == 1, [(r.replica, r.target) for r in calls]
    finally:
        front.stop()
        proxy.close()
        for replica in replicas:
            replica.stop()


async def test_a_gateway_refusing_the_kernel_user_names_the_front_option(
    tmp_path: Path
) -> None:
    """Enterprise Gateway refuses KERNEL_USERNAME=root (its default): the 403 the user sees
    names remote_kernels.kernel_username, next to the gateway's own words."""
    gateway = enterprise_gateway_remote(tmp_path / "eg", unauthorized_users=["root"]).start()
    front = front_server(tmp_path / "front", gateway.url, gateway.token, extra=[
        "--set", "remote_kernels.kind=enterprise_gateway",
        "--set", "remote_kernels.kernel_username=root"]).start()
    try:
        async with logged_in(front) as client:
            response = await client.post("/api/kernels", json={"name": "python3"})
        assert response.status_code == 403, response.text
        message = response.json()["message"]
        assert "User 'root' is not authorized" in message
        assert "remote_kernels.kernel_username" in message
        assert gateway.token not in response.text
    finally:
        front.stop()
        gateway.stop()


async def test_two_servers_sharing_an_auth_directory_are_named_in_the_refusal(
        tmp_path: Path) -> None:
    """A front and a Jupyverse remote on one machine that share an auth directory (Jupyverse's
    default) overwrite each other's token: the front's answer names that case, not only the
    token option."""
    from tests.support.servers import remote_server

    shared = ["--set", f"auth.directory={tmp_path / 'shared-auth'}"]
    remote = remote_server(tmp_path / "remote", extra=shared).start()
    try:
        front = front_server(tmp_path / "front", remote.url, remote.token, extra=shared).start()
        try:
            async with logged_in(front) as client:
                response = await client.get("/api/kernels")
            assert response.status_code == 502, response.text
            message = response.json()["message"]
            assert "refused the front's credentials" in message
            assert "auth.directory" in message
            assert remote.token not in response.text
        finally:
            front.stop()
    finally:
        remote.stop()
