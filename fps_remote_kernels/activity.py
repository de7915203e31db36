"""Kernel activity as the front sees it: execution state, last activity, connections.

A Jupyverse remote leaves `execution_state` at `starting` for v1 sockets, and no remote knows
of the front's own sockets, so the front watches the frames it relays (an observer, see
observers.py) and merges what it saw into the kernel models it answers, as jupyter_server's
kernel manager does from the iopub channel: any kernel message is activity, and iopub
`status` messages set the execution state.

This runs on every frame: a frame is only peeked at. A status message is small, so a large
frame (output, data) is never looked into; a v1 frame's channel is read from its offset table,
then the header is parsed only if it may be a status message; a legacy text frame is parsed
only if a substring check says it may be one.
"""

from __future__ import annotations

import json
import re
import struct
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .observers import Frame

# A status message is a header, a parent header, `{}` and `{"execution_state": ...}`: far
# below this. Larger frames are output or data, counted as activity and not looked into.
_MAX_STATUS_FRAME = 16 * 1024
_STATES = frozenset(("starting", "idle", "busy", "restarting", "dead"))
# Status frames are most of what a kernel sends (two per execute): read them without parsing
# JSON when they have the usual form. A header is a flat object whose keys are unescaped
# strings, so `"msg_type": "status"` can only be its msg_type; a content that is exactly one
# known state reads the same as its JSON. Anything else is parsed.
_STATUS_TYPE = re.compile(rb'"msg_type"\s*:\s*"([a-z_]*)"')
_STATE_ONLY = re.compile(rb'\s*\{\s*"execution_state"\s*:\s*"(starting|idle|busy|restarting|dead)"'
                         rb'\s*\}\s*')
# Kernels the front keeps activity for; the oldest is dropped beyond this (kernels deleted
# elsewhere would otherwise stay forever).
_MAX_KERNELS = 10_000
# A kernel heard from this recently is taken as alive when a socket to it opens.
_ALIVE_SECONDS = 30.0


@dataclass
class KernelActivity:
    execution_state: str | None = None
    last_activity: float = 0.0  # time.time(); 0 = never seen
    connections: int = 0


class Activity:
    """The observer that keeps each kernel's activity (see observers.ChannelsObserver)."""

    def __init__(self) -> None:
        self.kernels: dict[str, KernelActivity] = {}

    def _of(self, kernel_id: str) -> KernelActivity:
        found = self.kernels.get(kernel_id)
        if found is None:
            if len(self.kernels) >= _MAX_KERNELS:
                idle = (k for k, a in self.kernels.items() if not a.connections)
                self.kernels.pop(next(idle, next(iter(self.kernels))))
            found = self.kernels[kernel_id] = KernelActivity()
        return found

    # ---------------------------------------------------------------- observer

    def opened(self, kernel_id: str, session_id: str) -> None:
        activity = self._of(kernel_id)
        activity.connections += 1
        activity.last_activity = time.time()

    def closed(self, kernel_id: str, session_id: str) -> None:
        activity = self.kernels.get(kernel_id)
        if activity is not None and activity.connections:
            activity.connections -= 1

    def from_kernel(self, kernel_id: str, frame: Frame) -> None:
        activity = self.kernels.get(kernel_id)
        if activity is None:
            activity = self._of(kernel_id)
        activity.last_activity = time.time()
        if len(frame) > _MAX_STATUS_FRAME:
            return
        # A v1 frame starts with its offset count, little-endian (6 for a status message); a
        # legacy binary frame with its buffer count, big-endian (a zero byte first).
        if isinstance(frame, bytes) and frame[:1] != b"\0":
            state = _v1_status(frame)
        else:
            state = _legacy_status(frame)
        if state is not None:
            activity.execution_state = state

    def to_kernel(self, kernel_id: str, frame: Frame) -> None:
        return None  # jupyter_server counts what the kernel sends, not what clients ask

    # ---------------------------------------------------------------- the front's own acts

    def seen_alive(self, kernel_id: str, within: float = _ALIVE_SECONDS) -> bool:
        """Whether the kernel has a socket open through the front, or sent something in the
        last `within` seconds, and was not reported dead."""
        activity = self.kernels.get(kernel_id)
        if activity is None or activity.execution_state == "dead":
            return False
        return activity.connections > 0 or time.time() - activity.last_activity < within

    def forget(self, kernel_id: str) -> None:
        """The kernel was shut down or culled."""
        self.kernels.pop(kernel_id, None)

    def merge(self, model: dict[str, Any]) -> dict[str, Any]:
        """The remote's kernel model with what the front saw: its state (unless the remote
        says the kernel is dead), the later of the two last activities, and at least the
        front's own open sockets."""
        kernel_id = model.get("id")
        activity = self.kernels.get(kernel_id) if isinstance(kernel_id, str) else None
        if activity is None:
            return model
        merged = dict(model)
        if activity.execution_state is not None and model.get("execution_state") != "dead":
            merged["execution_state"] = activity.execution_state
        if activity.last_activity:
            remote_seconds = parse_time(model.get("last_activity"))
            if remote_seconds is None or activity.last_activity > remote_seconds:
                merged["last_activity"] = format_time(activity.last_activity)
        remote_connections = model.get("connections")
        if not isinstance(remote_connections, int) or remote_connections < activity.connections:
            merged["connections"] = activity.connections
        return merged


def _v1_status(frame: bytes) -> str | None:
    """The execution state of a v1 iopub status frame, else None."""
    if len(frame) < 56:
        return None
    (count,) = struct.unpack_from("<Q", frame)
    if not 6 <= count <= 4096 or 8 * (1 + count) > len(frame):
        return None
    channel_start, header_start, parent_start, _metadata, content_start, end = (
        struct.unpack_from("<6Q", frame, 8))
    if frame[channel_start:header_start] != b"iopub":
        return None
    header = frame[header_start:parent_start]
    if b'"status"' not in header:
        return None
    return _state(header, frame[content_start:end])


def _legacy_status(frame: Frame) -> str | None:
    """The execution state of a legacy status message (text, or binary with buffers)."""
    if isinstance(frame, bytes):
        if len(frame) < 8:
            return None
        (count,) = struct.unpack_from("!I", frame)
        if not 1 <= count <= 4096 or 4 * (1 + count) > len(frame):
            return None
        start = struct.unpack_from("!I", frame, 4)[0]
        end = struct.unpack_from("!I", frame, 8)[0] if count > 1 else len(frame)
        text: Frame = frame[start:end]
    else:
        text = frame
    if isinstance(text, str):
        if "execution_state" not in text:
            return None
    elif b"execution_state" not in text:
        return None
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or message.get("channel") not in (None, "iopub"):
        return None
    header, content = message.get("header"), message.get("content")
    if not isinstance(header, dict) or header.get("msg_type") != "status":
        return None
    state = content.get("execution_state") if isinstance(content, dict) else None
    return state if state in _STATES else None


def _state(header: bytes, content: bytes) -> str | None:
    msg_type = _STATUS_TYPE.search(header)
    if msg_type is not None:
        if msg_type.group(1) != b"status":
            return None
        state = _STATE_ONLY.fullmatch(content)
        if state is not None:
            return state.group(1).decode()
    try:
        parsed_header, parsed_content = json.loads(header), json.loads(content)
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed_header, dict) or parsed_header.get("msg_type") != "status":
        return None
    if not isinstance(parsed_content, dict):
        return None
    state = parsed_content.get("execution_state")
    return state if state in _STATES else None


def format_time(seconds: float) -> str:
    """ISO 8601 in UTC with a Z, as jupyter_server writes `last_activity`."""
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(value: Any) -> float | None:
    """Seconds since the epoch of an ISO 8601 time (naive means UTC), else None."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
