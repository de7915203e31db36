"""A client whose connection blips (no close frame) and comes back with the same session_id
gets what the kernel sent meanwhile, in order and once, on every kind of remote; past the
grace period or the buffer's bounds the buffer is dropped, logged, and a fresh socket works.

The client reaches the front through a TCP fault proxy, which cuts its connection as a Wi-Fi
drop does: the front sees the TCP connection end without a WebSocket close frame."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import ALL_KINDS, cookie_header
from tests.support.fault_proxy import BackgroundLoop, FaultProxy
from tests.support.harness import login, wait_until
from tests.support.kernel_client import Execution, KernelConnection, make_message
from tests.support.servers import Server, front_server

pytestmark = [pytest.mark.anyio, ALL_KINDS]

LINES = 40
PAUSE = 0.1
CELL = f"import time\nfor i in range({LINES}):\n    print(i, flush=True)\n    time.sleep({PAUSE})"


@pytest.fixture(scope="module")
def replay_front(remote: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An API-only front with a short grace period and small per-session bounds."""
    server = front_server(tmp_path_factory.mktemp("replay-front"), remote.url, remote.token,
                          extra=["--set", "remote_kernels.replay_grace_period=4",
                                 "--set", "remote_kernels.replay_buffer_messages=200"]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client_proxy(loop: BackgroundLoop, replay_front: Server) -> Iterator[FaultProxy]:
    """The client's network: a TCP proxy between the client and the front."""
    proxy = FaultProxy(replay_front.port, loop=loop)
    yield proxy
    proxy.close()


@pytest.fixture
async def kernel(replay_front: Server) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    api = await login(replay_front)
    response = await api.post("/api/kernels", json={"name": "python3"})
    assert response.status_code == 201, response.text
    kernel_id = response.json()["id"]
    yield api, kernel_id
    await api.delete(f"/api/kernels/{kernel_id}")
    await api.aclose()


async def _open(proxy: FaultProxy, api: httpx.AsyncClient, kernel_id: str,
                session: str) -> KernelConnection:
    url = f"ws://127.0.0.1:{proxy.port}/api/kernels/{kernel_id}/channels"
    return await KernelConnection.open(url, cookie=cookie_header(api), session=session,
                                       open_timeout=30)


async def _numbers_until(conn: KernelConnection, parent: str, seen: list[int],
                         until_idle: bool) -> None:
    """Append the stream numbers of `parent` to `seen`; return at its idle status, or when
    the connection is cut (until_idle False)."""
    try:
        while True:
            msg = await conn.receive()
            if msg["parent_header"].get("msg_id") != parent:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                seen.extend(int(n) for n in msg["content"]["text"].split())
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return
    except (ConnectionClosed, OSError):
        if until_idle:
            raise


async def _start_cell(conn: KernelConnection) -> str:
    msg = make_message("execute_request", {
        "code": CELL, "silent": False, "store_history": False, "user_expressions": {},
        "allow_stdin": False, "stop_on_error": True}, conn.session)
    await conn.send(msg)
    return str(msg["header"]["msg_id"])


async def _cut_after_first_lines(conn: KernelConnection, proxy: FaultProxy,
                                 before: list[int]) -> str:
    """Start the numbered cell on `conn`, collect its first lines into `before`, then cut
    every connection through `proxy`; the cell's msg_id."""
    parent = await _start_cell(conn)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_numbers_until, conn, parent, before, False)
        await wait_until(lambda: len(before) >= 5, 30, "the first lines")
        proxy.cut()
    return parent


async def _blip(client_proxy: FaultProxy, api: httpx.AsyncClient, kernel_id: str,
                away_seconds: float) -> tuple[list[int], list[int]]:
    """Run the numbered cell, cut the client after a few lines, come back after
    `away_seconds` with the same session_id; the numbers seen before and after."""
    session = uuid.uuid4().hex
    conn = await _open(client_proxy, api, kernel_id, session)
    before: list[int] = []
    after: list[int] = []
    with anyio.fail_after(60):
        parent = await _cut_after_first_lines(conn, client_proxy, before)
        await anyio.sleep(away_seconds)  # the blip itself: the client is away this long
        again = await _open(client_proxy, api, kernel_id, session)
        try:
            await _numbers_until(again, parent, after, True)
        finally:
            await again.close()
    return before, after


async def test_a_blip_loses_nothing(client_proxy: FaultProxy,
                                    kernel: tuple[httpx.AsyncClient, str]) -> None:
    """Cut for 1.5 s mid-cell, back with the same session_id: every line once, in order."""
    api, kernel_id = kernel
    before, after = await _blip(client_proxy, api, kernel_id, 1.5)
    assert before + after == list(range(LINES)), (before, after)


async def test_past_the_grace_period_the_buffer_is_dropped(
        client_proxy: FaultProxy, replay_front: Server,
        kernel: tuple[httpx.AsyncClient, str]) -> None:
    """Back after the 4 s grace period: the buffer is gone (logged), the new socket works."""
    api, kernel_id = kernel
    session = uuid.uuid4().hex
    conn = await _open(client_proxy, api, kernel_id, session)
    before: list[int] = []
    with anyio.fail_after(60):
        parent = await _cut_after_first_lines(conn, client_proxy, before)
        await wait_until(lambda: "grace period ended" in replay_front.log_tail(400), 20,
                         "the front dropped the buffer at the end of the grace period")
        again = await _open(client_proxy, api, kernel_id, session)
        try:
            msg_id = await again.request("execute_request", {
                "code": "print(6 * 7)", "silent": False, "store_history": False,
                "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
            parents = []
            execution = Execution(msg_id)
            while not execution.done:
                msg = await again.receive()
                parents.append(msg["parent_header"].get("msg_id"))
                execution.add(msg)
        finally:
            await again.close()
    assert execution.stdout == "42\n"
    assert parent not in parents, "the dropped buffer was replayed"
    assert "Dropped the replay buffer" in replay_front.log_tail(400)


async def test_an_overflowing_buffer_is_dropped(
        client_proxy: FaultProxy, replay_front: Server,
        kernel: tuple[httpx.AsyncClient, str]) -> None:
    """Over the 200-message bound while away: dropped, logged, the client starts afresh."""
    api, kernel_id = kernel
    session = uuid.uuid4().hex
    conn = await _open(client_proxy, api, kernel_id, session)
    with anyio.fail_after(60):
        msg_id = await conn.request("execute_request", {
            "code": "import time\ntime.sleep(1)\nfor i in range(500):\n    print(i, flush=True)",
            "silent": False, "store_history": False, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True})
        await conn.wait_for("execute_input", timeout=30, parent=msg_id)  # the cell runs
        client_proxy.cut()
        await wait_until(lambda: "buffer over 200 messages" in replay_front.log_tail(400), 30,
                         "the front dropped the overflowing buffer")
        again = await _open(client_proxy, api, kernel_id, session)
        try:
            assert (await again.execute("print(6 * 7)", timeout=30)).stdout == "42\n"
        finally:
            await again.close()


# ---------------------------------------------------------------- the remote's side blips

# What the remote itself buffers for a session whose socket dropped: jupyter_server and the
# gateways built on it replay it when the same session_id returns; Jupyverse buffers nothing,
# so what it loses is what the kernel printed during the reconnect (measured: nothing at 10
# lines/s, since the client is back within tens of milliseconds).
REMOTE_BUFFERS = {"jupyverse": False, "jupyter_server": True, "kernel_gateway": True,
                  "enterprise_gateway": True}


@pytest.fixture(scope="module")
def remote_link(loop: BackgroundLoop, remote: Server) -> Iterator[FaultProxy]:
    """The front's network to the remote."""
    proxy = FaultProxy(remote.port, loop=loop)
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def linked_front(remote_link: FaultProxy, remote: Server, remote_kind: str,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = front_server(tmp_path_factory.mktemp("linked-front"), remote_link.url,
                          remote.token, extra=["--set", f"remote_kernels.kind={remote_kind}"]
                          ).start()
    yield server
    server.stop()


async def test_an_upstream_blip_loses_only_what_the_remote_does_not_buffer(
        remote_link: FaultProxy, linked_front: Server, remote_kind: str) -> None:
    """The front-to-remote link is cut mid-cell: the client is closed (not 1000/1001, so
    JupyterLab reconnects), comes back at once with its session_id, and gets the rest in
    order, never twice; with a remote that buffers (jupyter_server, gateways), nothing is lost."""
    api = await login(linked_front)
    response = await api.post("/api/kernels", json={"name": "python3"})
    assert response.status_code == 201, response.text
    kernel_id = response.json()["id"]
    url = f"ws://127.0.0.1:{linked_front.port}/api/kernels/{kernel_id}/channels"
    session = uuid.uuid4().hex
    before: list[int] = []
    after: list[int] = []
    try:
        with anyio.fail_after(90):
            conn = await KernelConnection.open(url, cookie=cookie_header(api), session=session,
                                               open_timeout=30)
            parent = await _cut_after_first_lines(conn, remote_link, before)
            assert conn.ws.close_code not in (1000, 1001), conn.ws.close_code
            again = await KernelConnection.open(url, cookie=cookie_header(api),
                                                session=session, open_timeout=30)
            try:
                await _numbers_until(again, parent, after, True)
            finally:
                await again.close()
    finally:
        await api.delete(f"/api/kernels/{kernel_id}")
        await api.aclose()
    got = before + after
    print(f"{remote_kind}: upstream blip, {len(got)} of {LINES} lines")
    assert got == sorted(set(got)), f"out of order or twice: {got}"
    if REMOTE_BUFFERS[remote_kind]:
        assert got == list(range(LINES)), got


async def test_a_newer_socket_of_the_same_session_wins(
        replay_front: Server, kernel: tuple[httpx.AsyncClient, str]) -> None:
    """A second socket with the same session_id while the first is open: the first is closed
    with 1000 (JupyterLab stops reconnecting it), the newer one gets the replies."""
    api, kernel_id = kernel
    url = f"ws://127.0.0.1:{replay_front.port}/api/kernels/{kernel_id}/channels"
    session = uuid.uuid4().hex
    older = await KernelConnection.open(url, cookie=cookie_header(api), session=session,
                                        open_timeout=30)
    newer = await KernelConnection.open(url, cookie=cookie_header(api), session=session,
                                        open_timeout=30)
    try:
        with anyio.fail_after(30):
            await older.ws.wait_closed()
        assert older.ws.close_code == 1000
        assert "newer connection" in (older.ws.close_reason or "")
        assert (await newer.execute("print(6 * 7)", timeout=30)).stdout == "42\n"
    finally:
        await newer.close()
