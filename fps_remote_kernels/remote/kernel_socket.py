"""The upstream kernel WebSocket: a small RFC 6455 client for the front's leg to the remote.

Why not `websockets` (which the package used before): on large kernel outputs (2-25 MB per
message) its read path copies every frame three times after the socket read (into its
StreamReader buffer, out of it, and into the joined message) and was 47 % of the front's CPU
while relaying (benchmarks/RESULTS.md, "Issue 9, third session"). This client is an asyncio
`BufferedProtocol`: a large frame's payload is read by the socket straight into its own
buffers, and joined once into the `bytes` the bridge forwards (two copies in all). Small frames
are parsed out of one read buffer shared by every connection (asyncio and uvloop call
`get_buffer` and `buffer_updated` back to back for each read), so an idle socket holds no read
buffer at all.

What it does: the HTTP/1.1 upgrade (subprotocols, extra headers, the Sec-WebSocket-Accept
check), text and binary messages (fragmented ones too), ping/pong, keepalive pings with a
timeout, the close handshake with code and reason, TLS, an open timeout, bounded read-ahead
(reading pauses while `max_queue` messages wait for `recv`), and write flow control (`send`
waits while the transport's buffer is over its high-water mark). No extensions (no
compression: kernel messages are mostly binary buffers or JSON relayed once).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import ssl as ssl_module
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio

from .proxy import Proxy, tunnel

try:
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - websockets ships its C speedups for common platforms
    _apply_mask = None  # type: ignore[assignment]

# Handshake lines at debug level, as websockets logged them; credentials.py scrubs the secrets in
# them (tokens, passwords, the remote's session cookie) before any handler sees them.
# credentials.py scrubs this logger's records by its name.
HANDSHAKE_LOGGER = __name__
_log = logging.getLogger(HANDSHAKE_LOGGER)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPCODES = (_TEXT, _BINARY)

# Read buffer shared by every connection of the process: a read lands here, and whatever is
# left of it after parsing (an incomplete small frame) is kept by its connection. asyncio's
# own socket reads are 256 KiB at most.
_SCRATCH_SIZE = 256 * 1024
_scratch = bytearray(_SCRATCH_SIZE)
_scratch_view = memoryview(_scratch)
# A frame longer than this, not yet read whole, gets buffers of its own that the socket reads
# into directly, allocated as the data comes (a remote cannot make the front reserve memory by
# announcing a long frame it does not send), at most _CHUNK_SIZE at a time.
_DIRECT_THRESHOLD = 64 * 1024
_CHUNK_SIZE = 4 * 1024 * 1024
# Those buffers are kept for the next large frame, up to this many in the process: a fresh
# one costs as much as filling it (zeroing and page faults). 8 hold a 25 MB message (what
# ipykernel sends at most), so a stream of them allocates only the messages themselves.
_POOL_CHUNKS = 8
_pool: list[bytearray] = []
# Bound of the handshake answer (status line and headers).
_MAX_HANDSHAKE_BYTES = 64 * 1024
# Sent frames: below this size the header and the payload go in one write.
_JOIN_WRITE_BELOW = 64 * 1024

_CONNECTING, _OPEN, _CLOSING, _CLOSED = range(4)


@dataclass(frozen=True)
class CloseFrame:
    code: int
    reason: str


class ConnectionClosed(Exception):
    """The connection is closed; `received` is the remote's close frame (None: it sent none,
    the connection was lost or failed), `sent` ours."""

    def __init__(self, received: CloseFrame | None, sent: CloseFrame | None) -> None:
        self.received = received
        self.sent = sent
        if received is not None:
            text = f"received {received.code} {received.reason}".rstrip()
        else:
            text = "no close frame received"
        super().__init__(text)


class HandshakeError(Exception):
    """The remote did not accept the WebSocket handshake as RFC 6455 requires."""


class HandshakeRefused(HandshakeError):
    """The remote answered the handshake with an HTTP status other than 101."""

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"the handshake was answered {status}")


class NotHTTP(HandshakeError):
    """What came back to the handshake is not an HTTP response (or nothing came)."""


class UpstreamConnection(asyncio.BufferedProtocol):
    """One client WebSocket connection: `recv`, `send`, `close`, `subprotocol`."""

    __slots__ = (
        "subprotocol", "_transport", "_state", "_loop", "_key", "_offered", "_handshake",
        "_pending", "_bases", "_chunk", "_chunk_filled", "_chunk_fin", "_frame_left", "_parts",
        "_message_opcode", "_messages", "_next", "_max_queue", "_low_queue", "_reading_paused",
        "_waiter", "_writing_paused", "_drain_waiters", "_received", "_sent", "_lost",
        "_ping_interval", "_ping_timeout", "_ping_payload", "_ping_sent_at", "_ping_timer",
        "_close_timeout", "_abort_timer",
    )

    def __init__(self, *, key: str, offered: Sequence[str], max_queue: int,
                 ping_interval: float | None, ping_timeout: float | None,
                 close_timeout: float) -> None:
        self.subprotocol: str | None = None
        self._transport: asyncio.Transport | None = None
        self._state = _CONNECTING
        self._loop = asyncio.get_running_loop()
        self._key = key
        self._offered = tuple(offered)
        self._handshake: asyncio.Future[None] | None = self._loop.create_future()
        self._pending = b""  # the start of an incomplete frame (or of the handshake answer)
        self._chunk: memoryview | None = None  # where a large frame is being read into
        self._bases: list[bytearray] = []  # the buffers under the chunks, for the pool
        self._chunk_filled = 0
        self._chunk_fin = False
        self._frame_left = 0  # bytes of the current large frame not yet in a chunk
        self._parts: list[bytes | memoryview] = []  # the message being assembled
        self._message_opcode = 0  # its opcode; 0 when no message is under way
        # Received, not yet returned: a list read from `_next` on (an empty deque is ten
        # times an empty list, and a socket holds this for its whole life).
        self._messages: list[str | bytes] = []
        self._next = 0
        self._max_queue = max(1, max_queue)
        self._low_queue = max(0, self._max_queue // 2)
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._received: CloseFrame | None = None
        self._sent: CloseFrame | None = None
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._ping_payload: bytes | None = None
        self._ping_sent_at = 0.0
        self._ping_timer: asyncio.TimerHandle | None = None
        self._close_timeout = close_timeout
        self._abort_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ public surface

    async def recv(self) -> str | bytes:
        """The next message: `str` for a text frame, `bytes` for a binary one. Raises
        ConnectionClosed once the connection is closed and every message was returned."""
        if self._waiter is not None:
            raise RuntimeError("another task is already waiting for the next message")
        while self._next == len(self._messages):
            if self._state >= _CLOSING and (self._received is not None
                                           or self._state == _CLOSED):
                raise ConnectionClosed(self._received, self._sent)
            waiter = self._loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        messages = self._messages
        message = messages[self._next]
        messages[self._next] = b""  # returned: not held until the list is trimmed
        self._next += 1
        if self._next == len(messages):
            messages.clear()
            self._next = 0
        elif self._next >= 64:  # a backlog: let the returned ones go
            del messages[:self._next]
            self._next = 0
        if self._reading_paused and len(messages) - self._next <= self._low_queue:
            self._reading_paused = False
            if self._transport is not None and self._state != _CLOSED:
                self._transport.resume_reading()
        return message

    async def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send one message (text for `str`); waits while the transport's buffer is full."""
        if self._state != _OPEN:
            raise ConnectionClosed(self._received, self._sent)
        if isinstance(message, str):
            self._write_frame(_TEXT, message.encode())
        else:
            self._write_frame(_BINARY, message)
        if self._writing_paused:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter
            if self._state == _CLOSED:
                raise ConnectionClosed(self._received, self._sent)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """The close handshake: send a close frame, wait (at most close_timeout) for the
        remote's and for the end of the TCP connection; then the connection is closed."""
        if self._state == _OPEN:
            self._send_close(code, reason)
            self._state = _CLOSING
            self._arm_abort()
        elif self._state == _CONNECTING and self._transport is not None:
            self._transport.abort()
        if self._state != _CLOSED and self._transport is not None:
            await asyncio.shield(self._lost)

    # ------------------------------------------------------------------ asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A read-write transport (uvloop's are not asyncio.Transport subclasses).
        self._transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._chunk is not None:
            return self._chunk[self._chunk_filled:]
        pending = len(self._pending)
        if pending:
            _scratch[:pending] = self._pending
        return _scratch_view[pending:]

    def buffer_updated(self, nbytes: int) -> None:
        if self._chunk is not None:
            self._chunk_filled += nbytes
            if self._chunk_filled == len(self._chunk):
                self._chunk_complete()
            return
        size = len(self._pending) + nbytes
        self._pending = b""
        data = _scratch_view[:size]
        try:
            if self._state == _CONNECTING:
                self._handshake_data(data)
            else:
                self._frames(data)
        except _ProtocolError as e:
            self._fail(e.code, str(e))

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        self._cancel_timers()
        handshake, self._handshake = self._handshake, None
        if handshake is not None and not handshake.done():
            handshake.set_exception(NotHTTP("did not receive a valid HTTP response"))
        self._release()
        self._wake()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # ------------------------------------------------------------------ handshake

    def _handshake_data(self, data: memoryview) -> None:
        end = bytes(data[:_MAX_HANDSHAKE_BYTES + 4]).find(b"\r\n\r\n")
        if end < 0:
            if len(data) >= 5 and bytes(data[:5]) != b"HTTP/":
                self._handshake_failed(NotHTTP("the answer is not HTTP"))
            elif len(data) > _MAX_HANDSHAKE_BYTES:
                self._handshake_failed(NotHTTP("the answer's headers are too long"))
            else:
                self._pending = bytes(data)
            return
        if _log.isEnabledFor(logging.DEBUG):
            for line in bytes(data[:end]).decode("iso-8859-1").split("\r\n"):
                _log.debug("< %s", line)
        try:
            self.subprotocol = self._check_response(bytes(data[:end]))
        except HandshakeError as e:
            self._handshake_failed(e)
            return
        self._state = _OPEN
        handshake, self._handshake = self._handshake, None
        if handshake is not None and not handshake.done():
            handshake.set_result(None)
        self._schedule_ping(self._loop.time())
        if len(data) > end + 4:
            self._frames(data[end + 4:])

    def _check_response(self, head: bytes) -> str | None:
        try:
            text = head.decode("iso-8859-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
            raise NotHTTP("the answer is not HTTP") from None
        status_line, *lines = text.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise NotHTTP("the answer is not HTTP")
        status = int(parts[1])
        if status != 101:
            raise HandshakeRefused(status)
        headers: dict[str, list[str]] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise NotHTTP("the answer has a malformed header")
            headers.setdefault(name.lower(), []).append(value.strip())
        if "websocket" not in _tokens(headers.get("upgrade")):
            raise HandshakeError("the answer has no Upgrade: websocket")
        if "upgrade" not in _tokens(headers.get("connection")):
            raise HandshakeError("the answer has no Connection: upgrade")
        accept = headers.get("sec-websocket-accept", [])
        if accept != [_accept_of(self._key)]:
            raise HandshakeError("the answer's Sec-WebSocket-Accept is wrong")
        if headers.get("sec-websocket-extensions"):
            raise HandshakeError("the remote chose an extension the front did not offer")
        protocols = headers.get("sec-websocket-protocol", [])
        if not protocols:
            return None
        if len(protocols) > 1 or protocols[0] not in self._offered:
            raise HandshakeError("the remote chose a subprotocol the front did not offer")
        return protocols[0]

    def _handshake_failed(self, error: HandshakeError) -> None:
        handshake, self._handshake = self._handshake, None
        if handshake is not None and not handshake.done():
            handshake.set_exception(error)
        if self._transport is not None:
            self._transport.abort()

    # ------------------------------------------------------------------ reading frames

    def _frames(self, data: memoryview) -> None:
        """Parse every complete frame of `data`; keep an incomplete end, or start reading a
        large frame into its own buffer."""
        offset, size = 0, len(data)
        while size - offset >= 2:
            first, second = data[offset], data[offset + 1]
            if second & 0x80:
                raise _ProtocolError(1002, "the remote masked a frame")
            length = second & 0x7F
            header = 2
            if length == 126:
                header = 4
                if size - offset < header:
                    break
                length = int.from_bytes(data[offset + 2:offset + 4], "big")
            elif length == 127:
                header = 10
                if size - offset < header:
                    break
                length = int.from_bytes(data[offset + 2:offset + 10], "big")
                if length >> 63:
                    raise _ProtocolError(1002, "the frame length is invalid")
            if first & 0x70:
                raise _ProtocolError(1002, "the remote used an extension (RSV bits)")
            fin, opcode = bool(first & 0x80), first & 0x0F
            start = offset + header
            available = size - start
            if available < length:
                # A large frame is read into buffers of its own; so what is kept between
                # reads (an incomplete small frame) stays under _DIRECT_THRESHOLD, and the
                # shared buffer always has room for the next read.
                if opcode < 8 and length > _DIRECT_THRESHOLD:
                    self._check_data_frame(opcode)
                    self._start_chunks(opcode, fin, data[start:], length)
                    return
                break
            payload = data[start:start + length]
            offset = start + length
            if opcode >= 8:
                self._control_frame(fin, opcode, payload)
                if self._state == _CLOSED:
                    return
            else:
                self._data_frame(fin, opcode, payload)
        if offset < size:
            self._pending = bytes(data[offset:])

    def _check_data_frame(self, opcode: int) -> None:
        if opcode == _CONTINUATION:
            if not self._message_opcode:
                raise _ProtocolError(1002, "a continuation frame started no message")
        elif opcode in _DATA_OPCODES:
            if self._message_opcode:
                raise _ProtocolError(1002, "a new message began inside a fragmented one")
        else:
            raise _ProtocolError(1002, f"unknown opcode {opcode}")

    def _data_frame(self, fin: bool, opcode: int, payload: memoryview) -> None:
        self._check_data_frame(opcode)
        if self._received is not None:
            return  # after the remote's close frame: nothing more is data
        if fin and opcode != _CONTINUATION:  # the common case: a whole message in one frame
            self._deliver(opcode, [payload])
            return
        if opcode != _CONTINUATION:
            self._message_opcode = opcode
        self._parts.append(bytes(payload))
        if fin:
            parts, self._parts = self._parts, []
            opcode, self._message_opcode = self._message_opcode, 0
            try:
                self._deliver(opcode, parts)
            finally:
                parts.clear()
                self._release()

    def _start_chunks(self, opcode: int, fin: bool, head: memoryview, length: int) -> None:
        if opcode != _CONTINUATION:
            self._message_opcode = opcode
        chunk = self._take_chunk(min(length, _CHUNK_SIZE))
        chunk[:len(head)] = head
        self._chunk, self._chunk_filled, self._chunk_fin = chunk, len(head), fin
        self._frame_left = length - len(chunk)

    def _take_chunk(self, size: int) -> memoryview:
        if _pool:
            base = _pool.pop()
        else:
            base = bytearray(size)  # a full-size one goes to the pool afterwards
        self._bases.append(base)
        return memoryview(base)[:size]

    def _release(self) -> None:
        """The message's buffers back to the pool (what it held is copied out by now)."""
        self._parts = []
        self._chunk = None
        for base in self._bases:
            if len(base) == _CHUNK_SIZE and len(_pool) < _POOL_CHUNKS:
                _pool.append(base)
        self._bases = []

    def _chunk_complete(self) -> None:
        chunk = self._chunk
        assert chunk is not None
        self._parts.append(chunk)
        if self._frame_left:
            size = min(self._frame_left, _CHUNK_SIZE)
            self._chunk, self._chunk_filled = self._take_chunk(size), 0
            self._frame_left -= size
            return
        self._chunk = None
        if self._chunk_fin:
            parts, self._parts = self._parts, []
            opcode, self._message_opcode = self._message_opcode, 0
            try:
                if self._received is None:
                    self._deliver(opcode, parts)
            except _ProtocolError as e:
                self._fail(e.code, str(e))
            finally:
                parts.clear()
                self._release()

    def _deliver(self, opcode: int, parts: list[bytes | memoryview] | list[memoryview]
                 ) -> None:
        message: str | bytes
        if opcode == _BINARY:
            message = bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
        else:
            try:
                message = (str(parts[0], "utf-8") if len(parts) == 1
                           else b"".join(parts).decode())
            except UnicodeDecodeError:
                raise _ProtocolError(1007, "a text message is not UTF-8") from None
        self._messages.append(message)
        self._wake()
        if (not self._reading_paused and len(self._messages) - self._next >= self._max_queue
                and self._transport is not None):
            self._reading_paused = True
            self._transport.pause_reading()

    def _control_frame(self, fin: bool, opcode: int, payload: memoryview) -> None:
        if not fin or len(payload) > 125:
            raise _ProtocolError(1002, "a control frame is fragmented or too long")
        if opcode == _PING:
            if self._state == _OPEN:
                self._write_frame(_PONG, bytes(payload))
        elif opcode == _PONG:
            if self._ping_payload is not None and payload == self._ping_payload:
                self._ping_payload = None
                self._schedule_ping(self._ping_sent_at)
        elif opcode == _CLOSE:
            self._close_frame(bytes(payload))
        else:
            raise _ProtocolError(1002, f"unknown opcode {opcode}")

    def _close_frame(self, payload: bytes) -> None:
        if len(payload) == 1:
            raise _ProtocolError(1002, "a close frame of one byte")
        if payload:
            code = int.from_bytes(payload[:2], "big")
            if not (3000 <= code <= 4999 or code in _VALID_CLOSE_CODES):
                raise _ProtocolError(1002, f"invalid close code {code}")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                raise _ProtocolError(1007, "the close reason is not UTF-8") from None
            received = CloseFrame(code, reason)
        else:
            received = CloseFrame(1005, "")  # no status: RFC 6455's reserved 1005
        if self._received is not None:
            return
        self._received = received
        if self._state == _OPEN:
            # Echo the code, as RFC 6455 asks; then the remote ends the TCP connection.
            self._send_close(received.code if payload else None, "")
            self._state = _CLOSING
            self._arm_abort()
        self._wake()

    # ------------------------------------------------------------------ writing, closing

    def _write_frame(self, opcode: int, payload: bytes | bytearray | memoryview) -> None:
        transport = self._transport
        assert transport is not None
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0xFE, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0xFF, length)
        mask = os.urandom(4)
        masked = _mask(payload, mask)
        if length < _JOIN_WRITE_BELOW:
            transport.write(header + mask + masked)
        else:
            transport.writelines((header + mask, masked))

    def _send_close(self, code: int | None, reason: str) -> None:
        # 123 bytes of reason at most (a control frame's 125), cut on a character boundary.
        text = reason.encode()[:123].decode(errors="ignore").encode()
        payload = b"" if code is None else code.to_bytes(2, "big") + text
        self._sent = CloseFrame(code if code is not None else 1005, reason)
        self._write_frame(_CLOSE, payload)

    def _fail(self, code: int, reason: str) -> None:
        """End the connection at once: a protocol error or a silent remote."""
        if self._state == _CLOSED:
            return
        if self._state == _OPEN:
            self._send_close(code, reason)
        self._state = _CLOSING
        self._release()
        self._wake()
        if self._transport is not None:
            self._transport.close()
        self._arm_abort()

    def _arm_abort(self) -> None:
        """The remote has close_timeout to end the TCP connection; then we do."""
        if self._abort_timer is None and self._transport is not None:
            self._abort_timer = self._loop.call_later(self._close_timeout,
                                                      self._transport.abort)
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None

    def _cancel_timers(self) -> None:
        for timer in (self._abort_timer, self._ping_timer):
            if timer is not None:
                timer.cancel()
        self._abort_timer = self._ping_timer = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------ keepalive

    def _schedule_ping(self, last_ping: float) -> None:
        if self._ping_interval and self._state == _OPEN:
            if self._ping_timer is not None:
                self._ping_timer.cancel()
            self._ping_timer = self._loop.call_at(last_ping + self._ping_interval, self._ping)

    def _ping(self) -> None:
        self._ping_timer = None
        if self._state != _OPEN:
            return
        self._ping_payload = os.urandom(4)
        self._ping_sent_at = self._loop.time()
        self._write_frame(_PING, self._ping_payload)
        if self._ping_timeout:
            self._ping_timer = self._loop.call_later(self._ping_timeout, self._ping_timed_out)
        else:
            self._schedule_ping(self._ping_sent_at)

    def _ping_timed_out(self) -> None:
        self._ping_timer = None
        if self._state != _OPEN or self._ping_payload is None:
            return
        if self._reading_paused:
            # Our reader is not reading (backpressure), so the pong may be waiting unread:
            # the remote is not judged until we read again.
            self._ping_timer = self._loop.call_later(self._ping_timeout or 1.0,
                                                     self._ping_timed_out)
            return
        self._fail(1011, "keepalive ping timeout")


class _ProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        super().__init__(reason)


# RFC 6455 7.4.1 and IANA: the codes an endpoint may send (1004-1006 and 1015 are reserved).
_VALID_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                1013, 1014})


def _mask(payload: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    if _apply_mask is not None:
        return _apply_mask(payload, mask)
    length = len(payload)  # pragma: no cover - without websockets' speedups
    if not length:
        return b""
    words = (length + 3) // 4
    key = int.from_bytes(mask * words, "big") >> (8 * (4 * words - length))
    return (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big")


def _accept_of(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def _tokens(values: list[str] | None) -> set[str]:
    return {token.strip().lower() for value in values or () for token in value.split(",")}


def _request(url: str, key: str, subprotocols: Sequence[str],
             headers: Mapping[str, str]) -> tuple[str, int, bool, bytes]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("a WebSocket URL must be ws:// or wss:// with a host")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    host = parts.hostname
    host_header = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        host_header += f":{parts.port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1"]
    given = {name.lower() for name in headers}
    if "host" not in given:
        lines.append(f"Host: {host_header}")
    lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
              "Sec-WebSocket-Version: 13"]
    if subprotocols:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}")
    for name, value in headers.items():
        if any(c in name + value for c in "\r\n\0") or not name or ":" in name:
            # Never the value in the error: it may be a credential.
            raise ValueError(f"header {name!r} has a character a header may not have")
        lines.append(f"{name}: {value}")
    return host, port, secure, ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1")


async def connect(
    url: str,
    *,
    subprotocols: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
    open_timeout: float = 10.0,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    close_timeout: float = 2.0,
    max_queue: int = 2,
    ssl: ssl_module.SSLContext | None = None,
    proxy: Proxy | None = None,
) -> UpstreamConnection:
    """Open a WebSocket connection to `url` (ws:// or wss://) and complete the handshake,
    through `proxy` (an HTTP CONNECT tunnel, TLS inside it) if given.

    Raises HandshakeRefused (a status other than 101), NotHTTP, HandshakeError (a 101 that
    breaks RFC 6455), TimeoutError (after open_timeout), OSError (no connection; ProxyError
    for a proxy's refusal)."""
    key = base64.b64encode(os.urandom(16)).decode()
    host, port, secure, request = _request(url, key, subprotocols, headers or {})
    loop = asyncio.get_running_loop()
    connection = UpstreamConnection(key=key, offered=subprotocols, max_queue=max_queue,
                                    ping_interval=ping_interval, ping_timeout=ping_timeout,
                                    close_timeout=close_timeout)
    context = (ssl or ssl_module.create_default_context()) if secure else None
    try:
        with anyio.fail_after(open_timeout):
            if proxy is None:
                await loop.create_connection(lambda: connection, host, port, ssl=context,
                                             server_hostname=host if secure else None)
            else:
                sock = await tunnel(proxy, host, port)
                try:
                    await loop.create_connection(lambda: connection, sock=sock, ssl=context,
                                                 server_hostname=host if secure else None)
                except BaseException:
                    sock.close()
                    raise
            transport = connection._transport
            assert transport is not None
            if _log.isEnabledFor(logging.DEBUG):
                for line in request.decode("iso-8859-1").split("\r\n"):
                    if line:
                        _log.debug("> %s", line)
            transport.write(request)
            handshake = connection._handshake
            assert handshake is not None
            await handshake
    except BaseException:
        if connection._transport is not None:
            connection._transport.abort()
        raise
    return connection
