"""The activity record without a kernel: times as jupyter_server writes them, connections,
`seen_alive`, forgetting, and frames too large to be status messages (the frame parsing and
the merge are in test_activity.py)."""

from __future__ import annotations

import time

import pytest

from fps_remote_kernels.activity import Activity, format_time, parse_time
from tests.support.kernel_client import make_message, serialize_v1

pytestmark = pytest.mark.fast

KERNEL = "0b5e7b4c-6f0a-4c36-9a59-2b8f3c1d2e4f"


def status(state: str) -> bytes:
    return serialize_v1(make_message("status", {"execution_state": state}, "s", "iopub"))


def test_times_are_written_in_utc_with_a_z_and_microseconds() -> None:
    """format_time writes ISO 8601 in UTC ending in Z, as jupyter_server's last_activity."""
    assert format_time(0) == "1970-01-01T00:00:00.000000Z"
    assert format_time(1.5) == "1970-01-01T00:00:01.500000Z"


@pytest.mark.parametrize(("text", "seconds"), [
    ("1970-01-01T00:00:01.500000Z", 1.5),
    ("1970-01-01T00:00:10+00:00", 10.0),
    ("1970-01-01T01:00:10+01:00", 10.0),
    ("1970-01-01T00:00:10", 10.0),  # naive: UTC
])
def test_times_in_any_zone_are_read_as_seconds_since_the_epoch(text: str, seconds: float
                                                                ) -> None:
    """parse_time reads Z, offsets and naive times (as UTC)."""
    assert parse_time(text) == seconds


@pytest.mark.parametrize("value", [None, "", "yesterday", 17, ["2020-01-01"]])
def test_what_is_not_a_time_reads_as_none(value: object) -> None:
    """Anything but an ISO 8601 string is None, never an error."""
    assert parse_time(value) is None


def test_a_time_written_is_read_back_the_same() -> None:
    """format_time and parse_time round-trip to the microsecond."""
    now = round(time.time(), 6)
    assert parse_time(format_time(now)) == pytest.approx(now, abs=1e-6)


def test_sockets_count_as_connections_and_never_below_zero() -> None:
    """opened/closed count the front's sockets per kernel; an extra close is ignored."""
    activity = Activity()
    activity.opened(KERNEL, "s1")
    activity.opened(KERNEL, "s2")
    activity.closed(KERNEL, "s1")
    assert activity.kernels[KERNEL].connections == 1
    activity.closed(KERNEL, "s2")
    activity.closed(KERNEL, "s2")
    assert activity.kernels[KERNEL].connections == 0


def test_a_kernel_is_alive_while_connected_or_recently_heard() -> None:
    """seen_alive: an open socket, or a frame within `within` seconds; never if dead."""
    activity = Activity()
    assert not activity.seen_alive(KERNEL)
    activity.from_kernel(KERNEL, status("idle"))
    assert activity.seen_alive(KERNEL)
    assert not activity.seen_alive(KERNEL, within=0)
    activity.opened(KERNEL, "s")
    assert activity.seen_alive(KERNEL, within=0)
    activity.from_kernel(KERNEL, status("dead"))
    assert not activity.seen_alive(KERNEL)


def test_a_large_frame_is_activity_but_never_a_state() -> None:
    """A frame over 16 KiB moves last_activity and leaves the state as it was."""
    activity = Activity()
    activity.from_kernel(KERNEL, status("busy"))
    before = activity.kernels[KERNEL].last_activity
    padded = serialize_v1(make_message("status", {"execution_state": "idle",
                                                  "pad": "x" * 20_000}, "s", "iopub"))
    activity.from_kernel(KERNEL, padded)
    assert activity.kernels[KERNEL].execution_state == "busy"
    assert activity.kernels[KERNEL].last_activity >= before


def test_frames_to_the_kernel_are_not_activity() -> None:
    """What clients send does not count (jupyter_server counts what the kernel sends)."""
    activity = Activity()
    activity.to_kernel(KERNEL, status("busy"))
    assert KERNEL not in activity.kernels


def test_a_forgotten_kernel_leaves_models_untouched() -> None:
    """After forget(), merge() returns the remote's model as it is."""
    activity = Activity()
    activity.opened(KERNEL, "s")
    activity.from_kernel(KERNEL, status("busy"))
    activity.forget(KERNEL)
    model = {"id": KERNEL, "execution_state": "idle", "connections": 0,
             "last_activity": "2020-01-01T00:00:00Z"}
    assert activity.merge(model) == model


def test_a_later_remote_activity_and_more_remote_connections_are_kept() -> None:
    """merge keeps the remote's later last_activity and higher connection count."""
    activity = Activity()
    activity.opened(KERNEL, "s")
    future = format_time(time.time() + 3600)
    model = {"id": KERNEL, "execution_state": "idle", "connections": 5,
             "last_activity": future}
    merged = activity.merge(model)
    assert merged["last_activity"] == future and merged["connections"] == 5
