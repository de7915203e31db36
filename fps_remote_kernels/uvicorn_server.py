"""The front served by uvicorn (`remote_kernels.server=uvicorn`) instead of Jupyverse's anycorn.

Jupyverse runs without its own server (`--set start_server=false`) and this module serves the
same FastAPI app, on the host and port Jupyverse was given, with uvicorn: httptools parses HTTP
(C, where anycorn uses h11 in Python), the websockets library's sans-I/O protocol parses
WebSocket frames (anycorn and uvicorn's other protocol use wsproto: about twice the CPU a
message), and a kernel message crosses the server in one call that does not yield to the event
loop when the socket can take it (anycorn: a task, a lock and two checkpoints per message).
Chosen by measurement: see benchmarks/RESULTS.md.

Settings follow what the front does on anycorn, so that clients see no difference: no
permessage-deflate (Jupyverse's default), no server pings to browsers, 16 MiB per client
message, a 5 s keep-alive, a bounded graceful stop, no rewriting of the client's address from
X-Forwarded-* headers, no access log (the front logs what matters itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import socket
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

import structlog

logger = structlog.get_logger()

# A client message larger than this closes its socket with 1009, as anycorn does.
MAX_CLIENT_MESSAGE_BYTES = 16 * 1024 * 1024
# Kept-alive HTTP connections idle this long are closed (anycorn's default too).
KEEP_ALIVE_SECONDS = 5
# At stop, connections still busy this long after the front's own sockets closed are dropped.
GRACEFUL_STOP_SECONDS = 3

# uvicorn 0.55's websockets-sansio protocol: the methods the subclass below changes or relies on.
PROTOCOL_DIGEST = "d0f4179c028b3303a2b10de91477dc1d1dc0e715390021a1"
# Client messages waiting for the app before reading from the client pauses.
READ_AHEAD_MESSAGES = 2


class ServerNotSupported(RuntimeError):
    """uvicorn is missing, or is not the version this module was written for."""


def _digest(function: Any) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


def protocol_digest(cls: type[Any]) -> str:
    """One digest of the uvicorn methods `KernelSocketProtocol` was written against."""
    return _digest(cls.connection_lost) + _digest(cls.send_receive_event_to_app) \
        + _digest(cls.receive)


def _kernel_socket_protocol() -> type[asyncio.Protocol]:
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
    except ImportError:
        raise ServerNotSupported("remote_kernels.server=uvicorn needs uvicorn and httptools: "
                                 "pip install 'fps-remote-kernels[uvicorn]'") from None
    found = protocol_digest(WebSocketsSansIOProtocol)
    if found != PROTOCOL_DIGEST:
        raise ServerNotSupported(
            f"uvicorn {version('uvicorn')} changed its websockets-sansio protocol (digest "
            f"{found}, expected {PROTOCOL_DIGEST}): check how it reports a client that "
            "vanished and how it pauses reading, or use remote_kernels.server=anycorn")

    class KernelSocketProtocol(WebSocketsSansIOProtocol):  # type: ignore[misc]
        """uvicorn's WebSocket protocol on the websockets library's sans-I/O parser (about
        half the CPU a message of its wsproto one, see benchmarks/RESULTS.md), with two
        corrections for a kernel socket relay."""

        def connection_lost(self, exc: Exception | None) -> None:
            """A connection lost with no Close frame is 1006 (RFC 6455 7.1.5; anycorn says
            so): uvicorn says 1005, the code of a Close frame without a code, which JupyterLab
            sends when it closes a socket on purpose. The bridge keeps the upstream socket of
            a client that vanished (1006) for its reconnect, and ends it at once on a
            deliberate close."""
            vanished = (self.handshake_complete and self.initial_response is None
                        and self.conn.close_rcvd is None and not self.close_sent)
            if not vanished:
                super().connection_lost(exc)
                return
            # uvicorn picks 1006 when a denial response was started; it is read there only.
            self.initial_response = (0, [], b"")
            try:
                super().connection_lost(exc)
            finally:
                self.initial_response = None

        def send_receive_event_to_app(self) -> None:
            """uvicorn pauses reading after every client message until the app has taken it:
            two changes of the event loop's interest in the socket a message, which the
            bridge, taking each message at once, never needed. Reading pauses only once
            READ_AHEAD_MESSAGES wait (the bound on what a client can queue stays a message
            count); `receive` resumes it when the queue is empty, as before."""
            paused = self.read_paused
            self.read_paused = True  # uvicorn pauses only when this is False
            try:
                super().send_receive_event_to_app()
            finally:
                self.read_paused = paused
            if (not paused and self.queue.qsize() >= READ_AHEAD_MESSAGES
                    and not self.transport.is_closing()):
                self.read_paused = True
                self.transport.pause_reading()

    return KernelSocketProtocol


def listen_address(host_url: str) -> tuple[str, int]:
    """Host and port from Jupyverse's `Host` value (`http://127.0.0.1:8000/`)."""
    parts = urlsplit(host_url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"cannot tell the front's host and port from {host_url!r}")
    return parts.hostname, parts.port


class UvicornServer:
    """uvicorn serving the front's app inside the front's own event loop."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        try:
            import httptools  # noqa: F401  (uvicorn would fall back to h11 without it)
            import uvicorn
        except ImportError:
            raise ServerNotSupported("remote_kernels.server=uvicorn needs uvicorn and "
                                     "httptools: pip install 'fps-remote-kernels[uvicorn]'"
                                     ) from None
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http="httptools",
            ws=_kernel_socket_protocol(),
            ws_max_size=MAX_CLIENT_MESSAGE_BYTES,
            ws_ping_interval=None,
            ws_ping_timeout=None,
            ws_per_message_deflate=False,
            lifespan="auto",
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            timeout_graceful_shutdown=GRACEFUL_STOP_SECONDS,
            log_config=None,
            access_log=False,
            log_level="warning",
        )
        self._server = _server_class()(self.config)
        self._socket: socket.socket | None = None

    def bind(self) -> None:
        """Listen now: a port in use fails the front's start, and connections made before
        the server loop runs wait in the backlog."""
        self._socket = self.config.bind_socket()
        logger.info("The front is served by uvicorn", uvicorn=version("uvicorn"),
                    host=self.config.host, port=self.config.port)

    async def serve(self) -> None:
        assert self._socket is not None, "bind() first"
        await self._server.serve(sockets=[self._socket])

    def stop(self) -> None:
        """Ask the server to stop; `serve()` returns once it has (bounded by the graceful
        stop). uvicorn closes the kernel sockets still open with 1012, as the front does."""
        self._server.should_exit = True


def _server_class() -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):  # type: ignore[misc]
        # fps owns the process's signals (Ctrl-C stops every module, the front's SIGTERM
        # watch turns SIGTERM into it): uvicorn's own handlers would take them over.
        def capture_signals(self) -> Any:
            return contextlib.nullcontext()

    return Server
