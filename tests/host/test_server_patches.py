"""What the front changes in third-party libraries holds: the patched code is still the code
the patch was written for, and the front on uvloop survives what used to kill it."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from fps_remote_kernels.host import server_patches as serverpatches
from fps_remote_kernels.host.code_check import code_digest
from tests.support.servers import Server, front_server

pytestmark = pytest.mark.anyio


@pytest.mark.fast
def test_anyio_send_eof_is_the_code_the_patch_was_written_for() -> None:
    """anyio's SocketStream.send_eof is unchanged since the patch was written: when this
    fails, check whether uvloop still needs the patch and update SEND_EOF_DIGEST."""
    from anyio._backends._asyncio import SocketStream

    if getattr(SocketStream.send_eof, "_remote_kernels", False):
        pytest.skip("patched in this process already")
    assert code_digest(SocketStream.send_eof) == serverpatches.SEND_EOF_DIGEST


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
        assert front_facts(front)["event_loop"] == "uvloop"
        idle_out_a_kept_alive_connection(front)
        idle_out_a_kept_alive_connection(front)
        assert front.process is not None and front.process.poll() is None, front.log_tail()
    finally:
        front.stop()


@pytest.mark.parametrize("name,digest", [
    ("wsproto.frame_protocol:FrameProtocol._serialize_frame", "SERIALIZE_FRAME_DIGEST"),
    ("anycorn.tcp_server:TCPServer.__init__", "TCP_SERVER_INIT_DIGEST"),
    ("anycorn.tcp_server:TCPServer.protocol_send", "PROTOCOL_SEND_DIGEST"),
])
@pytest.mark.fast
def test_relay_path_code_is_the_code_the_patches_were_written_for(name: str, digest: str
                                                                  ) -> None:
    """wsproto's frame serialization and anycorn's send lock are unchanged since the
    tune_server patches were written: when this fails, re-measure and update the digest."""
    import importlib

    module_name, qualname = name.split(":")
    owner_name, attribute = qualname.split(".")
    function = getattr(getattr(importlib.import_module(module_name), owner_name), attribute)
    if getattr(function, "_remote_kernels", False):
        pytest.skip("patched in this process already")
    assert code_digest(function) == getattr(serverpatches, digest)


@pytest.mark.fast
def test_patched_frames_are_byte_for_byte_wsprotos() -> None:
    """The one-copy serialization writes exactly the bytes wsproto's own code writes, for
    every length class, opcode, fin bit and payload type; a control frame too long is
    refused as before."""
    from wsproto.frame_protocol import FrameProtocol, Opcode

    server = FrameProtocol(client=False, extensions=[])
    original = FrameProtocol._serialize_frame
    if getattr(original, "_remote_kernels", False):
        pytest.skip("patched in this process already")
    try:
        assert serverpatches.patch_frame_serialization()
        patched = FrameProtocol._serialize_frame
        for size in (0, 1, 125, 126, 127, 65535, 65536, 70_000):
            payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
            for opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION):
                for fin in (True, False):
                    for kind in (bytes, bytearray, memoryview):
                        expected = bytes(original(server, opcode, kind(payload), fin))
                        assert bytes(patched(server, opcode, kind(payload), fin)) == expected
        assert bytes(patched(server, Opcode.PING, b"p")) == bytes(original(server, Opcode.PING,
                                                                           b"p"))
        with pytest.raises(ValueError):
            patched(server, Opcode.PING, b"x" * 126)
    finally:
        FrameProtocol._serialize_frame = original  # type: ignore[method-assign]


def test_front_applies_its_server_tuning(remote: Server, tmp_path: Path) -> None:
    """A front says in /api/status which tune_server patches it applied (both, on the
    libraries it pins), its server and its event loop."""
    front = front_server(tmp_path, remote.url, remote.token).start()
    try:
        facts = front_facts(front)
    finally:
        front.stop()
    assert facts["tuned"] == ["wsproto frame serialization", "anycorn send lock"]
    # The suite may run every front on uvicorn or uvloop (REMOTE_KERNELS_TEST_SERVER/_LOOP).
    assert facts["server"] in ("anycorn", "uvicorn")
    assert facts["event_loop"] in ("asyncio", "uvloop")


def front_facts(front: Server) -> dict[str, object]:
    """What /api/status says the front changed in its own process."""
    import httpx

    with httpx.Client(base_url=front.url, timeout=30) as client:
        response = client.get("/api/status", params={"token": front.token},
                              follow_redirects=True)
        assert response.status_code == 200, response.text
        return dict(response.json()["front"])
