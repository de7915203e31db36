"""What the front changes in third-party libraries holds: the patched code is still the code
the patch was written for, and the front on uvloop survives what used to kill it."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from fps_remote_kernels import serverpatches
from fps_remote_kernels.launch import Server, front_server

pytestmark = pytest.mark.anyio


def test_anyio_send_eof_is_the_code_the_patch_was_written_for() -> None:
    """anyio's SocketStream.send_eof is unchanged since the patch was written: when this
    fails, check whether uvloop still needs the patch and update SEND_EOF_DIGEST."""
    from anyio._backends._asyncio import SocketStream

    if getattr(SocketStream.send_eof, "_remote_kernels", False):
        pytest.skip("patched in this process already")
    assert serverpatches._source_digest(SocketStream.send_eof) == serverpatches.SEND_EOF_DIGEST


def idle_out_a_kept_alive_connection(front: Server) -> None:
    """One request on a kept-alive connection, then silence until the server's keep-alive
    timeout (5 s) closes it: anycorn ends it with send_eof on a closed transport."""
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as sock:
        sock.sendall(f"GET /api/status?token={front.token} HTTP/1.1\r\nHost: front\r\n\r\n"
                     .encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + 10
        while sock.recv(65536):  # b"": the server closed the connection
            assert time.monotonic() < deadline, "the server never closed the idle connection"


def test_front_on_uvloop_survives_an_idle_kept_alive_connection(remote: Server,
                                                               tmp_path: Path) -> None:
    """With event_loop=uvloop the front runs on uvloop, and a kept-alive connection closed by
    its idle timeout no longer takes the whole server down: the next request is answered."""
    front = front_server(tmp_path, remote.url, remote.token,
                         extra=["--set", "remote_kernels.event_loop=uvloop"]).start()
    try:
        assert "The front runs on uvloop" in front.log_path.read_text()
        idle_out_a_kept_alive_connection(front)
        idle_out_a_kept_alive_connection(front)
        assert front.process is not None and front.process.poll() is None, front.log_tail()
    finally:
        front.stop()
