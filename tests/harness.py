"""Helpers shared by the fault, security and load tests."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx

from fps_remote_kernels.launch import Server

from .fault_proxy import RecordedRequest

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
    with anyio.fail_after(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
    status_head, _, payload = data.partition(b"\r\n\r\n")
    lines = status_head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    response_headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        response_headers[key.strip().lower()] = value.strip()
    if response_headers.get("transfer-encoding", "").lower() == "chunked":
        payload = _unchunk(payload)
    return status, response_headers, payload


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return bytes(out)


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
