"""Changes to how third-party libraries behave in the front's process, each behind a check
that the code it changes is the code it was written for (code_check.py; the tests in
tests/host/test_server_patches.py fail when upstream changes it), each listed in
docs/operators/front-process.md and with a drafted upstream report in docs/dev/upstream.md.

uvloop (`remote_kernels.event_loop=uvloop`): with uvloop 0.23, anyio 4.16 and anycorn 0.20 the
front dies as soon as a kept-alive HTTP client closes its connection: anycorn ends the
connection with anyio's `SocketStream.send_eof()`, which calls `transport.write_eof()`; on a
transport that is already closing asyncio's transports return quietly, uvloop's raise
`RuntimeError`, which neither anyio (it catches OSError) nor anycorn catches, and the server
task takes the application down. The fix makes `send_eof` return when the transport is
closing, which is what asyncio's own transports do.

The relay path (`remote_kernels.tune_server`, on by default): every kernel message the front
sends to a browser goes through wsproto and anycorn, which cost more than the relay itself.
- wsproto 1.3's `FrameProtocol._serialize_frame` copies each payload three times
  (`bytearray(payload)`, `header + payload`, `bytearray(...)`), and `Connection.send` once
  more (bytes += bytearray). For a server without extensions (anycorn with Jupyverse's default
  of no permessage-deflate) the header is built and joined to the payload once, into `bytes`
  (which `Connection.send` then passes on without copying). The bytes on the wire are the
  same; masked (client) frames and frames with extensions keep wsproto's own code.
- anycorn 0.20 takes an `anyio.Lock()` around every send; uncontended, it still yields to the
  event loop once. With `fast_acquire=True` an uncontended acquire does not (anyio's option
  for exactly this); contended, it behaves the same.
"""

from __future__ import annotations

import asyncio
import struct
from importlib.metadata import version
from typing import Any

import structlog

from .code_check import code_digest, not_the_code, unchanged

logger = structlog.get_logger()

EVENT_LOOPS = ("asyncio", "uvloop")


class PatchNotApplicable(RuntimeError):
    """The library's code is not the code the patch was written for."""


# The code each patch was written for: anyio 4.16's `SocketStream.send_eof` (asyncio
# backend), wsproto 1.3's `FrameProtocol._serialize_frame`, anycorn 0.20's `TCPServer.__init__`
# (where the send lock is made) and `TCPServer.protocol_send` (where it is taken).
SEND_EOF_DIGEST = "5b13a7b24a5564e8"
SERIALIZE_FRAME_DIGEST = "54db7d4e9bb11d8f"
TCP_SERVER_INIT_DIGEST = "8d368e0ce775c1dd"
PROTOCOL_SEND_DIGEST = "a52ee207a700c2e3"


def _checked_send_eof() -> Any:
    from anyio._backends._asyncio import SocketStream

    if getattr(SocketStream.send_eof, "_remote_kernels", False):
        return SocketStream  # patched already
    found = code_digest(SocketStream.send_eof)
    if found != SEND_EOF_DIGEST:
        what = not_the_code(f"anyio {version('anyio')}'s SocketStream.send_eof", found,
                            SEND_EOF_DIGEST)
        raise PatchNotApplicable(f"{what}: remote_kernels.event_loop=uvloop is not safe with "
                                 "it; use event_loop=asyncio")
    return SocketStream


def patch_send_eof() -> None:
    """anyio's `SocketStream.send_eof` returns when the transport is closing (see above)."""
    socket_stream = _checked_send_eof()
    if getattr(socket_stream.send_eof, "_remote_kernels", None):
        return

    async def send_eof(self: Any) -> None:
        transport = self._transport
        if transport.is_closing():
            return  # as asyncio's transports; uvloop's raise RuntimeError
        try:
            transport.write_eof()
        except OSError:
            pass

    send_eof._remote_kernels = True  # type: ignore[attr-defined]
    socket_stream.send_eof = send_eof


def use_event_loop(name: str) -> str:
    """Make the loop the front will run on (called before fps starts it) `name`'s; the name
    of the loop it runs on."""
    if name == "asyncio":
        return name
    try:
        import uvloop
    except ImportError:
        raise RuntimeError("remote_kernels.event_loop=uvloop needs uvloop: "
                           "pip install 'fps-remote-kernels[uvloop]'") from None
    try:
        patch_send_eof()
    except PatchNotApplicable as error:
        # Started untuned rather than not at all: asyncio's loop needs no patch.
        logger.warning("The front runs on asyncio, not uvloop", reason=str(error))
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    logger.info("The front runs on uvloop", uvloop=uvloop.__version__)
    return "uvloop"


def patch_frame_serialization() -> bool:
    """wsproto serializes an unmasked frame without extensions in one copy (see above)."""
    from wsproto.frame_protocol import FrameProtocol

    original = FrameProtocol._serialize_frame
    if getattr(original, "_remote_kernels", False):
        return True
    if not unchanged(original, SERIALIZE_FRAME_DIGEST,
                      f"wsproto {version('wsproto')} FrameProtocol._serialize_frame"):
        return False

    def _serialize_frame(self: Any, opcode: Any, payload: Any = b"", fin: bool = True) -> Any:
        if self.client or self.extensions:
            return original(self, opcode, payload, fin)
        length = len(payload)
        first = (0x80 if fin else 0) | int(opcode)
        if length <= 125:
            header = bytes((first, length))
        elif opcode.iscontrol():
            raise ValueError("payload too long for control frame")
        elif length <= 0xFFFF:
            header = struct.pack("!BBH", first, 126, length)
        else:
            header = struct.pack("!BBQ", first, 127, length)
        return b"".join((header, payload))

    _serialize_frame._remote_kernels = True  # type: ignore[attr-defined]
    FrameProtocol._serialize_frame = _serialize_frame  # type: ignore[method-assign]
    return True


def patch_send_lock() -> bool:
    """anycorn's per-connection send lock does not yield when nobody holds it (see above)."""
    import anyio
    from anycorn.tcp_server import TCPServer

    original = TCPServer.__init__
    if getattr(original, "_remote_kernels", False):
        return True
    if not (unchanged(original, TCP_SERVER_INIT_DIGEST,
                       f"anycorn {version('anycorn')} TCPServer.__init__")
            and unchanged(TCPServer.protocol_send, PROTOCOL_SEND_DIGEST,
                           f"anycorn {version('anycorn')} TCPServer.protocol_send")):
        return False

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.send_lock = anyio.Lock(fast_acquire=True)

    __init__._remote_kernels = True  # type: ignore[attr-defined]
    TCPServer.__init__ = __init__  # type: ignore[method-assign]
    return True


def tune_server() -> list[str]:
    """The relay-path patches, each applied only to the code it was written for: the names of
    those applied."""
    applied = [name for name, patch in (("wsproto frame serialization", patch_frame_serialization),
                                        ("anycorn send lock", patch_send_lock)) if patch()]
    logger.info("Tuned the front's server", patches=applied)
    return applied
