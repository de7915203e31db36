"""The server side of RFC 6455 by hand, for fakes that must do what no real server does on cue
(split frames, wrong handshakes, sudden aborts) and for the upstream-client benchmark."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(payload: bytes, opcode: int = 2, fin: bool = True, masked: bool = False) -> bytes:
    """One frame as a server sends it (or, with `masked`, as a client does, with a zero mask)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if masked:
        return header + b"\0\0\0\0" + payload  # a zero mask: the payload reads as is
    return header + payload


def close_payload(code: int, reason: str) -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One frame from the client, unmasked: (opcode, payload). Clients must mask (RFC 6455)."""
    first, second = await reader.readexactly(2)
    assert second & 0x80, "client frames are masked"
    n = second & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    mask = await reader.readexactly(4)
    data = await reader.readexactly(n)
    # One big-integer XOR: fast enough for the benchmark's megabyte frames.
    unmasked = (int.from_bytes(data, "big") ^ int.from_bytes(
        (mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
    return first & 0x0F, unmasked


def accept_answer(headers: dict[str, str], extra: str = "") -> bytes:
    """The 101 answer to a handshake whose (lower-cased) headers are `headers`."""
    accept = base64.b64encode(
        hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest()).decode()
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n").encode()
