"""The upstream WebSocket client's framing (remote/kernel_socket.py) against websockets' own
sans-I/O protocol, with no socket: UpstreamConnection is an asyncio protocol, driven here
through a recording transport. Hypothesis draws messages, lengths around the 125 / 126 /
65535 / 65536 boundaries, fragmentations, read splits and broken frames:

- what our client writes, websockets' server-side parser reads as the same frames;
- what websockets writes, our client reads as the same messages;
- on a stream of frames, valid or not, our client and websockets' client agree on the
  messages delivered, the pongs sent and the close code sent.
"""

from __future__ import annotations

import base64
import os
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from fps_remote_kernels.remote.kernel_socket import (
    CloseFrame,
    ConnectionClosed,
    UpstreamConnection,
    _request,
)

pytestmark = [pytest.mark.anyio, pytest.mark.fast]

URL = "ws://127.0.0.1:8888/api/kernels/k/channels?session_id=s"
V1 = "v1.kernel.websocket.jupyter.org"
OP_CONT, OP_TEXT, OP_BINARY = Opcode.CONT, Opcode.TEXT, Opcode.BINARY
OP_CLOSE, OP_PING, OP_PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG
BOUNDARIES = [0, 1, 125, 126, 127, 65535, 65536, 65537]
FRAMING = settings(max_examples=60, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow])


@dataclass
class RecordingTransport:
    """What UpstreamConnection needs of an asyncio transport; it keeps what was written."""

    written: bytearray = field(default_factory=bytearray)
    closing: bool = False
    reading: bool = True

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, parts: list[bytes]) -> None:
        for part in parts:
            self.written += part

    def take(self) -> bytes:
        data, self.written = bytes(self.written), bytearray()
        return data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


def feed(conn: UpstreamConnection, transport: RecordingTransport, data: bytes,
         reads: Iterator[int] | None = None) -> None:
    """Hand `data` to the protocol as the event loop does, in reads of the drawn sizes, until
    the protocol closes its transport (then a real transport stops reading too)."""
    view, offset = memoryview(data), 0
    while offset < len(data) and not transport.closing:
        buffer = conn.get_buffer(-1)
        size = min(len(buffer), len(data) - offset, next(reads, 1 << 30) if reads else 1 << 30)
        buffer[:size] = view[offset:offset + size]
        offset += size
        conn.buffer_updated(size)


def opened(subprotocols: tuple[str, ...] = ()) -> tuple[UpstreamConnection, RecordingTransport]:
    """A connection whose handshake websockets' server accepted."""
    key = base64.b64encode(os.urandom(16)).decode()
    *_, handshake = _request(URL, key, subprotocols, {})
    server = ServerProtocol(subprotocols=list(subprotocols) or None, max_size=None)
    server.receive_data(handshake)
    (request,) = server.events_received()
    assert isinstance(request, Request)
    server.send_response(server.accept(request))
    conn = UpstreamConnection(key=key, offered=subprotocols, max_queue=100_000,
                              ping_interval=None, ping_timeout=None, close_timeout=5)
    transport = RecordingTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    feed(conn, transport, b"".join(server.data_to_send()))
    transport.take()  # the handshake request is not part of the comparison
    return conn, transport


def server_side() -> ServerProtocol:
    """websockets' parser of what a client sends, past the handshake."""
    return ServerProtocol(state=State.OPEN, max_size=None)


def client_side() -> ClientProtocol:
    """websockets' own client, past the handshake: the reference for what a client reads."""
    return ClientProtocol(parse_uri(URL), state=State.OPEN, max_size=None)


def frames_of(data: bytes) -> list[Frame]:
    parser = server_side()
    parser.receive_data(data)
    assert parser.parser_exc is None, parser.parser_exc
    return [event for event in parser.events_received() if isinstance(event, Frame)]


def payload_of(length: int, seed: int, text: bool, sample: str) -> str | bytes:
    """A binary payload of `length` bytes, or a text whose UTF-8 is `length` bytes (made of
    `sample`'s characters, multi-byte ones included, padded with ASCII)."""
    if not text:
        return random.Random(seed).randbytes(length)
    encoded = ((sample or "a") * (length + 1)).encode()[:length].decode(errors="ignore")
    return encoded + "a" * (length - len(encoded.encode()))


LENGTHS = st.one_of(st.sampled_from(BOUNDARIES), st.integers(0, 70_000))
MESSAGES = st.builds(payload_of, LENGTHS, st.integers(0, 2**32 - 1), st.booleans(),
                     st.text(max_size=8))
READS = st.lists(st.integers(1, 70_000), min_size=1, max_size=20)


def data_of(message: str | bytes) -> bytes:
    return message.encode() if isinstance(message, str) else message


def closed_cleanly(conn: UpstreamConnection) -> None:
    conn.connection_lost(None)  # ends timers and waiters, as the transport's end does


# ---------------------------------------------------------------- what our client writes


@FRAMING
@given(message=MESSAGES)
async def test_sent_messages_parse_as_one_masked_frame_each(message: str | bytes) -> None:
    """Each sent message parses as one final masked frame, shortest length encoding."""
    conn, transport = opened()
    try:
        with anyio.fail_after(5):
            await conn.send(message)
        written = transport.take()
        (frame,) = frames_of(written)
        assert frame.opcode is (OP_TEXT if isinstance(message, str) else OP_BINARY)
        assert frame.fin and not (frame.rsv1 or frame.rsv2 or frame.rsv3)
        assert frame.data == data_of(message)
        length = len(frame.data)
        assert written[1] & 0x80, "client frames are masked"
        assert written[1] & 0x7F == (length if length < 126 else 126 if length < 65536 else 127)
    finally:
        closed_cleanly(conn)


@FRAMING
@given(messages=st.lists(MESSAGES, min_size=2, max_size=4))
async def test_messages_sent_back_to_back_stay_apart(messages: list[str | bytes]) -> None:
    """Several messages written in a row parse as as many frames, in order."""
    conn, transport = opened()
    try:
        with anyio.fail_after(5):
            for message in messages:
                await conn.send(message)
        frames = frames_of(transport.take())
        assert [f.data for f in frames] == [data_of(m) for m in messages]
    finally:
        closed_cleanly(conn)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
async def test_every_bytes_like_message_is_sent_as_binary(kind: type) -> None:
    """bytes, bytearray and memoryview messages are binary frames with the same payload."""
    conn, transport = opened()
    try:
        with anyio.fail_after(5):
            await conn.send(kind(b"\x00\x01payload"))
        (frame,) = frames_of(transport.take())
        assert (frame.opcode, frame.data) == (OP_BINARY, b"\x00\x01payload")
    finally:
        closed_cleanly(conn)


@FRAMING
@given(code=st.sampled_from([1000, 1001, 1011, 1012, 3000, 4999]), reason=st.text(max_size=80))
async def test_our_close_frame_parses_with_its_code_and_a_cut_reason(code: int, reason: str
                                                                     ) -> None:
    """Our close frame parses with its code and the reason cut to 123 bytes of UTF-8."""
    conn, transport = opened()
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(conn.close, code, reason)
                await anyio.wait_all_tasks_blocked()  # close() waits for the remote's answer
                written = transport.take()
                closed_cleanly(conn)  # the remote ended the TCP connection
    finally:
        closed_cleanly(conn)
    (frame,) = frames_of(written)
    close = Close.parse(frame.data)
    assert frame.opcode is OP_CLOSE and close.code == code
    assert reason.startswith(close.reason) and len(close.reason.encode()) <= 123
    assert close.reason == reason.encode()[:123].decode(errors="ignore")


async def test_the_handshake_offers_what_websockets_accepts() -> None:
    """websockets' server accepts our upgrade request; its subprotocol is the connection's."""
    conn, _ = opened((V1,))
    try:
        assert conn.subprotocol == V1
    finally:
        closed_cleanly(conn)


# ---------------------------------------------------------------- what our client reads


@st.composite
def fragmented(draw: st.DrawFn) -> tuple[str | bytes, list[int]]:
    """A message and where websockets' server cuts it into frames (none: one frame)."""
    message = draw(MESSAGES)
    size = len(data_of(message))
    cuts = sorted(set(draw(st.lists(st.integers(0, size), max_size=3))))
    return message, cuts


def written_by_websockets(messages: list[tuple[str | bytes, list[int]]], ping_between: bool
                          ) -> bytes:
    """The frames websockets' server writes for `messages`, each cut where drawn, with a
    ping between the first two fragments of each fragmented message."""
    server = server_side()
    for message, cuts in messages:
        data = data_of(message)
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        send = server.send_text if isinstance(message, str) else server.send_binary
        for i, piece in enumerate(pieces):
            fin = i == len(pieces) - 1
            if i == 0:
                send(piece, fin=fin)
            else:
                server.send_continuation(piece, fin=fin)
            if i == 0 and not fin and ping_between:
                server.send_ping(b"ping")
    return b"".join(server.data_to_send())


def messages_read_by_websockets(data: bytes) -> list[str | bytes]:
    """What websockets' own client makes of `data`: its frames joined into messages."""
    client = client_side()
    client.receive_data(data)
    assert client.parser_exc is None, client.parser_exc
    messages: list[str | bytes] = []
    parts: list[bytes] = []
    text = False
    for event in client.events_received():
        if not isinstance(event, Frame) or event.opcode in (OP_PING, OP_PONG):
            continue
        if event.opcode is not OP_CONT:
            text, parts = event.opcode is OP_TEXT, []
        parts.append(event.data)
        if event.fin:
            joined = b"".join(parts)
            messages.append(joined.decode() if text else joined)
    return messages


@FRAMING
@given(messages=st.lists(fragmented(), min_size=1, max_size=3), reads=READS,
       ping_between=st.booleans())
async def test_frames_websockets_writes_are_read_as_websockets_reads_them(
        messages: list[tuple[str | bytes, list[int]]], reads: list[int],
        ping_between: bool) -> None:
    """Frames websockets writes, read in any splits, give websockets' messages; pings ponged."""
    data = written_by_websockets(messages, ping_between)
    expected = messages_read_by_websockets(data)
    assert expected == [message for message, _ in messages]
    conn, transport = opened()
    try:
        feed(conn, transport, data, iter(reads))
        with anyio.fail_after(5):
            got = [await conn.recv() for _ in messages]
        assert got == expected
        assert [type(m) for m in got] == [type(m) for m in expected]
        pongs = [f for f in frames_of(transport.take()) if f.opcode is OP_PONG]
        pinged = sum(1 for _, cuts in messages if cuts) if ping_between else 0
        assert [p.data for p in pongs] == [b"ping"] * pinged
    finally:
        closed_cleanly(conn)


@FRAMING
@given(code=st.sampled_from([1000, 1001, 1002, 1003, 1007, 1011, 1012, 1014, 3000, 4321,
                             4999]),
       reason=st.text(max_size=40).filter(lambda r: len(r.encode()) <= 123))
async def test_the_remotes_close_frame_ends_reading_and_is_echoed(code: int, reason: str
                                                                  ) -> None:
    """The remote's close: recv raises with its code and reason; our echo has the code."""
    server = server_side()
    server.send_binary(b"last")
    server.send_close(code, reason)
    conn, transport = opened()
    try:
        feed(conn, transport, b"".join(server.data_to_send()))
        with anyio.fail_after(5):
            assert await conn.recv() == b"last"
            with pytest.raises(ConnectionClosed) as closed:
                await conn.recv()
        assert closed.value.received == CloseFrame(code, reason)
        (echo,) = frames_of(transport.take())
        assert echo.opcode is OP_CLOSE and Close.parse(echo.data).code == code
    finally:
        closed_cleanly(conn)


async def test_a_text_message_that_is_not_utf8_fails_with_1007() -> None:
    """A text frame that is not UTF-8 fails the connection with a 1007 close frame."""
    server = server_side()
    server.send_frame(Frame(OP_TEXT, b"\xff\xfe not utf-8"))
    conn, transport = opened()
    try:
        feed(conn, transport, b"".join(server.data_to_send()))
        (close,) = frames_of(transport.take())
        assert Close.parse(close.data).code == 1007
        assert transport.closing
    finally:
        closed_cleanly(conn)


# ---------------------------------------------------------------- any stream of frames


@dataclass(frozen=True)
class RawFrame:
    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0
    masked: bool = False

    def encode(self) -> bytes:
        first = (0x80 if self.fin else 0) | self.rsv << 4 | self.opcode
        mask_bit = 0x80 if self.masked else 0
        n = len(self.payload)
        if n < 126:
            header = struct.pack("!BB", first, mask_bit | n)
        elif n < 65536:
            header = struct.pack("!BBH", first, mask_bit | 126, n)
        else:
            header = struct.pack("!BBQ", first, mask_bit | 127, n)
        return header + (b"\0\0\0\0" if self.masked else b"") + self.payload


VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1011, 1012, 1014, 3000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000]


@st.composite
def raw_frames(draw: st.DrawFn) -> RawFrame:
    """Mostly well-formed frames; now and then one that breaks RFC 6455 in one way."""
    kind = draw(st.sampled_from(["text", "binary", "cont", "ping", "pong", "close", "bad"]))
    data = draw(st.binary(max_size=300))
    fin = draw(st.booleans())
    if kind == "text":
        return RawFrame(OP_TEXT.value, draw(st.text(max_size=100)).encode(), fin)
    if kind == "binary":
        return RawFrame(OP_BINARY.value, data, fin)
    if kind == "cont":  # UTF-8, so that a text message continued stays text
        return RawFrame(OP_CONT.value, draw(st.text(max_size=100)).encode(), fin)
    if kind in ("ping", "pong"):
        return RawFrame((OP_PING if kind == "ping" else OP_PONG).value, data[:125])
    if kind == "close":
        code = draw(st.sampled_from(VALID_CODES + INVALID_CODES))
        # A reason that is not UTF-8 only with a valid code: for a frame wrong both ways,
        # websockets says 1007 and we say 1002 (both refuse it; RFC 6455 ranks neither).
        reasons = [b"bye", b"\xff"] if code in VALID_CODES else [b"bye"]
        payload = draw(st.sampled_from([b"", b"\x03",
                                        *(code.to_bytes(2, "big") + r for r in reasons)]))
        return RawFrame(OP_CLOSE.value, payload)
    return draw(st.sampled_from([
        RawFrame(OP_BINARY.value, data, rsv=draw(st.integers(1, 7))),
        RawFrame(draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])), data[:100]),
        RawFrame(OP_BINARY.value, data, masked=True),
        RawFrame(OP_PING.value, data[:125], fin=False),
        RawFrame(OP_PING.value, bytes(126)),
    ]))


def _until_close(frames: list[RawFrame]) -> list[RawFrame]:
    """Frames up to the first close frame (what follows one is never read by either side).
    A close frame inside a fragmented message is left out: RFC 6455 (5.4) allows control
    frames there and we echo it, where websockets fails the connection with 1002
    (test_a_close_inside_a_fragmented_message_is_echoed pins ours)."""
    fragmented = False
    for i, raw in enumerate(frames):
        if raw.opcode == OP_CLOSE.value:
            return frames[:i] if fragmented else frames[:i + 1]
        if raw.opcode in (OP_TEXT.value, OP_BINARY.value):
            fragmented = not raw.fin
        elif raw.opcode == OP_CONT.value and raw.fin:
            fragmented = False
    return frames


@dataclass
class Outcome:
    messages: list[str | bytes]
    pongs: list[bytes]
    close_code: int | None


def websockets_outcome(data: bytes) -> Outcome:
    client = client_side()
    client.receive_data(data)
    messages: list[str | bytes] = []
    parts: list[bytes] = []
    text = False
    for event in client.events_received():
        if not isinstance(event, Frame) or event.opcode not in (OP_TEXT, OP_BINARY, OP_CONT):
            continue
        if event.opcode is not OP_CONT:
            text, parts = event.opcode is OP_TEXT, []
        parts.append(event.data)
        if event.fin:
            joined = b"".join(parts)
            messages.append(joined.decode() if text else joined)
    sent = frames_of(b"".join(client.data_to_send()))
    closes = [Close.parse(f.data).code for f in sent if f.opcode is OP_CLOSE]
    return Outcome(messages, [f.data for f in sent if f.opcode is OP_PONG],
                   closes[0] if closes else None)


async def our_outcome(data: bytes, reads: list[int]) -> Outcome:
    conn, transport = opened()
    try:
        feed(conn, transport, data, iter(reads))
        sent = frames_of(transport.take())
        closed_cleanly(conn)  # the end of the stream: what was received is still read
        messages: list[str | bytes] = []
        with anyio.fail_after(5):
            while True:
                try:
                    messages.append(await conn.recv())
                except ConnectionClosed:
                    break
    finally:
        closed_cleanly(conn)
    closes = [Close.parse(f.data).code for f in sent if f.opcode is OP_CLOSE]
    return Outcome(messages, [f.data for f in sent if f.opcode is OP_PONG],
                   closes[0] if closes else None)


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(raw_frames(), max_size=8), reads=READS)
async def test_any_stream_of_frames_is_judged_as_websockets_judges_it(
        frames: list[RawFrame], reads: list[int]) -> None:
    """Any frame stream: same messages, pongs and close code (1002, 1007, echo) as websockets'."""
    data = b"".join(raw.encode() for raw in _until_close(frames))
    expected = websockets_outcome(data)
    assert await our_outcome(data, reads) == expected


async def test_a_close_inside_a_fragmented_message_is_echoed() -> None:
    """A close frame amid a fragmented message is echoed (RFC 6455 5.4), the message dropped."""
    data = (RawFrame(OP_TEXT.value, b"half", fin=False).encode()
            + RawFrame(OP_CLOSE.value, (1001).to_bytes(2, "big") + b"away").encode())
    assert await our_outcome(data, [len(data)]) == Outcome([], [], 1001)
