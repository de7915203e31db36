"""Micro-benchmark of WebSocket clients for the front's upstream leg (issue 9).

A raw server in a child process sends prebuilt frames as fast as the client takes them
(or echoes what it gets); the client runs here, and this process's CPU time is what each
client costs. Clients: `ours` (fps_remote_kernels.remote.kernel_socket), `websockets` as the
front used it (max_queue=(2, 1)), `websockets` with its defaults (max_queue=16), `picows`
(if installed; a frame-level API, wrapped in the recv() the bridge needs).

    .venv/bin/python -m benchmarks.upstream_client [--clients ours,websockets] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from tests.support.raw_websocket import accept_answer, frame, read_frame


async def _serve(sock: socket.socket) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        key = next(line.split(":", 1)[1].strip() for line in lines
                   if line.lower().startswith("sec-websocket-key:"))
        writer.write(accept_answer({"sec-websocket-key": key}))
        _, mode, size, count = path.split("/")
        size, count = int(size), int(count)
        if mode == "stream":
            prebuilt = frame(os.urandom(size))
            batch = max(1, (1 << 20) // len(prebuilt))
            sent = 0
            while sent < count:
                k = min(batch, count - sent)
                writer.write(prebuilt * k)
                sent += k
                await writer.drain()
            writer.write(frame(b"\x03\xe8", 8))
            await writer.drain()
        else:  # echo: read a masked frame, send it back unmasked
            for _ in range(count):
                opcode, unmasked = await read_frame(reader)
                writer.write(frame(unmasked, opcode))
            writer.write(frame(b"\x03\xe8", 8))
        try:
            await asyncio.wait_for(reader.read(), 5)
        except (TimeoutError, ConnectionError):
            pass
        writer.close()

    async def quiet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(quiet, sock=sock, backlog=1024)
    async with server:
        await server.serve_forever()


def _server_process(sock: socket.socket) -> None:
    asyncio.run(_serve(sock))


# ------------------------------------------------------------------ clients


async def _ours(url: str) -> tuple[Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]],
                                   Callable[[], Awaitable[None]]]:
    from fps_remote_kernels.remote.kernel_socket import connect

    conn = await connect(url, ping_interval=None, max_queue=2)
    return conn.recv, conn.send, conn.close


async def _websockets(url: str, max_queue: Any) -> Any:
    import websockets

    conn = await websockets.connect(url, max_size=None, max_queue=max_queue, compression=None,
                                    ping_interval=None, user_agent_header=None)
    return conn.recv, conn.send, conn.close


async def _picows(url: str) -> Any:
    import picows

    queue: deque[Any] = deque()
    state: dict[str, Any] = {"waiter": None, "closed": False}

    class Listener(picows.WSListener):  # type: ignore[misc]
        def on_wsframe(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == picows.WSMsgType.CLOSE:
                state["closed"] = True
            elif frame.msg_type == picows.WSMsgType.BINARY:
                queue.append(frame.get_payload_as_bytes())
                if len(queue) >= 2:
                    transport.underlying_transport.pause_reading()
            waiter = state["waiter"]
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    transport, _ = await picows.ws_connect(Listener, url, max_frame_size=1 << 30)

    async def recv() -> Any:
        while not queue:
            if state["closed"]:
                raise EOFError
            state["waiter"] = asyncio.get_running_loop().create_future()
            await state["waiter"]
        message = queue.popleft()
        if len(queue) <= 1:
            transport.underlying_transport.resume_reading()
        return message

    async def send(data: Any) -> None:
        transport.send(picows.WSMsgType.BINARY, data)

    async def close() -> None:
        transport.disconnect()

    return recv, send, close


CLIENTS: dict[str, Callable[[str], Awaitable[Any]]] = {
    "ours": _ours,
    "websockets": lambda url: _websockets(url, (2, 1)),
    "websockets-q16": lambda url: _websockets(url, 16),
    "picows": _picows,
}


async def _stream(client: str, port: int, size: int, count: int) -> tuple[float, float]:
    recv, _, close = await CLIENTS[client](f"ws://127.0.0.1:{port}/stream/{size}/{count}")
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        message = await recv()
        assert len(message) == size
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await close()
    return cpu, wall


async def _echo(client: str, port: int, size: int, count: int) -> tuple[float, float]:
    recv, send, close = await CLIENTS[client](f"ws://127.0.0.1:{port}/echo/{size}/{count}")
    payload = os.urandom(size)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        await send(payload)
        assert await recv() == payload
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await close()
    return cpu, wall


def _rss_kib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


async def _idle(client: str, port: int, sockets: int) -> float:
    """KiB of this process's RSS per open, idle connection (keepalive on where the client
    has it, as the front runs them)."""
    url = f"ws://127.0.0.1:{port}/echo/1/1000000"
    if client == "ours":
        from fps_remote_kernels.remote.kernel_socket import connect

        async def one() -> Any:
            return await connect(url, ping_interval=20, ping_timeout=20, max_queue=2)
    elif client.startswith("websockets"):
        import websockets

        async def one() -> Any:
            return await websockets.connect(url, max_size=None, max_queue=(2, 1),
                                            compression=None, user_agent_header=None)
    else:
        async def one() -> Any:
            return await _picows(url)
    keep = [await one() for _ in range(20)]  # warm up allocators and caches
    before = _rss_kib()
    keep += [await one() for _ in range(sockets)]
    after = _rss_kib()
    await asyncio.gather(*(conn[2]() if isinstance(conn, tuple) else conn.close()
                           for conn in keep))
    return (after - before) / sockets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = multiprocessing.get_context("fork").Process(target=_server_process, args=(sock,),
                                                          daemon=True)
    server.start()
    cases = [("stream 25 MB x 8", _stream, 25_000_000, 8),
             ("stream 2 MB x 50", _stream, 2_000_000, 50),
             ("stream 1 kB x 100k", _stream, 1000, 100_000),
             ("echo 1 kB x 5k", _echo, 1000, 5000)]
    try:
        for client in args.clients.split(","):
            if client == "websockets-q16":
                continue
            try:
                kib = asyncio.run(_idle(client, port, 500))
            except ImportError:
                continue
            print(f"{'500 idle sockets':22} {client:15} {kib:7.1f} KiB per open socket")
        for name, run, size, count in cases:
            for client in args.clients.split(","):
                try:
                    results = [asyncio.run(run(client, port, size, count))
                               for _ in range(args.repeat)]
                except ImportError:
                    print(f"{name:22} {client:15} not installed")
                    break
                cpu = statistics.median(r[0] for r in results)
                wall = statistics.median(r[1] for r in results)
                gb = size * count / 1e9
                print(f"{name:22} {client:15} {cpu / gb:7.2f} CPU-s/GB  "
                      f"{count / wall:10,.0f} msg/s  {count / cpu:10,.0f} msg/CPU-s  "
                      f"{size * count / wall / 1e6:8.1f} MB/s")
    finally:
        server.kill()


if __name__ == "__main__":
    main()
