"""The upstream WebSocket client (fps_remote_kernels/remote/kernel_socket.py) against a raw server
of the test's own, for what a real remote cannot be made to do on cue: frames split across reads,
fragmented messages, close codes, refused or broken handshakes, a remote gone silent, a reader that
does not read."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
import websockets

from fps_remote_kernels.remote.kernel_socket import (
    ConnectionClosed,
    HandshakeError,
    HandshakeRefused,
    NotHTTP,
    UpstreamConnection,
    connect,
)
from tests.conftest import cookie_header, ws_url
from tests.support.fake_remote import FakeKernelRemote
from tests.support.harness import logged_in
from tests.support.kernel_client import KernelConnection
from tests.support.raw_websocket import accept_answer, close_payload, frame, read_frame
from tests.support.servers import Server

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, dict[str, str]], Awaitable[None]]


@asynccontextmanager
async def raw_server(handler: Handler, *, answer: bool = True) -> AsyncIterator[str]:
    """A loopback server on a free port that reads the handshake and (with `answer`) accepts
    it, then runs `handler`; yields the ws:// URL."""
    done: list[BaseException] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.split("\r\n")
            headers = {"request-line": lines[0]}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            if answer:
                writer.write(accept_answer(headers))
            await handler(reader, writer, headers)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except BaseException as e:  # seen by the test
            done.append(e)
            raise
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/api/kernels/k/channels?session_id=s"
    finally:
        server.close()
        with anyio.move_on_after(2):
            await server.wait_closed()
    if done:
        raise done[0]


async def open_(url: str, **kwargs: object) -> UpstreamConnection:
    options: dict[str, object] = {"ping_interval": None, "open_timeout": 5, "close_timeout": 0.5}
    options.update(kwargs)
    return await connect(url, **options)  # type: ignore[arg-type]


@pytest.mark.fast
async def test_handshake_sends_subprotocols_and_extra_headers() -> None:
    """The upgrade request carries the offered subprotocols, Cookie and Authorization, and
    the subprotocol the remote chose is the connection's."""
    seen: dict[str, str] = {}

    async def choosing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        headers = {line.partition(":")[0].lower(): line.partition(":")[2].strip()
                   for line in head.split("\r\n")[1:] if line}
        seen.update(headers)
        writer.write(accept_answer(headers, "Sec-WebSocket-Protocol: v1.kernel.websocket."
                                            "jupyter.org\r\n"))
        await reader.read()
        writer.close()

    server = await asyncio.start_server(choosing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with anyio.fail_after(10):
            conn = await open_(f"ws://127.0.0.1:{port}/api/kernels/k/channels?session_id=s",
                               subprotocols=["v1.kernel.websocket.jupyter.org", "other"],
                               headers={"Cookie": "a=b", "Authorization": "token xyz"})
            assert conn.subprotocol == "v1.kernel.websocket.jupyter.org"
            await conn.close()
    finally:
        server.close()
    assert seen["sec-websocket-protocol"] == "v1.kernel.websocket.jupyter.org, other"
    assert seen["cookie"] == "a=b"
    assert seen["authorization"] == "token xyz"
    assert seen["host"] == f"127.0.0.1:{port}"
    assert seen["sec-websocket-version"] == "13"


@pytest.mark.parametrize("status", [403, 404, 500])
@pytest.mark.fast
async def test_refused_handshake_raises_its_status(status: int) -> None:
    """A handshake answered with another status than 101 raises HandshakeRefused(status)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers: dict[str, str]) -> None:
        writer.write(f"HTTP/1.1 {status} No\r\nContent-Length: 0\r\n\r\n".encode())
        await reader.read()

    async with raw_server(handler, answer=False) as url:
        with anyio.fail_after(10), pytest.raises(HandshakeRefused) as refused:
            await open_(url)
    assert refused.value.status == status


@pytest.mark.parametrize("answer", [b"SSH-2.0-OpenSSH_9.2\r\n", b"", b"HTTP/1.1 101 OK\r\n"])
@pytest.mark.fast
async def test_an_answer_that_is_not_http_raises_not_http(answer: bytes) -> None:
    """Bytes that are not HTTP, or a connection closed before the whole answer, raise NotHTTP."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers: dict[str, str]) -> None:
        writer.write(answer)
        await writer.drain()

    async with raw_server(handler, answer=False) as url:
        with anyio.fail_after(10), pytest.raises(NotHTTP):
            await open_(url)


@pytest.mark.fast
async def test_a_wrong_accept_or_an_unoffered_subprotocol_is_refused() -> None:
    """A 101 with a wrong Sec-WebSocket-Accept, or choosing a subprotocol the front did not
    offer, raises HandshakeError."""
    for extra_of in (lambda h: "", lambda h: "Sec-WebSocket-Protocol: nope\r\n"):
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          headers: dict[str, str], extra_of=extra_of) -> None:
            answer = accept_answer(headers, extra_of(headers))
            if not extra_of(headers):
                answer = answer.replace(b"Accept: ", b"Accept: x")
            writer.write(answer)
            await reader.read()

        async with raw_server(handler, answer=False) as url:
            with anyio.fail_after(10), pytest.raises(HandshakeError) as refused:
                await open_(url, subprotocols=["v1.kernel.websocket.jupyter.org"])
        assert not isinstance(refused.value, (HandshakeRefused, NotHTTP))


@pytest.mark.fast
async def test_a_remote_that_never_answers_the_handshake_times_out() -> None:
    """No answer to the upgrade request: TimeoutError at open_timeout."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers: dict[str, str]) -> None:
        await reader.read()

    async with raw_server(handler, answer=False) as url:
        with anyio.fail_after(10), pytest.raises(TimeoutError):
            await open_(url, open_timeout=0.3)


@pytest.mark.fast
async def test_frames_split_across_reads_and_several_frames_in_one_read() -> None:
    """Frames arriving a byte at a time, and several frames in one write, all come whole and
    in order, text as str and binary as bytes."""
    payloads: list[bytes | str] = [b"a" * 5, "héllo", b"b" * 300, b"c" * 70_000,
                                   b"d" * 200_000, "t" * 100]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers: dict[str, str]) -> None:
        data = b"".join(frame(p.encode(), 1) if isinstance(p, str) else frame(p)
                        for p in payloads)
        for i in range(0, 400):  # the first frames byte by byte
            writer.write(data[i:i + 1])
            await writer.drain()
        writer.write(data[400:])  # the rest in one go
        await reader.read()

    async with raw_server(handler) as url:
        with anyio.fail_after(20):
            conn = await open_(url)
            for expected in payloads * 1:
                assert await conn.recv() == expected
            await conn.close()


@pytest.mark.fast
async def test_a_message_fragmented_in_several_frames_with_a_ping_between() -> None:
    """A message in several frames (small and large ones, a ping among them) arrives as one
    message; the ping is answered with a pong carrying its payload."""
    parts = [b"x" * 10, b"y" * 5_000_000, b"z" * 1000, b"w" * 100_000]
    pong: list[tuple[int, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers: dict[str, str]) -> None:
        writer.write(frame(parts[0], 2, fin=False) + frame(b"are you there", 9))
        writer.write(frame(parts[1], 0, fin=False))
        writer.write(frame(parts[2], 0, fin=False))
        writer.write(frame(parts[3], 0, fin=True))
        writer.write(frame(b"after", 1))
        pong.append(await read_frame(reader))
        await reader.read()

    async with raw_server(handler) as url:
        with anyio.fail_after(20):
            conn = await open_(url)
            assert await conn.recv() == b"".join(parts)
            assert await conn.recv() == "after"
            await conn.close()
    assert pong[0] == (0xA, b"are you there")


@pytest.mark.fast
async def test_a_large_message_in_one_frame_spanning_several_chunks() -> None:
    """A 9 MB frame (over two of the client's 4 MiB read buffers) arrives byte for byte."""
    payload = os.urandom(9_000_001)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers: dict[str, str]) -> None:
        writer.write(frame(payload))
        await reader.read()

    async with raw_server(handler) as url:
        with anyio.fail_after(20):
            conn = await open_(url)
            assert await conn.recv() == payload
            await conn.close()


@pytest.mark.fast
async def test_the_remotes_close_code_and_reason_reach_the_reader() -> None:
    """A close frame from the remote: the messages before it are read, then recv raises
    ConnectionClosed with its code and reason; the client echoes the code."""
    echoed: list[tuple[int, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers: dict[str, str]) -> None:
        writer.write(frame(b"last") + frame(close_payload(4001, "kernel gone"), 8))
        echoed.append(await read_frame(reader))

    async with raw_server(handler) as url:
        with anyio.fail_after(10):
            conn = await open_(url)
            assert await conn.recv() == b"last"
            with pytest.raises(ConnectionClosed) as closed:
                await conn.recv()
            await conn.close()
    assert closed.value.received is not None
    assert (closed.value.received.code, closed.value.received.reason) == (4001, "kernel gone")
    assert echoed[0][0] == 8 and echoed[0][1][:2] == (4001).to_bytes(2, "big")


@pytest.mark.fast
async def test_close_sends_code_and_reason_and_waits_for_the_remotes() -> None:
    """close(code, reason) sends them; it returns once the remote answered and left."""
    got: list[tuple[int, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers: dict[str, str]) -> None:
        got.append(await read_frame(reader))
        writer.write(frame(got[0][1], 8))
        await writer.drain()

    async with raw_server(handler) as url:
        with anyio.fail_after(10):
            conn = await open_(url)
            await conn.close(1001, "front stopping")
            with pytest.raises(ConnectionClosed) as closed:
                await conn.send(b"late")
    assert got[0] == (8, close_payload(1001, "front stopping"))
    assert closed.value.sent is not None and closed.value.sent.code == 1001


@pytest.mark.fast
async def test_a_remote_that_stops_answering_pings_is_closed_with_1011() -> None:
    """Keepalive: a remote that answers no ping within ping_timeout ends the connection;
    recv raises ConnectionClosed, no close frame received, 1011 sent."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers: dict[str, str]) -> None:
        while await reader.read(65536):  # reads the pings, answers none
            pass

    async with raw_server(handler) as url:
        with anyio.fail_after(10):
            conn = await open_(url, ping_interval=0.2, ping_timeout=0.3, close_timeout=0.5)
            with pytest.raises(ConnectionClosed) as closed:
                await conn.recv()
    assert closed.value.received is None
    assert closed.value.sent is not None and closed.value.sent.code == 1011


@pytest.mark.fast
async def test_pings_answered_keep_the_connection_open() -> None:
    """A remote that answers pings keeps the connection past several ping intervals."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers: dict[str, str]) -> None:
        for _ in range(4):
            opcode, data = await read_frame(reader)
            assert opcode == 9
            writer.write(frame(data, 0xA))
        writer.write(frame(b"still here"))
        await reader.read()

    async with raw_server(handler) as url:
        with anyio.fail_after(10):
            conn = await open_(url, ping_interval=0.1, ping_timeout=0.5)
            assert await conn.recv() == b"still here"
            await conn.close()


@pytest.mark.fast
async def test_read_ahead_is_bounded_while_the_reader_does_not_read() -> None:
    """A reader that does not read: the client stops reading the socket with max_queue
    messages waiting (the remote is held back), and resumes, in order, when read."""
    count, size = 40, 1_000_000
    sent = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers: dict[str, str]) -> None:
        nonlocal sent
        for i in range(count):
            writer.write(frame(bytes([i]) * size))
            await writer.drain()
            sent += 1
        await reader.read()

    async with raw_server(handler) as url:
        with anyio.fail_after(20):
            conn = await open_(url, max_queue=2)
            while not conn._reading_paused:  # the event: reading paused, read-ahead full
                await asyncio.sleep(0.01)
            assert len(conn._messages) == 2
            # What the remote got through is bounded by the socket buffers, not the count.
            assert sent < count
            for i in range(count):
                assert await conn.recv() == bytes([i]) * size
            await conn.close()


@pytest.mark.parametrize(("bad", "code"), [
    (frame(b"masked", masked=True), 1002),
    (frame(b"\xff\xfe", 1), 1007),
    (frame(b"x", 3), 1002),
    (frame(b"x", 0), 1002),
])
@pytest.mark.fast
async def test_a_remote_breaking_the_protocol_is_failed(bad: bytes, code: int) -> None:
    """A masked frame, a text frame that is not UTF-8, an unknown opcode or a continuation
    of nothing: the client closes with 1002/1007 and recv raises ConnectionClosed."""
    got: list[tuple[int, bytes]] = []
    read = anyio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers: dict[str, str]) -> None:
        writer.write(bad)
        got.append(await read_frame(reader))
        read.set()
        await reader.read()

    async with raw_server(handler) as url:
        with anyio.fail_after(10):
            conn = await open_(url, close_timeout=0.5)
            with pytest.raises(ConnectionClosed) as closed:
                await conn.recv()
            await read.wait()
    assert closed.value.received is None
    assert got[0][0] == 8 and got[0][1][:2] == code.to_bytes(2, "big")


@pytest.mark.fast
async def test_sent_messages_are_masked_frames_the_remote_reads() -> None:
    """send(): text as a text frame, bytes as a binary frame, small and large."""
    got: list[tuple[int, bytes]] = []
    big = os.urandom(200_000)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers: dict[str, str]) -> None:
        for _ in range(3):
            got.append(await read_frame(reader))
        writer.write(frame(b"ok"))
        await reader.read()

    async with raw_server(handler) as url:
        with anyio.fail_after(20):
            conn = await open_(url)
            await conn.send("hé")
            await conn.send(b"\x00\x01")
            await conn.send(big)
            assert await conn.recv() == b"ok"
            await conn.close()
    assert got == [(1, "hé".encode()), (2, b"\x00\x01"), (2, big)]


@pytest.mark.fast
async def test_the_connection_lost_without_a_close_frame() -> None:
    """The TCP connection drops mid-message: recv raises ConnectionClosed with nothing
    received (the bridge then tells its client 1011)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers: dict[str, str]) -> None:
        writer.write(frame(b"whole") + frame(b"q" * 1_000_000)[:500_000])
        await writer.drain()
        writer.transport.abort()

    async with raw_server(handler) as url:
        with anyio.fail_after(10):
            conn = await open_(url)
            assert await conn.recv() == b"whole"
            with pytest.raises(ConnectionClosed) as closed:
                await conn.recv()
    assert closed.value.received is None


async def test_through_the_front_a_large_output_and_the_remotes_close_code_and_reason(
    fake_front: Server, fake: FakeKernelRemote
) -> None:
    """Through a front: a 12 MB output arrives whole, then the remote's close code and reason
    (4321 "kernel says bye") reach the front's client as the remote sent them."""
    kernel = fake.new_kernel()
    async with logged_in(fake_front) as http:
        conn = await KernelConnection.open(ws_url(fake_front, kernel),
                                           cookie=cookie_header(http), open_timeout=30)
    try:
        execution = await conn.execute("emit 1 12000000", timeout=30)
        assert len(execution.stdout) == 12_000_000
        await conn.request("execute_request", {"code": "close 4321 kernel says bye"})
        with anyio.fail_after(10), pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await conn.receive()
    finally:
        await conn.close()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4321, "kernel says bye")
