"""The front served by uvicorn (`remote_kernels.server=uvicorn`): it answers REST and kernel
sockets as on anycorn, it tells a client that vanished from one that closed on purpose, it
pauses reading a client only when its messages wait, and the uvicorn code it subclasses is the
code it was written for. (The whole suite runs on it with REMOTE_KERNELS_TEST_SERVER=uvicorn.)"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from fps_remote_kernels.host import uvicorn_server
from fps_remote_kernels.host.code_check import code_digest
from tests.conftest import cookie_header
from tests.support.fault_proxy import BackgroundLoop, FaultProxy
from tests.support.harness import login, wait_until
from tests.support.kernel_client import KernelConnection
from tests.support.servers import Server, front_server, front_server_choice

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def uvicorn_front(remote: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = front_server(tmp_path_factory.mktemp("uvicorn-front"), remote.url, remote.token,
                          extra=front_server_choice("uvicorn")).start()
    yield server
    server.stop()


@pytest.mark.fast
def test_uvicorn_protocol_is_the_code_the_subclass_was_written_for() -> None:
    """uvicorn's wsproto WSProtocol.connection_lost is unchanged: when this fails, check which
    code uvicorn reports for a client gone without a Close frame, and update the digest."""
    from uvicorn.protocols.websockets.wsproto_impl import WSProtocol

    assert code_digest(WSProtocol.connection_lost) \
        == uvicorn_server.CONNECTION_LOST_DIGEST


@pytest.mark.fast
def test_uvicorn_protocol_queue_and_event_are_used_as_written_for() -> None:
    """uvicorn's wsproto WSProtocol is unchanged: the front replaces its queue and `writable`
    event by lighter ones that offer only what it uses. When this fails, check what uvicorn
    asks of them (and of its WSConnection) and update the digest."""
    from uvicorn.protocols.websockets.wsproto_impl import WSProtocol

    assert code_digest(WSProtocol) == uvicorn_server.WS_PROTOCOL_DIGEST


@pytest.mark.fast
def test_wsproto_connection_is_a_pass_through_once_open() -> None:
    """wsproto's WSConnection is unchanged: once the handshake is done it only passes calls on
    to its `connection`, which the front's uvicorn protocol then uses directly. When this
    fails, check that it still does and update the digest."""
    from wsproto import WSConnection

    assert code_digest(WSConnection) == uvicorn_server.WS_CONNECTION_DIGEST


@pytest.mark.fast
async def test_inbox_returns_messages_in_order_and_wakes_one_getter() -> None:
    """The lighter queue returns what was put, in order, across a backlog, to waiting getters."""
    import anyio

    inbox = uvicorn_server._Inbox()
    got: list[int] = []

    async def get() -> None:
        got.append(await inbox.get())

    async with anyio.create_task_group() as tg:
        tg.start_soon(get)
        tg.start_soon(get)
        await anyio.wait_all_tasks_blocked()
        inbox.put_nowait(1)
        inbox.put_nowait(2)
    assert got == [1, 2] and inbox.empty()
    for i in range(200):  # a backlog longer than the trimming step
        inbox.put_nowait(i)
    assert [await inbox.get() for _ in range(200)] == list(range(200))
    assert inbox.empty()


@pytest.mark.fast
async def test_inbox_getter_cancelled_after_its_wake_up_passes_it_on() -> None:
    """As asyncio.Queue: a getter cancelled once woken does not swallow the message's wake-up."""
    import asyncio

    import anyio

    inbox = uvicorn_server._Inbox()
    first = asyncio.ensure_future(inbox.get())
    second = asyncio.ensure_future(inbox.get())
    await anyio.wait_all_tasks_blocked()
    inbox.put_nowait(7)  # wakes the first getter ...
    first.cancel()  # ... which is cancelled before it runs (asyncio's Task.cancel)
    with anyio.fail_after(5):
        assert await second == 7
    assert first.cancelled() and inbox.empty()


@pytest.mark.fast
async def test_flag_wakes_waiters_on_set() -> None:
    """The lighter `writable` event: set at first; clear makes wait() wait until set()."""
    import anyio

    flag = uvicorn_server._Flag()
    assert flag.is_set() and await flag.wait()
    flag.clear()
    woken: list[bool] = []

    async def wait() -> None:
        woken.append(await flag.wait())

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        assert woken == []
        flag.set()
    assert woken == [True, True]


async def test_uvicorn_front_serves_rest_and_kernel_sockets(uvicorn_front: Server) -> None:
    """A uvicorn front lists kernels, starts one and runs code on its socket."""
    api = await login(uvicorn_front)
    try:
        assert (await api.get("/api/status")).json()["front"]["server"] == "uvicorn"
        response = await api.post("/api/kernels", json={"name": "python3"})
        assert response.status_code == 201, response.text
        kernel_id = response.json()["id"]
        listed = await api.get("/api/kernels")
        assert kernel_id in {k["id"] for k in listed.json()}
        url = f"ws://127.0.0.1:{uvicorn_front.port}/api/kernels/{kernel_id}/channels"
        conn = await KernelConnection.open(url, cookie=cookie_header(api), open_timeout=30)
        try:
            assert (await conn.execute("print(6 * 7)")).stdout == "42\n"
        finally:
            await conn.close()
        unknown = await api.get(f"/api/kernels/{uuid.uuid4()}")
        assert unknown.status_code == 404
        await api.delete(f"/api/kernels/{kernel_id}")
    finally:
        await api.aclose()


def _close_without_a_code(port: int, path: str, cookie: str) -> None:
    """Open a kernel WebSocket by hand and send a Close frame with no status code (what a
    browser sends on `ws.close()`), which the websockets library will not send."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Protocol: v1.kernel.websocket.jupyter.org\r\n"
                      f"Cookie: {cookie}\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            assert chunk, f"the front closed the handshake: {head!r}"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        sock.sendall(b"\x88\x80" + os.urandom(4))  # FIN + Close, masked, empty payload
        while sock.recv(65536):  # until the front closes the connection
            pass


async def test_a_vanished_client_is_told_apart_from_a_deliberate_close(
        uvicorn_front: Server, loop: BackgroundLoop) -> None:
    """On uvicorn too, a client cut without a Close frame leaves with 1006 (its upstream is
    kept for a reconnect), and a Close frame without a code leaves with 1005 (ended at once)."""
    api = await login(uvicorn_front)
    proxy = FaultProxy(uvicorn_front.port, loop=loop)
    try:
        kernel_id = (await api.post("/api/kernels", json={"name": "python3"})).json()["id"]
        path = f"/api/kernels/{kernel_id}/channels"
        log = uvicorn_front.log_path

        def left_with(code: int) -> bool:
            return any("Kernel client left" in line and kernel_id in line and f"code={code}"
                       in line for line in log.read_text().splitlines())

        conn = await KernelConnection.open(f"ws://127.0.0.1:{proxy.port}{path}",
                                           cookie=cookie_header(api), open_timeout=30)
        await conn.execute("1")
        proxy.cut()
        await wait_until(lambda: left_with(1006), 10, "the cut client to leave with 1006")

        _close_without_a_code(uvicorn_front.port, f"{path}?session_id={uuid.uuid4().hex}",
                              cookie_header(api))
        await wait_until(lambda: left_with(1005), 10, "the closing client to leave with 1005")
        await api.delete(f"/api/kernels/{kernel_id}")
    finally:
        proxy.close()
        await api.aclose()
class _Transport(asyncio.Transport):
    """Records what uvicorn's protocol asks of its socket."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.pauses = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 1), "peername": ("127.0.0.1", 2)}.get(name, default)


_HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def _client_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x82, 0x80 | len(payload)]) + mask + masked  # FIN + binary, < 126 bytes


async def _opened_protocol(app: Any) -> tuple[Any, _Transport]:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    cls = uvicorn_server._kernel_socket_protocol()
    config = Config(app, ws=cls, lifespan="off", log_config=None)
    config.load()
    protocol = cls(config=config, server_state=ServerState(), app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    protocol.data_received(_HANDSHAKE)
    return protocol, transport


@pytest.mark.fast
async def test_reading_from_a_client_pauses_only_when_its_messages_wait() -> None:
    """An app that takes each client message at once never pauses reading; one that does not
    read pauses it at READ_AHEAD_MESSAGES waiting, and reading resumes once it took them."""
    taken: list[bytes] = []
    go = asyncio.Event()
    accepted = asyncio.Event()
    took = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        accepted.set()
        while True:
            if len(taken) == 50:
                await go.wait()  # stop reading for a while
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            taken.append(message["bytes"])
            took.set()

    async def until_taken(count: int) -> None:
        while len(taken) < count:
            took.clear()
            await took.wait()

    protocol, transport = await _opened_protocol(app)
    with anyio.fail_after(10):
        await accepted.wait()
        for i in range(50):
            protocol.data_received(_client_frame(b"%d" % i))
            await until_taken(i + 1)
        assert transport.pauses == 0
        for i in range(uvicorn_server.READ_AHEAD_MESSAGES):
            assert not transport.paused
            protocol.data_received(_client_frame(b"late %d" % i))
        assert transport.paused and transport.pauses == 1
        go.set()
        await until_taken(50 + uvicorn_server.READ_AHEAD_MESSAGES)
        assert not transport.paused
        assert taken[-1] == b"late %d" % (uvicorn_server.READ_AHEAD_MESSAGES - 1)
    protocol.connection_lost(None)


@pytest.mark.parametrize(("close_frame", "expected"), [
    (None, 1006),  # gone without a Close frame
    (bytes([0x88, 0x80]) + bytes(4), 1005),  # a Close frame without a code, masked
], ids=["vanished", "closed"])
@pytest.mark.fast
async def test_a_connection_lost_without_a_close_frame_is_1006_and_a_close_frame_keeps_its_code(
        close_frame: bytes | None, expected: int) -> None:
    """The app hears 1006 from a client gone without a Close frame, and the client's own code
    (here 1005, a Close frame without one) when it sent a Close frame."""
    heard: list[int] = []
    accepted, disconnected = asyncio.Event(), asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        accepted.set()
        message = await receive()
        heard.append(int(message["code"]))
        disconnected.set()

    protocol, _ = await _opened_protocol(app)
    with anyio.fail_after(10):
        await accepted.wait()
        if close_frame is not None:
            protocol.data_received(close_frame)
        protocol.connection_lost(None)
        await disconnected.wait()
    assert heard == [expected]
