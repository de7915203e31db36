"""Cheap checks of client frames before they go upstream.

A plain Jupyverse remote sent one v1 frame whose offset count or offsets are out of bounds
loops and grows without limit, so the front checks the framing of every client frame: only
the header of offsets is read, never the JSON parts of a good frame.
"""

from __future__ import annotations

import json
import struct

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
_CHANNELS = (b"shell", b"control", b"stdin", b"iopub")
# channel, header, parent_header, metadata, content: 6 offsets at least (one past the end).
_V1_MIN_OFFSETS = 6
# More buffers than this in one message is not a real Jupyter message.
_MAX_OFFSETS = 4096


def v1_frame_problem(data: bytes) -> str | None:
    """Why a client frame breaks the v1 framing, or None if it is well formed."""
    size = len(data)
    if size < 8:
        return "frame shorter than its offset count"
    (count,) = struct.unpack_from("<Q", data)
    if not _V1_MIN_OFFSETS <= count <= _MAX_OFFSETS:
        return f"offset count {count} out of range"
    header_end = 8 * (1 + count)
    if header_end > size:
        return "offsets run past the end of the frame"
    offsets = struct.unpack_from(f"<{count}Q", data, 8)
    return _offsets_problem(offsets, header_end, size) or _channel_problem(
        data[offsets[0] : offsets[1]]
    )


def legacy_binary_frame_problem(data: bytes) -> str | None:
    """Same check for the legacy protocol's binary frames (u32 big-endian offsets)."""
    size = len(data)
    if size < 4:
        return "frame shorter than its buffer count"
    (count,) = struct.unpack_from("!I", data)
    if not 1 <= count <= _MAX_OFFSETS:
        return f"buffer count {count} out of range"
    header_end = 4 * (1 + count)
    if header_end > size:
        return "offsets run past the end of the frame"
    offsets = struct.unpack_from(f"!{count}I", data, 4)
    return _offsets_problem((*offsets, size), header_end, size)


def legacy_text_frame_problem(text: str) -> str | None:
    """Legacy text frames are JSON messages; client-to-kernel traffic is small, so parse it."""
    try:
        message = json.loads(text)
    except ValueError:
        return "text frame is not JSON"
    if not isinstance(message, dict) or not isinstance(message.get("header"), dict):
        return "text frame is not a Jupyter message"
    return None


def _offsets_problem(offsets: tuple[int, ...], header_end: int, size: int) -> str | None:
    if offsets[0] != header_end:
        return "first offset does not follow the offset table"
    previous = header_end
    for offset in offsets:
        if offset < previous or offset > size:
            return "offsets decrease or run past the end of the frame"
        previous = offset
    return None


def _channel_problem(channel: bytes) -> str | None:
    return None if channel in _CHANNELS else "unknown channel"
