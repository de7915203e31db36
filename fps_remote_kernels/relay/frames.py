"""Kernel WebSocket frames: cheap checks of client frames, and legacy <-> v1 translation.

A plain Jupyverse remote sent one v1 frame whose offset count or offsets are out of bounds
loops and grows without limit, so the front checks the framing of every client frame: only
the table of offsets is read, never the JSON parts of a good frame.

A plain Jupyverse remote also closes a legacy socket (1011) on the first client message that
carries binary buffers, so when the remote speaks v1 the front talks v1 upstream and
translates for legacy clients. Kernel-to-client translation never parses JSON: the v1 parts
are already JSON and are spliced into the legacy message as they are.
"""

from __future__ import annotations

import json
import struct
from typing import Any

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
_CHANNELS = ("shell", "control", "stdin", "iopub")
_CHANNELS_BYTES = tuple(c.encode() for c in _CHANNELS)
# channel, header, parent_header, metadata, content: 6 offsets at least (one past the end).
_V1_MIN_OFFSETS = 6
# More buffers than this in one message is not a real Jupyter message.
_MAX_OFFSETS = 4096


class FrameError(ValueError):
    """A frame that breaks its protocol's framing; the message says how."""


def check_v1_frame(data: bytes) -> bytes:
    """`data` if it is a well-formed v1 frame, else FrameError."""
    _v1_offsets(data)
    return data


def check_legacy_frame(data: str | bytes) -> str | bytes:
    """`data` if it is a well-formed legacy message (JSON text, or the binary framing)."""
    if isinstance(data, bytes):
        _legacy_binary_parts(data)
    else:
        _legacy_json(data)
    return data


def refuse_text_on_v1(_: str) -> str:
    raise FrameError("text frame on the binary v1 protocol")


def legacy_to_v1(data: str | bytes) -> bytes:
    """A legacy client message as a v1 frame. Client-to-kernel traffic is small: parse it."""
    if isinstance(data, bytes):
        json_part, buffers = _legacy_binary_parts(data)
        message = _legacy_json(json_part)
    else:
        message, buffers = _legacy_json(data), []
    channel = message.get("channel")
    if channel not in _CHANNELS:
        raise FrameError("missing or unknown channel")
    parts = [
        channel.encode(),
        *(json.dumps(message.get(key) or {}).encode()
          for key in ("header", "parent_header", "metadata", "content")),
        *buffers,
    ]
    return _pack_v1(parts)


def v1_to_legacy(data: bytes) -> str | bytes:
    """A v1 kernel message as the legacy protocol sends it: JSON text, or binary with buffers."""
    offsets = _v1_offsets(data)
    # Views, not slices: outputs are up to 25 MB, and the join below copies them once anyway.
    view = memoryview(data)
    parts: list[memoryview] = [view[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    channel, header, parent_header, metadata, content = (p or b"{}" for p in parts[:5])
    body = b"".join([
        b'{"header":', header, b',"parent_header":', parent_header, b',"metadata":', metadata,
        b',"content":', content, b',"channel":', json.dumps(bytes(channel).decode()).encode(),
        b"}",
    ])
    buffers = parts[5:]
    if not buffers:
        return body.decode()
    pieces: list[bytes | memoryview] = [body, *buffers]
    table = [4 * (len(pieces) + 1)]
    for piece in pieces[:-1]:
        table.append(table[-1] + len(piece))
    return struct.pack(f"!{len(pieces) + 1}I", len(pieces), *table) + b"".join(pieces)


def v1_parts(data: bytes) -> list[bytes]:
    """The parts of a v1 frame: channel, header, parent_header, metadata, content, buffers."""
    offsets = _v1_offsets(data)
    return [data[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def legacy_message(data: str | bytes) -> dict[str, Any]:
    """The JSON message of a legacy frame (text, or binary with buffers, which are dropped)."""
    if isinstance(data, bytes):
        data = _legacy_binary_parts(data)[0]
    return _legacy_json(data)


def message_frame(message: dict[str, Any], v1: bool) -> str | bytes:
    """A kernel message (with `channel`) as a frame of either protocol, without buffers."""
    text = json.dumps(message)
    return legacy_to_v1(text) if v1 else text


def _v1_offsets(data: bytes) -> tuple[int, ...]:
    size = len(data)
    if size < 8:
        raise FrameError("frame shorter than its offset count")
    (count,) = struct.unpack_from("<Q", data)
    if not _V1_MIN_OFFSETS <= count <= _MAX_OFFSETS:
        raise FrameError(f"offset count {count} out of range")
    table_end = 8 * (1 + count)
    if table_end > size:
        raise FrameError("offsets run past the end of the frame")
    offsets: tuple[int, ...] = struct.unpack_from(f"<{count}Q", data, 8)
    _check_offsets(offsets, table_end, size)
    if data[offsets[0] : offsets[1]] not in _CHANNELS_BYTES:
        raise FrameError("unknown channel")
    return offsets


def _legacy_binary_parts(data: bytes) -> tuple[bytes, list[bytes]]:
    size = len(data)
    if size < 4:
        raise FrameError("frame shorter than its buffer count")
    (count,) = struct.unpack_from("!I", data)
    if not 1 <= count <= _MAX_OFFSETS:
        raise FrameError(f"buffer count {count} out of range")
    table_end = 4 * (1 + count)
    if table_end > size:
        raise FrameError("offsets run past the end of the frame")
    offsets = (*struct.unpack_from(f"!{count}I", data, 4), size)
    _check_offsets(offsets, table_end, size)
    parts = [data[offsets[i] : offsets[i + 1]] for i in range(count)]
    return parts[0], parts[1:]


def _legacy_json(text: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        raise FrameError("message is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("header"), dict):
        raise FrameError("message is not a Jupyter message")
    return message


def _check_offsets(offsets: tuple[int, ...], table_end: int, size: int) -> None:
    if offsets[0] != table_end:
        raise FrameError("first offset does not follow the offset table")
    previous = table_end
    for offset in offsets:
        if offset < previous or offset > size:
            raise FrameError("offsets decrease or run past the end of the frame")
        previous = offset


def _pack_v1(parts: list[bytes]) -> bytes:
    count = len(parts) + 1
    offsets = [8 * (1 + count)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    return struct.pack(f"<{count + 1}Q", count, *offsets) + b"".join(parts)
