"""Changes to how third-party libraries behave in the front's process, each behind a check
that the code it changes is the code it was written for (tests/test_serverpatches.py fails
when upstream changes it), and each listed in the README ("What the front changes in its own
process").

uvloop (`remote_kernels.event_loop=uvloop`): with uvloop 0.23, anyio 4.16 and anycorn 0.20 the
front dies as soon as a kept-alive HTTP client closes its connection: anycorn ends the
connection with anyio's `SocketStream.send_eof()`, which calls `transport.write_eof()`; on a
transport that is already closing asyncio's transports return quietly, uvloop's raise
`RuntimeError`, which neither anyio (it catches OSError) nor anycorn catches, and the server
task takes the application down. The fix makes `send_eof` return when the transport is
closing, which is what asyncio's own transports do.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import structlog

logger = structlog.get_logger()

EVENT_LOOPS = ("asyncio", "uvloop")


class PatchNotApplicable(RuntimeError):
    """The library's code is not the code the patch was written for."""


def _source_digest(function: Callable[..., Any]) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


# anyio 4.16's `SocketStream.send_eof` (the asyncio backend), as the patch expects it.
SEND_EOF_DIGEST = "5b13a7b24a5564e8"


def _checked_send_eof() -> Any:
    from anyio._backends._asyncio import SocketStream

    if getattr(SocketStream.send_eof, "_remote_kernels", False):
        return SocketStream  # patched already
    found = _source_digest(SocketStream.send_eof)
    if found != SEND_EOF_DIGEST:
        raise PatchNotApplicable(
            f"anyio {version('anyio')} changed SocketStream.send_eof (digest {found}, "
            f"expected {SEND_EOF_DIGEST}): remote_kernels.event_loop=uvloop is not safe "
            "with it; use event_loop=asyncio")
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


def use_event_loop(name: str) -> None:
    """Make the loop the front will run on (called before fps starts it) `name`'s."""
    if name == "asyncio":
        return
    try:
        import uvloop
    except ImportError:
        raise RuntimeError("remote_kernels.event_loop=uvloop needs uvloop: "
                           "pip install 'fps-remote-kernels[uvloop]'") from None
    patch_send_eof()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    logger.info("The front runs on uvloop", uvloop=uvloop.__version__)
