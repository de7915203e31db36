"""An answer sent before the request's body was read (413, 415, an auth refusal) never leaves
the client's connection hanging: the server says `Connection: close` and closes it, and a
client that reuses its connection pool gets its next answer at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import anyio
import httpx
import pytest

from tests.support.servers import Server, front_server

pytestmark = pytest.mark.anyio

# Over the front's 1 MiB limit, and far over anycorn's queue of 10 body chunks for the app.
LARGE_BODY = b'{"path": "' + b"x" * (4 * 1024 * 1024) + b'"}'


@pytest.fixture(scope="module")
def api_front(remote: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = front_server(tmp_path_factory.mktemp("early-front"), remote.url, remote.token).start()
    yield server
    server.stop()


async def _answer_then_eof(port: int, head: str, body: bytes) -> tuple[bytes, bytes]:
    """Send a request on a raw connection; return the answer's head and what follows the
    answer before the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode("latin-1") + b"\r\n\r\n")

        async def send_body() -> None:
            try:
                writer.write(body)
                await writer.drain()
            except ConnectionError:
                pass  # the server closed the connection: the rest of the body is not wanted

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(send_body)
                answer = await reader.readuntil(b"\r\n\r\n")
                rest = bytearray()
                try:
                    while chunk := await reader.read(65536):
                        rest += chunk
                except ConnectionError:
                    pass  # closed with unread data: a reset is a close too
                tg.cancel_scope.cancel()
        return answer, bytes(rest)
    finally:
        writer.close()


@pytest.mark.parametrize(("what", "content_type", "authenticated", "status"), [
    ("body over the limit", "application/json", True, 413),
    ("wrong content type", "application/xml", True, 415),
    ("no credentials", "application/json", False, 403),
])
async def test_early_answer_closes_the_connection(api_front: Server, what: str,
                                                  content_type: str, authenticated: bool,
                                                  status: int) -> None:
    """An early answer to a large body says Connection: close and the server then closes."""
    query = f"?token={api_front.token}" if authenticated else ""
    head = (f"POST /api/sessions{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(LARGE_BODY)}")
    answer, _ = await _answer_then_eof(api_front.port, head, LARGE_BODY)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), (what, answer)
    assert b"connection: close" in answer.lower(), (what, answer)


async def test_pooled_client_gets_its_next_answer_after_a_413(api_front: Server) -> None:
    """A client that reuses its pool after a 413 is answered at once (it used to hang)."""
    async with httpx.AsyncClient(base_url=api_front.url, timeout=10,
                                 params={"token": api_front.token}) as client:
        assert (await client.get("/api/status")).status_code == 200
        refused = await client.post("/api/sessions", content=LARGE_BODY,
                                    headers={"Content-Type": "application/json"})
        assert refused.status_code == 413
        assert refused.json()["message"] == "Request body too large"
        with anyio.fail_after(5):
            assert (await client.get("/api/sessions")).status_code == 200


async def test_read_body_keeps_the_connection(api_front: Server) -> None:
    """A request whose body was read keeps its connection alive (no needless closes)."""
    async with httpx.AsyncClient(base_url=api_front.url, timeout=10,
                                 params={"token": api_front.token}) as client:
        answer = await client.post("/api/sessions", json={"path": "a.ipynb"})
        assert answer.status_code == 400  # missing type: the body was read
        assert answer.headers.get("connection", "").lower() != "close"
