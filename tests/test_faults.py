"""Faults between the front and its remote: the front stays up, says the truth quickly, and
recovers on its own. A TCP fault proxy (tests/support/fault_proxy.py) sits between a front and
a real remote Jupyverse; fake remotes stand in only for faults a real one cannot produce on demand.

JupyterLab's reactions these tests rely on (@jupyterlab/services 7.6, kernel/default.ts): an
open kernel socket closed with 1000 or 1001 is given up; any other code makes it reconnect.
When a (re)connection fails it asks `GET /api/kernels/{id}`: 503 → it polls again later,
404 → it retries the socket, another error → "kernel died unexpectedly".
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator

import anyio
import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import cookie_header, ws_url
from tests.support.fake_remote import FakeKernelRemote, GarbageRemote
from tests.support.fault_proxy import BackgroundLoop, FaultProxy
from tests.support.harness import logged_in, login, outside_the_kernels_api, wait_until
from tests.support.kernel_client import KernelConnection
from tests.support.servers import Server, front_server, remote_server

pytestmark = pytest.mark.anyio

REQUEST_TIMEOUT = 3
CONNECT_TIMEOUT = 2
PING_INTERVAL = 1
PING_TIMEOUT = 1
FAULT_OPTIONS = [
    "--set", f"remote_kernels.request_timeout={REQUEST_TIMEOUT}",
    "--set", f"remote_kernels.connect_timeout={CONNECT_TIMEOUT}",
    "--set", f"remote_kernels.ping_interval={PING_INTERVAL}",
    "--set", f"remote_kernels.ping_timeout={PING_TIMEOUT}",
    "--set", "remote_kernels.kernelspecs_cache_ttl=0",
]
# Close codes on which JupyterLab gives up instead of reconnecting.
GIVES_UP = (1000, 1001)


def streaming_cell(count: int, pause: float) -> str:
    return (f"import time\nfor i in range({count}):\n"
            f"    print(i, flush=True)\n    time.sleep({pause})")


def numbers(msg: dict, parent: str) -> list[int]:
    """The sequence numbers a stream message of `parent`'s execution carries."""
    if msg["header"]["msg_type"] != "stream" or msg["parent_header"].get("msg_id") != parent:
        return []
    return [int(line) for line in msg["content"]["text"].split()]


def execute_request(code: str) -> dict:
    return {"code": code, "silent": False, "store_history": False, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True}


@pytest.fixture(scope="module")
def proxy(loop: BackgroundLoop, remote: Server) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(remote.port, loop=loop)
    yield fault_proxy
    fault_proxy.close()


@pytest.fixture(scope="module")
def faulty_front(proxy: FaultProxy, remote: Server, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[Server]:
    """An API-only front whose remote is reached through the fault proxy, with short
    timeouts and keepalive so that faults show within seconds."""
    server = front_server(tmp_path_factory.mktemp("faulty-front"), proxy.url, remote.token,
                          extra=FAULT_OPTIONS).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def healthy_network(proxy: FaultProxy, remote: Server) -> Iterator[None]:
    """Every test starts and ends with the proxy forwarding normally to the real remote."""

    def heal() -> None:
        proxy.retarget(remote.port)
        proxy.up()
        proxy.resume()
        proxy.slow(0)

    heal()
    yield
    heal()


@pytest.fixture
async def client(faulty_front: Server) -> AsyncIterator[httpx.AsyncClient]:
    http = await login(faulty_front)
    yield http
    await http.aclose()


@pytest.fixture(scope="module")
def kernel_id(remote: Server) -> Iterator[str]:
    """A kernel started on the remote itself (it belongs to the remote, not to the front)."""
    with httpx.Client(base_url=remote.url, timeout=120) as direct:
        direct.get("/api/status", params={"token": remote.token})
        created = direct.post("/api/sessions", json={
            "path": f"faults-{uuid.uuid4().hex}.ipynb", "type": "notebook", "name": "",
            "kernel": {"name": "python3"}})
        assert created.status_code in (200, 201), created.text
        yield created.json()["kernel"]["id"]
        direct.delete(f"/api/sessions/{created.json()['id']}")


async def open_kernel(front: Server, client: httpx.AsyncClient, kernel: str,
                      session: str | None = None) -> KernelConnection:
    return await KernelConnection.open(ws_url(front, kernel), cookie=cookie_header(client),
                                       session=session)


def assert_no_secret(response: httpx.Response, token: str) -> None:
    assert token not in response.text
    assert all(token not in value for value in response.headers.values())
    assert "set-cookie" not in response.headers, "a remote cookie reached the client"


# ---------------------------------------------------------------- remote down, then up


async def test_front_started_with_remote_down_answers_503_then_recovers(
    loop: BackgroundLoop, remote: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Remote down at start: the front starts, status says unreachable, kernel routes answer
    503 with a message; when the remote comes up everything works without a restart."""
    down = FaultProxy(remote.port, loop=loop)
    down.down()
    front = front_server(tmp_path_factory.mktemp("front-remote-down"), down.url, remote.token,
                         extra=FAULT_OPTIONS).start()
    try:
        async with logged_in(front) as http:
            status = (await http.get("/api/status")).json()
            assert status["remote"]["reachable"] is False
            assert "unreachable" in status["remote"]["message"]
            kernel = str(uuid.uuid4())
            for path in ("/api/kernels", f"/api/kernels/{kernel}", "/api/sessions",
                         "/api/kernelspecs"):
                response = await http.get(path)
                assert response.status_code == 503, (path, response.text)
                assert down.url in response.json()["message"]
                assert_no_secret(response, remote.token)
            with pytest.raises(websockets.InvalidStatus) as refused:
                await open_kernel(front, http, kernel)
            assert refused.value.response.status_code == 503

            down.up()
            assert (await http.get("/api/status")).json()["remote"]["reachable"] is True
            for path in ("/api/kernels", "/api/sessions", "/api/kernelspecs"):
                response = await http.get(path)
                assert response.status_code == 200, (path, response.text)
                assert_no_secret(response, remote.token)
            assert (await http.get(f"/api/kernels/{kernel}")).status_code == 404  # never was
    finally:
        front.stop()
        down.close()


# ---------------------------------------------------------------- connection cut


async def test_cut_while_streaming_closes_the_socket_then_reconnecting_resumes(
    faulty_front: Server, client: httpx.AsyncClient, proxy: FaultProxy, kernel_id: str
) -> None:
    """A cut while a kernel streams output closes the client socket within seconds with a code
    JupyterLab reconnects on; meanwhile GET /api/kernels/{id} is 503 (JupyterLab keeps polling);
    once the remote is back the same session reconnects and the execution goes on, in order."""
    conn = await open_kernel(faulty_front, client, kernel_id)
    count = 150
    msg_id = await conn.request("execute_request", execute_request(streaming_cell(count, 0.02)))
    seen: list[int] = []
    with anyio.fail_after(60):
        while len(seen) < 5:
            seen += numbers(await conn.receive(), msg_id)

    proxy.down()
    cut_at = time.monotonic()
    with anyio.fail_after(10), pytest.raises(ConnectionClosed):
        while True:
            seen += numbers(await conn.receive(), msg_id)
    assert time.monotonic() - cut_at < 3, "the client socket was not closed promptly"
    assert conn.ws.close_code == 1011 and conn.ws.close_code not in GIVES_UP

    model = await client.get(f"/api/kernels/{kernel_id}")
    assert model.status_code == 503, model.text
    assert "unreachable" in model.json()["message"]
    with pytest.raises(websockets.InvalidStatus) as refused:
        await open_kernel(faulty_front, client, kernel_id, session=conn.session)
    assert refused.value.response.status_code == 503

    proxy.up()
    assert (await client.get(f"/api/kernels/{kernel_id}")).status_code == 200
    again = await open_kernel(faulty_front, client, kernel_id, session=conn.session)
    try:
        before = len(seen)
        execution = await again.collect(msg_id, timeout=60)
        for msg in execution.messages:
            seen += numbers(msg, msg_id)
        assert execution.reply is not None and execution.reply["content"]["status"] == "ok"
        assert len(seen) > before, "no output arrived after reconnecting"
        assert seen == sorted(set(seen)), "outputs duplicated or out of order"
        assert seen[-1] == count - 1
    finally:
        await again.close()


async def answer_after_cut(proxy: FaultProxy, request: Awaitable[httpx.Response], *,
                           resume: bool) -> httpx.Response:
    """The front's answer to `request` when the connection carrying it to the remote is cut
    while the front waits; with `resume`, the network works again right after the cut."""
    proxy.stall()
    held = proxy.held_chunks
    answers: list[httpx.Response] = []

    async def ask() -> None:
        answers.append(await request)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask)
        await wait_until(lambda: proxy.held_chunks > held, 10, "the request reached the proxy")
        proxy.cut()
        if resume:
            proxy.resume()
    return answers[0]


async def test_connection_cut_mid_request_answers_503_not_502(
    client: httpx.AsyncClient, proxy: FaultProxy, kernel_id: str
) -> None:
    """A connection that drops while the front waits for the answer to a request it must not
    send twice (POST) is 503 "connection lost" (JupyterLab polls again), not 502 (which
    JupyterLab takes for a dead kernel)."""
    answer = await answer_after_cut(
        proxy, client.post(f"/api/kernels/{kernel_id}/interrupt"), resume=False)
    assert answer.status_code == 503, answer.text
    assert "connection lost" in answer.json()["message"]


async def test_get_whose_connection_drops_is_sent_again_once(
    client: httpx.AsyncClient, proxy: FaultProxy, kernel_id: str
) -> None:
    """A GET whose connection to the remote drops before the answer (as a kept-alive
    connection the remote closes at that moment does) is sent again and answered 200."""
    answer = await answer_after_cut(proxy, client.get(f"/api/kernels/{kernel_id}"), resume=True)
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == kernel_id


# ---------------------------------------------------------------- stalls and slowness


async def test_stalled_upstream_is_detected_by_keepalive_pings(
    faulty_front: Server, client: httpx.AsyncClient, proxy: FaultProxy, kernel_id: str
) -> None:
    """When the network stalls (no byte either way, no FIN), keepalive pings notice within
    ping_interval + ping_timeout (+ the close handshake) and the client gets 1011."""
    conn = await open_kernel(faulty_front, client, kernel_id)
    assert (await conn.execute("print('before the stall')")).stdout == "before the stall\n"
    proxy.stall()
    stalled_at = time.monotonic()
    with anyio.fail_after(20), pytest.raises(ConnectionClosed):
        while True:
            await conn.ws.recv()
    elapsed = time.monotonic() - stalled_at
    assert elapsed < PING_INTERVAL + PING_TIMEOUT + 2 + 3, f"stall noticed after {elapsed:.1f} s"
    assert conn.ws.close_code == 1011


async def test_slow_remote_answers_504_at_the_request_timeout(
    faulty_front: Server, client: httpx.AsyncClient, proxy: FaultProxy, kernel_id: str,
    remote: Server
) -> None:
    """A remote slower than request_timeout gets 504 at that timeout, never a hang, and a
    warning in the front's log; the front's own status keeps answering, and a kernel socket
    is refused rather than left open."""
    proxy.slow(REQUEST_TIMEOUT + 4)
    started = time.monotonic()
    response = await client.get("/api/kernels")
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert f"did not answer within {REQUEST_TIMEOUT} s" in response.json()["message"]
    assert REQUEST_TIMEOUT - 0.5 < elapsed < REQUEST_TIMEOUT + 3
    assert_no_secret(response, remote.token)
    warning = [line for line in faulty_front.log_tail(200).splitlines()
               if "Remote request failed" in line]
    assert warning and "status=504" in warning[-1] and "did not answer" in warning[-1], (
        faulty_front.log_tail())

    with anyio.fail_after(CONNECT_TIMEOUT + 5):
        status = (await client.get("/api/status")).json()
    assert status["remote"]["reachable"] is False

    started = time.monotonic()
    with pytest.raises(websockets.InvalidStatus) as refused:
        await open_kernel(faulty_front, client, kernel_id)
    assert refused.value.response.status_code == 504
    assert time.monotonic() - started < REQUEST_TIMEOUT + 3


async def test_slow_remote_keeps_the_kernel_alive_in_jupyterlab(
    faulty_front: Server, client: httpx.AsyncClient, proxy: FaultProxy, kernel_id: str,
) -> None:
    """GET /api/kernels/{id} past the request timeout answers 503 (JupyterLab polls again),
    not 504 (JupyterLab: "kernel died"); once the remote is quick again, 200."""
    proxy.slow(REQUEST_TIMEOUT + 4)
    try:
        response = await client.get(f"/api/kernels/{kernel_id}")
        assert response.status_code == 503, response.text
        assert f"did not answer within {REQUEST_TIMEOUT} s" in response.json()["message"]
    finally:
        proxy.slow(0)
    with anyio.fail_after(REQUEST_TIMEOUT + 10):
        while (response := await client.get(f"/api/kernels/{kernel_id}")).status_code != 200:
            await anyio.sleep(0.2)
    assert response.json()["id"] == kernel_id


# ---------------------------------------------------------------- nonsense from the remote


@pytest.fixture(scope="module")
def garbage(loop: BackgroundLoop) -> Iterator[GarbageRemote]:
    server = GarbageRemote(loop)
    yield server
    server.close()


@pytest.mark.parametrize(("mode", "status"), [
    ("html", 502), ("not-http", 502), ("truncated-json", 502), ("wrong-shape", 502),
    ("server-error", 502), ("cut-body", 503),
])
async def test_remote_answering_nonsense_gets_502(
    faulty_front: Server, client: httpx.AsyncClient, proxy: FaultProxy, garbage: GarbageRemote,
    remote: Server, mode: str, status: int
) -> None:
    """HTML, bytes that are not HTTP, truncated JSON, JSON of the wrong shape or a 500 from the
    remote answer 502 with a message naming the remote (a body cut by a dropped connection is
    503, the remote being unreachable); kernel sockets are refused the same way."""
    garbage.mode = mode
    proxy.cut()  # no kept-alive connection to the real remote: all go to the garbage server
    proxy.retarget(garbage.port)
    for path in ("/api/kernels", f"/api/kernels/{uuid.uuid4()}", "/api/sessions",
                 "/api/kernelspecs"):
        response = await client.get(path)
        assert response.status_code == status, (mode, path, response.text)
        assert proxy.url in response.json()["message"]
        assert_no_secret(response, remote.token)
    with pytest.raises(websockets.InvalidStatus) as refused:
        await open_kernel(faulty_front, client, str(uuid.uuid4()))
    assert refused.value.response.status_code == status


# ---------------------------------------------------------------- remote restart


async def test_remote_restart_mid_session_reauthenticates_and_404s_vanished_kernels(
    faulty_front: Server, client: httpx.AsyncClient, proxy: FaultProxy, remote: Server,
    tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The remote restarts mid-session (new cookie secret, kernels gone): open sockets close
    with a code JupyterLab reconnects on, the front logs in again by itself, the vanished kernel
    is 404 (REST and socket), and new sessions work."""
    created = await client.post("/api/sessions", json={
        "path": f"restart-{uuid.uuid4().hex}.ipynb", "type": "notebook",
        "kernel": {"name": "python3"}})
    assert created.status_code == 201, created.text
    old_session, old_kernel = created.json()["id"], created.json()["kernel"]["id"]
    conn = await open_kernel(faulty_front, client, old_kernel)
    assert (await conn.execute("print(1)")).stdout == "1\n"

    restarted = remote_server(tmp_path_factory.mktemp("restarted-remote"))
    restarted.token = remote.token  # the same server, started again
    restarted.start()
    try:
        proxy.down()
        proxy.retarget(restarted.port)
        proxy.up()
        with anyio.fail_after(10), pytest.raises(ConnectionClosed):
            while True:
                await conn.ws.recv()
        assert conn.ws.close_code not in GIVES_UP

        logins_before = len([r for r in proxy.requests if "token=" in r.target])
        gone = await client.get(f"/api/kernels/{old_kernel}")  # dead, as JupyterLab reads it
        assert gone.status_code == 200 and gone.json()["execution_state"] == "dead", gone.text
        assert_no_secret(gone, remote.token)
        assert len([r for r in proxy.requests if "token=" in r.target]) > logins_before, \
            "the front did not log in to the restarted remote"
        with pytest.raises(websockets.InvalidStatus) as refused:
            await open_kernel(faulty_front, client, old_kernel, session=conn.session)
        assert refused.value.response.status_code == 404
        assert (await client.get(f"/api/sessions/{old_session}")).status_code == 404

        fresh = await client.post("/api/sessions", json={
            "path": "after-restart.ipynb", "type": "notebook", "kernel": {"name": "python3"}})
        assert fresh.status_code == 201, fresh.text
        assert_no_secret(fresh, remote.token)
        new_conn = await open_kernel(faulty_front, client, fresh.json()["kernel"]["id"])
        try:
            assert (await new_conn.execute("print(6*7)")).stdout == "42\n"
        finally:
            await new_conn.close()
        assert (await client.delete(f"/api/sessions/{fresh.json()['id']}")).status_code == 204
    finally:
        proxy.down()
        proxy.retarget(remote.port)
        proxy.up()
        restarted.stop()
        with httpx.Client(base_url=remote.url, timeout=60) as direct:
            direct.get("/api/status", params={"token": remote.token})
            direct.delete(f"/api/sessions/{old_session}")
    assert outside_the_kernels_api(proxy.requests) == []


# ---------------------------------------------------------------- front shutdown


def assert_clean_exit(front: Server, started: float, limit: float) -> None:
    assert front.process is not None
    code = front.process.wait(limit + 10)
    assert time.monotonic() - started < limit, "the front took too long to stop"
    assert code == 0, front.log_tail()
    log = front.log_path.read_text(errors="replace")
    for sign in ("timed out while stopping", "Task was destroyed", "Traceback", "[error",
                 "[critical"):
        assert sign not in log, f"{sign!r} in the front's log:\n{front.log_tail()}"


async def wait_closed(conns: list[KernelConnection], limit: float) -> list[int | None]:
    async def one(conn: KernelConnection) -> None:
        with pytest.raises(ConnectionClosed):
            while True:
                await conn.ws.recv()

    with anyio.fail_after(limit):
        async with anyio.create_task_group() as tg:
            for conn in conns:
                tg.start_soon(one, conn)
    return [conn.ws.close_code for conn in conns]


async def test_front_shutdown_with_50_open_sockets_is_prompt_and_leaves_kernels_alone(
    loop: BackgroundLoop, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Stopping a front (Ctrl-C) with 50 open kernel sockets returns within seconds with nothing
    left running: every client gets 1012 (JupyterLab reconnects), every upstream socket ends with
    a normal close, and the remote is asked nothing that would touch its kernels."""
    fake = FakeKernelRemote(loop)
    recorder = FaultProxy(fake.port, loop=loop, record_ws=False)
    kernels = [fake.new_kernel() for _ in range(5)]
    front = front_server(tmp_path_factory.mktemp("front-shutdown"), recorder.url, "t0ken",
                         extra=FAULT_OPTIONS).start()
    try:
        async with logged_in(front) as http:
            conns = []
            for kernel in kernels:
                conns += await _open_many(front, http, kernel, 10)
        assert fake.open_connections() == 50
        assert (await conns[0].execute("emit 3 10")).stdout == "0:xxxxxxx\n1:xxxxxxx\n2:xxxxxxx\n"

        assert front.process is not None
        started = time.monotonic()
        os.kill(front.process.pid, signal.SIGINT)
        codes = await wait_closed(conns, 5)
        assert set(codes) == {1012}, codes
        assert_clean_exit(front, started, 5)
        await wait_until(lambda: fake.open_connections() == 0, 5, "upstream sockets closed")
        assert {c.close_code for c in fake.connections} == {1000}
        assert {r.method for r in recorder.requests} == {"GET"}
        assert not [r for r in recorder.requests if r.path.endswith(("/restart", "/interrupt"))]
        assert set(kernels) <= fake.kernel_ids
    finally:
        front.stop()
        recorder.close()
        fake.close()


async def _open_many(front: Server, http: httpx.AsyncClient, kernel: str, count: int
                     ) -> list[KernelConnection]:
    conns: list[KernelConnection] = []

    async def one() -> None:
        conns.append(await open_kernel(front, http, kernel))

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)
    return conns


async def test_front_shutdown_leaves_real_remote_kernels_running(
    remote: Server, remote_api: httpx.AsyncClient, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A real kernel used through a front that a service manager stops (SIGTERM) keeps running
    on the remote with its state: the sockets close with 1012 and the kernel still knows what
    it computed."""
    created = await remote_api.post("/api/sessions", json={
        "path": f"shutdown-{uuid.uuid4().hex}.ipynb", "type": "notebook", "name": "",
        "kernel": {"name": "python3"}})
    assert created.status_code in (200, 201), created.text
    kernel = created.json()["kernel"]["id"]
    front = front_server(tmp_path_factory.mktemp("front-shutdown-real"), remote.url,
                         remote.token).start()
    try:
        async with logged_in(front) as http:
            conns = await _open_many(front, http, kernel, 10)
        assert (await conns[0].execute("x = 6 * 7")).reply["content"]["status"] == "ok"
        assert front.process is not None
        started = time.monotonic()
        os.kill(front.process.pid, signal.SIGTERM)
        assert set(await wait_closed(conns, 5)) == {1012}
        assert_clean_exit(front, started, 5)

        assert kernel in [k["id"] for k in (await remote_api.get("/api/kernels")).json()]
        direct = await KernelConnection.open(
            f"ws://127.0.0.1:{remote.port}/api/kernels/{kernel}/channels",
            cookie=f"fastapiusersauth={remote_api.cookies['fastapiusersauth']}")
        try:
            assert (await direct.execute("print(x)")).stdout == "42\n"
        finally:
            await direct.close()
    finally:
        front.stop()
        await remote_api.delete(f"/api/sessions/{created.json()['id']}")
