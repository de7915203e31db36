"""Helpers shared by the fault, security and load tests."""

from __future__ import annotations

import asyncio
import http.client
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import h11
import httpx

from tests.support.fault_proxy import RecordedRequest
from tests.support.servers import Server

# What the front may ask of a remote: its kernels, kernelspecs and sessions API, its status,
# and `GET /api` (the version probe that tells a Jupyverse remote from jupyter_server).
_ALLOWED_REMOTE_PATH = re.compile(
    r"^/(api/kernels(/[0-9a-f-]{36}(/(channels|interrupt|restart))?)?"
    r"|api/kernelspecs(/[A-Za-z0-9._-]+)?"
    r"|kernelspecs/[A-Za-z0-9_][A-Za-z0-9._-]*/[A-Za-z0-9_][A-Za-z0-9._-]*"
    r"|api/sessions(/[0-9a-f-]{36})?"
    r"|api/status|api)$"
)


def outside_the_kernels_api(requests: Iterable[RecordedRequest]) -> list[str]:
    """The requests that reached the remote outside the kernels API (should be none)."""
    return [f"{r.method} {r.target}" for r in requests
            if not _ALLOWED_REMOTE_PATH.match(r.path) or r.method not in
            ("GET", "POST", "PATCH", "DELETE")]


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def wait_until(condition: Callable[[], bool], timeout: float, what: str,
                     interval: float = 0.05) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds saying `what`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await anyio.sleep(interval)


async def raw_request(port: int, method: str, target: str, headers: dict[str, str] | None = None,
                      body: bytes = b"", timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request with `target` sent exactly as given (no client-side
    normalisation of `..` or percent-escapes), on its own connection."""
    head = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
            f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    parser = h11.Connection(h11.CLIENT)
    # The request goes out raw; h11 only reads the answer, so tell it a request was sent.
    parser.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    parser.send(h11.EndOfMessage())
    status, answer_headers, answer = 0, {}, bytearray()
    with anyio.fail_after(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))

            async def send_body() -> None:
                # The server may answer (413) before reading it all: read while sending.
                writer.write(body)
                await writer.drain()

            async with anyio.create_task_group() as tg:
                tg.start_soon(send_body)
                while True:
                    event = parser.next_event()
                    if event is h11.NEED_DATA:
                        parser.receive_data(await reader.read(65536))
                    elif isinstance(event, h11.Response):
                        status = event.status_code
                        answer_headers = {k.decode().lower(): v.decode("latin-1")
                                          for k, v in event.headers}
                    elif isinstance(event, h11.Data):
                        answer += event.data
                    elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                        break
                tg.cancel_scope.cancel()
        finally:
            writer.close()
    return status, answer_headers, bytes(answer)


async def login(server: Server) -> httpx.AsyncClient:
    """A client of `server` holding its auth cookie (`?token=` on any route sets it; an
    API-only front has no `/` to visit)."""
    client = httpx.AsyncClient(base_url=server.url, timeout=60)
    response = await client.get("/api/status", params={"token": server.token})
    assert response.status_code == 200, response.text
    assert client.cookies.get("fastapiusersauth"), "the front set no auth cookie"
    return client


@asynccontextmanager
async def logged_in(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    client = await login(server)
    try:
        yield client
    finally:
        await client.aclose()


def raw_request_sync(port: int, method: str, target: str, headers: dict[str, str] | None = None,
                     body: bytes = b"", timeout: float = 30) -> tuple[int, bytes]:
    """`raw_request` for synchronous tests (hypothesis): `target` goes out as given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
