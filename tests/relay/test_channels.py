"""The kernel WebSocket through the front, on both wire protocols, with a real kernel."""

from __future__ import annotations

import uuid

import anyio
import httpx
import pytest
import websockets

from tests.conftest import ALL_KINDS, cookie_header, ws_url
from tests.support.kernel_client import V1, KernelConnection
from tests.support.servers import Server

pytestmark = [pytest.mark.anyio, ALL_KINDS]

PROTOCOLS = [pytest.param(V1, id="v1"), pytest.param(None, id="legacy")]


async def open_kernel(front: Server, api: httpx.AsyncClient, kernel_id: str,
                      protocol: str | None) -> KernelConnection:
    conn = await KernelConnection.open(ws_url(front, kernel_id), cookie=cookie_header(api),
                                       protocol=protocol)
    assert conn.protocol == protocol, "the front must agree the protocol the client offered"
    return conn


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_execute_print_returns_42(front: Server, api: httpx.AsyncClient, session: dict,
                                        protocol: str | None) -> None:
    """execute_request `print(6*7)` streams `42` and replies ok, on both protocols."""
    conn = await open_kernel(front, api, session["kernel"]["id"], protocol)
    try:
        info = await conn.request("kernel_info_request", {})
        reply = await conn.collect(info, timeout=60)
        assert reply.reply["content"]["status"] == "ok"
        execution = await conn.execute("print(6*7)")
        assert execution.stdout == "42\n"
        assert execution.reply["content"]["status"] == "ok"
    finally:
        await conn.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_input_is_answered_over_stdin(front: Server, api: httpx.AsyncClient,
                                            session: dict, protocol: str | None,
                                            remote_kind: str) -> None:
    """`input()` sends input_request to this client; its input_reply reaches the kernel."""
    if remote_kind == "jupyverse":
        # Measured 2026-12-02, straight to the remote (no front): with fps-kernels 0.11.6,
        # fps-kernel-subprocess 0.2.6 and zmq-anyio 0.4.1 a Jupyverse remote often never
        # forwards the kernel's input_request (the same kernel answers jupyter_client at once).
        pytest.xfail("Jupyverse remote drops input_request (remote-side bug, see comment)")
    conn = await open_kernel(front, api, session["kernel"]["id"], protocol)
    try:
        msg_id = await conn.request("execute_request", {
            "code": "print('got', input('name? '))", "silent": False, "store_history": False,
            "user_expressions": {}, "allow_stdin": True, "stop_on_error": True})
        prompt = await conn.wait_for("input_request", timeout=60)
        assert prompt["channel"] == "stdin" and prompt["content"]["prompt"] == "name? "
        await conn.request("input_reply", {"value": "ada"}, channel="stdin")
        execution = await conn.collect(msg_id)
        assert "got ada" in execution.stdout
    finally:
        await conn.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_comm_binary_buffers_round_trip(front: Server, api: httpx.AsyncClient,
                                              session: dict, protocol: str | None) -> None:
    """A comm message with binary buffers reaches the kernel and its echo returns intact."""
    conn = await open_kernel(front, api, session["kernel"]["id"], protocol)
    try:
        setup = await conn.execute(
            "def _target(comm, open_msg):\n"
            "    @comm.on_msg\n"
            "    def _echo(msg):\n"
            "        comm.send({'n': len(msg['buffers'])}, buffers=[bytes(b)[::-1] for b in"
            " msg['buffers']])\n"
            "get_ipython().kernel.comm_manager.register_target('echo', _target)\n")
        assert setup.reply["content"]["status"] == "ok"
        comm_id = uuid.uuid4().hex
        await conn.request("comm_open", {"comm_id": comm_id, "target_name": "echo", "data": {}})
        payload = bytes(range(256)) * 40 + b"\x00\xff"
        await conn.request("comm_msg", {"comm_id": comm_id, "data": {}},
                           buffers=[payload, b"\x01\x02"])
        with anyio.fail_after(60):
            while True:
                msg = await conn.receive()
                if msg["header"]["msg_type"] == "comm_msg":
                    break
        assert msg["content"]["data"] == {"n": 2}
        assert [bytes(b) for b in msg["buffers"]] == [payload[::-1], b"\x02\x01"]
    finally:
        await conn.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_20_mb_output_arrives_intact(front: Server, api: httpx.AsyncClient, session: dict,
                                           protocol: str | None) -> None:
    """A single 20 MB stream message passes the front unchanged (no per-message cap)."""
    conn = await open_kernel(front, api, session["kernel"]["id"], protocol)
    try:
        execution = await conn.execute(
            "import sys; sys.stdout.write('0123456789' * 2_000_000); sys.stdout.flush()",
            timeout=120)
        assert execution.stdout == "0123456789" * 2_000_000
    finally:
        await conn.close()


async def test_interrupt_stops_a_running_sleep(front: Server, api: httpx.AsyncClient,
                                               session: dict) -> None:
    """POST interrupt (204) during `time.sleep` ends the cell with KeyboardInterrupt quickly."""
    kernel_id = session["kernel"]["id"]
    conn = await open_kernel(front, api, kernel_id, V1)
    try:
        msg_id = await conn.request("execute_request", {
            "code": "import time\nfor _ in range(600): time.sleep(0.1)", "silent": False,
            "store_history": False, "user_expressions": {}, "allow_stdin": False,
            "stop_on_error": True})
        await conn.wait_for("status", parent=msg_id, timeout=60)  # busy: it is running
        response = await api.post(f"/api/kernels/{kernel_id}/interrupt")
        assert response.status_code == 204
        execution = await conn.collect(msg_id, timeout=20)
        assert execution.reply["content"]["status"] == "error"
        assert execution.reply["content"]["ename"] == "KeyboardInterrupt"
    finally:
        await conn.close()


async def test_restart_then_execute_again(front: Server, api: httpx.AsyncClient,
                                          session: dict) -> None:
    """After POST restart the kernel state is fresh and execution works again."""
    kernel_id = session["kernel"]["id"]
    conn = await open_kernel(front, api, kernel_id, V1)
    try:
        assert (await conn.execute("x = 1")).reply["content"]["status"] == "ok"
        response = await api.post(f"/api/kernels/{kernel_id}/restart")
        assert response.status_code == 200
    finally:
        await conn.close()
    conn = await open_kernel(front, api, kernel_id, V1)
    try:
        execution = await conn.execute("print('x' in dir())")
        assert execution.stdout == "False\n"
        assert execution.reply["content"]["execution_count"] == 1
    finally:
        await conn.close()


async def test_websocket_without_front_cookie_is_refused(front: Server, session: dict) -> None:
    """A kernel WebSocket without the front's auth never opens."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        await KernelConnection.open(ws_url(front, session["kernel"]["id"]))
    assert refused.value.response.status_code == 403


async def test_websocket_to_unknown_kernel_is_refused(front: Server, api: httpx.AsyncClient
                                                      ) -> None:
    """A kernel WebSocket for an unknown kernel is refused at the handshake (404)."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        await KernelConnection.open(ws_url(front, str(uuid.uuid4())), cookie=cookie_header(api))
    assert refused.value.response.status_code in (403, 404)
