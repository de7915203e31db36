"""The activity observer: iopub status frames set a kernel's state, any kernel frame is
activity, sockets count as connections, and the remote's model is merged with what it saw."""

from __future__ import annotations

import json
import struct

import anyio
import httpx
import pytest

from fps_remote_kernels.activity import Activity, parse_time
from tests.conftest import cookie_header, ws_url
from tests.support.kernel_client import (
    KernelConnection,
    make_message,
    serialize_legacy,
    serialize_v1,
)
from tests.support.servers import Server

KERNEL = "0b5e7b4c-6f0a-4c36-9a59-2b8f3c1d2e4f"


def status(state: str, channel: str = "iopub") -> dict:
    return make_message("status", {"execution_state": state}, "s", channel)


@pytest.mark.fast
def test_v1_status_frames_set_the_state() -> None:
    """A v1 iopub status frame sets the execution state; other frames leave it."""
    activity = Activity()
    activity.from_kernel(KERNEL, serialize_v1(status("busy")))
    assert activity.kernels[KERNEL].execution_state == "busy"
    activity.from_kernel(KERNEL, serialize_v1(make_message("stream", {"name": "stdout",
                                                           "text": "x" * 2_000_000}, "s",
                                                           "iopub")))
    assert activity.kernels[KERNEL].execution_state == "busy"
    activity.from_kernel(KERNEL, serialize_v1(status("idle", channel="shell")))
    assert activity.kernels[KERNEL].execution_state == "busy"
    activity.from_kernel(KERNEL, serialize_v1(status("idle")))
    assert activity.kernels[KERNEL].execution_state == "idle"


@pytest.mark.fast
def test_v1_status_read_without_json_reads_as_json_does() -> None:
    """The JSON-free reading of usual status frames agrees with parsing them: other spacing,
    extra content keys, an unknown state, a non-status msg_type, a broken content."""
    def state_after(header: bytes, content: bytes, start: str = "starting") -> str | None:
        activity = Activity()
        activity.from_kernel(KERNEL, serialize_v1(status(start)))
        parts = [b"iopub", header, b"{}", b"{}", content]
        offsets = [8 * 7]
        for part in parts:
            offsets.append(offsets[-1] + len(part))
        activity.from_kernel(KERNEL, struct.pack("<7Q", 6, *offsets) + b"".join(parts))
        return activity.kernels[KERNEL].execution_state

    header = json.dumps(status("idle")["header"]).encode()
    assert b'"msg_type": "status"' in header
    assert state_after(header, b'{"execution_state":"busy"}') == "busy"
    assert state_after(header, b' { "execution_state" :  "idle" } ', start="busy") == "idle"
    assert state_after(header, b'{"execution_state": "busy", "x": 1}') == "busy"
    assert state_after(header, b'{"execution_state": "sleepy"}') == "starting"
    assert state_after(header, b'{"execution_state": "busy"') == "starting"
    stream = header.replace(b'"msg_type": "status"', b'"msg_type": "stream"')
    assert state_after(stream, b'{"execution_state": "busy"}') == "starting"
    spaced = header.replace(b'"msg_type": "status"', b'"msg_type" :\n"status"')
    assert state_after(spaced, b'{"execution_state":"busy"}') == "busy"


@pytest.mark.fast
def test_legacy_status_frames_set_the_state() -> None:
    """Legacy text and binary status messages set the state; garbage is ignored."""
    activity = Activity()
    activity.from_kernel(KERNEL, serialize_legacy(status("busy")))
    assert activity.kernels[KERNEL].execution_state == "busy"
    activity.from_kernel(KERNEL, serialize_legacy({**status("idle"), "buffers": [b"b"]}))
    assert activity.kernels[KERNEL].execution_state == "idle"
    activity.from_kernel(KERNEL, '{"execution_state": not json')
    activity.from_kernel(KERNEL, b"\0\0\0\x09garbage")
    assert activity.kernels[KERNEL].execution_state == "idle"


@pytest.mark.fast
def test_merge_prefers_what_the_front_saw() -> None:
    """The merged model has the front's state, the later last activity and at least the
    front's sockets; a remote that says `dead` is believed; unknown kernels are untouched."""
    activity = Activity()
    remote = {"id": KERNEL, "name": "python3", "execution_state": "starting",
              "last_activity": "2020-01-01T00:00:00Z", "connections": 0}
    assert activity.merge(remote) == remote
    activity.opened(KERNEL, "s")
    activity.from_kernel(KERNEL, serialize_v1(status("busy")))
    merged = activity.merge(remote)
    assert merged["execution_state"] == "busy"
    assert merged["connections"] == 1
    assert (parse_time(merged["last_activity"]) or 0) > (parse_time(remote["last_activity"])
                                                         or 0)
    assert activity.merge({**remote, "execution_state": "dead"})["execution_state"] == "dead"
    activity.closed(KERNEL, "s")
    assert activity.merge(remote)["connections"] == 0
    json.dumps(merged)


@pytest.mark.anyio
async def test_a_running_cell_shows_busy_through_the_front(
        front: Server, api: httpx.AsyncClient, session: dict) -> None:
    """On a Jupyverse remote (which leaves REST execution_state at `starting` for v1 sockets),
    GET /api/kernels/{id} through the front says `busy` while a cell sleeps, then `idle`,
    and counts the open socket."""
    kernel_id = session["kernel"]["id"]

    async def state() -> dict:
        response = await api.get(f"/api/kernels/{kernel_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    conn = await KernelConnection.open(ws_url(front, kernel_id), cookie=cookie_header(api),
                                       open_timeout=30)
    try:
        with anyio.fail_after(60):
            await conn.execute("1", timeout=30)
            msg_id = await conn.request("execute_request", {
                "code": "import time; time.sleep(3)", "silent": False,
                "store_history": False, "user_expressions": {}, "allow_stdin": False,
                "stop_on_error": True})
            await conn.wait_for("execute_input", parent=msg_id)
            busy = await state()
            assert busy["execution_state"] == "busy", busy
            assert busy["connections"] >= 1, busy
            await conn.collect(msg_id)
            idle = await state()
            assert idle["execution_state"] == "idle", idle
    finally:
        await conn.close()
