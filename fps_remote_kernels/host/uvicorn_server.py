"""The front served by uvicorn (`remote_kernels.server=uvicorn`) instead of Jupyverse's anycorn.

Jupyverse runs without its own server (`--set start_server=false`) and this module serves the
same FastAPI app, on the host and port Jupyverse was given, with uvicorn: httptools parses HTTP
(C, where anycorn uses h11 in Python), and a kernel message crosses the server in one call
that does not yield to the event loop when the socket can take it (anycorn: a task, a lock and
two checkpoints per message). Chosen by measurement: see benchmarks/RESULTS.md.

Settings follow what the front does on anycorn, so that clients see no difference: no
permessage-deflate (Jupyverse's default), no server pings to browsers, 16 MiB per client
message, a 5 s keep-alive, a bounded graceful stop, no rewriting of the client's address from
X-Forwarded-* headers, no access log (the front logs what matters itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

import anyio
import structlog

from .code_check import code_digest, not_the_code, unchanged

logger = structlog.get_logger()

# A client message larger than this closes its socket with 1009, as anycorn does.
MAX_CLIENT_MESSAGE_BYTES = 16 * 1024 * 1024
# Kept-alive HTTP connections idle this long are closed (anycorn's default too).
KEEP_ALIVE_SECONDS = 5
# At stop, connections still busy this long after the front's own sockets closed are dropped.
GRACEFUL_STOP_SECONDS = 3

# uvicorn 0.55's wsproto `WSProtocol.connection_lost`, whose disconnect code is corrected below.
CONNECTION_LOST_DIGEST = "9a74b40570812bfe"
# uvicorn 0.55's whole wsproto `WSProtocol`, whose queue and `writable` event are replaced by
# lighter ones below, and whose WSConnection is replaced by the connection it wraps once the
# handshake is done: what it asks of them must not have changed.
WS_PROTOCOL_DIGEST = "54a45040581c8875"
# wsproto 1.3's `WSConnection`: once the handshake is done it only passes `send`,
# `receive_data`, `events` and `state` on to its `connection` (after the handshake's events,
# which uvicorn has read by then).
WS_CONNECTION_DIGEST = "29da9c6a18f10d02"
# Client messages waiting for the app before reading from the client pauses.
READ_AHEAD_MESSAGES = 2


class ServerNotSupported(RuntimeError):
    """uvicorn is missing, or is not the version this module was written for."""


class _Inbox:
    """What uvicorn's WSProtocol asks of its `asyncio.Queue` (unbounded): `put_nowait`, `get`,
    `empty`. asyncio's queue holds three deques and an Event for each open socket; this
    holds a list read from an index and the getters' futures (usually none)."""

    __slots__ = ("_items", "_next", "_getters")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._next = 0
        self._getters: list[asyncio.Future[None]] = []

    def empty(self) -> bool:
        return self._next == len(self._items)

    def qsize(self) -> int:
        return len(self._items) - self._next

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._wake_next()

    def _wake_next(self) -> None:
        getters = self._getters
        while getters:
            getter = getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return

    async def get(self) -> Any:
        # As asyncio.Queue.get: a cancelled getter that was woken passes the wake-up on.
        while self._next == len(self._items):
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                try:
                    self._getters.remove(getter)
                except ValueError:
                    pass
                if not self.empty() and not getter.cancelled():
                    self._wake_next()
                raise
        items = self._items
        item = items[self._next]
        items[self._next] = None
        self._next += 1
        if self._next == len(items):
            items.clear()
            self._next = 0
        elif self._next >= 64:  # a backlog: let the returned ones go
            del items[:self._next]
            self._next = 0
        return item


class _Flag:
    """What uvicorn's WSProtocol asks of its `writable` asyncio.Event (`set`, `clear`,
    `wait`), without the Event's deque."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True  # uvicorn sets it at once
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


def _kernel_socket_protocol() -> type[asyncio.Protocol]:
    try:
        from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
    except ImportError:
        raise ServerNotSupported("remote_kernels.server=uvicorn needs uvicorn and httptools: "
                                 "pip install 'fps-remote-kernels[uvicorn]'") from None
    found = code_digest(WSProtocol.connection_lost)
    if found != CONNECTION_LOST_DIGEST:
        what = not_the_code(f"uvicorn {version('uvicorn')}'s WSProtocol.connection_lost",
                            found, CONNECTION_LOST_DIGEST)
        raise ServerNotSupported(f"{what}: check how it reports a client that vanished, or "
                                 "use remote_kernels.server=anycorn")
    from wsproto import WSConnection

    # Another uvicorn or wsproto may use them otherwise: then they stay their own.
    light = unchanged(WSProtocol, WS_PROTOCOL_DIGEST, f"uvicorn {version('uvicorn')} WSProtocol",
                      "its own queue and events") \
        and unchanged(WSConnection, WS_CONNECTION_DIGEST,
                      f"wsproto {version('wsproto')} WSConnection", "its own connection")

    class KernelSocketProtocol(WSProtocol):  # type: ignore[misc]
        """A connection lost with no Close frame is 1006 (RFC 6455 7.1.5; anycorn says so):
        uvicorn says 1005, the code of a Close frame without a code, which JupyterLab sends
        when it closes a socket on purpose. The bridge keeps the upstream socket of a client
        that vanished (1006) for its reconnect, and ends it at once on a deliberate close.

        Its received-message queue and `writable` event are lighter ones (see _Inbox and
        _Flag), and once the handshake is done it talks to wsproto's connection directly,
        letting the handshake's h11 connection and request go: the same behaviour, less
        memory for each open socket (benchmarks/RESULTS.md). Reading a client pauses only
        when messages wait
        (see handle_message)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if light:
                self.queue = _Inbox()  # type: ignore[assignment]
                self.writable = _Flag()  # type: ignore[assignment]

        # Not a coroutine function: a message after the handshake costs one call, no frame.
        def send(self, message: Any) -> Any:
            if self.handshake_complete or not light:
                return WSProtocol.send(self, message)
            return self._send_handshake(message)

        async def _send_handshake(self, message: Any) -> None:
            await WSProtocol.send(self, message)
            conn = self.conn
            if isinstance(conn, WSConnection) and conn.connection is not None:
                self.conn = conn.connection  # type: ignore[assignment]

        def handle_message(self, event: Any) -> None:
            """uvicorn pauses reading a client's socket after each of its messages until the
            app has taken it: two changes of the event loop's interest in the socket a
            message, which the bridge, taking each message at once, never needed. Reading
            pauses only once READ_AHEAD_MESSAGES wait (still a bound on what a client can
            queue); `receive` resumes it when the queue is empty, as before."""
            if not light:
                return WSProtocol.handle_message(self, event)
            paused = self.read_paused
            self.read_paused = True  # uvicorn pauses only when this is False
            try:
                WSProtocol.handle_message(self, event)
            finally:
                self.read_paused = paused
            if (not paused and self.queue.qsize() >= READ_AHEAD_MESSAGES
                    and not self.transport.is_closing()):
                self.read_paused = True
                self.transport.pause_reading()

        def connection_lost(self, exc: Exception | None) -> None:
            vanished = self.handshake_complete and not self.response_started \
                and not self.close_sent
            if not vanished:
                super().connection_lost(exc)
                return
            # uvicorn picks 1006 when `response_started` is set; it is read there only.
            self.response_started = True
            try:
                super().connection_lost(exc)
            finally:
                self.response_started = False

    return KernelSocketProtocol


def listen_address(host_url: str) -> tuple[str, int]:
    """Host and port from Jupyverse's `Host` value (`http://127.0.0.1:8000/`)."""
    parts = urlsplit(host_url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"cannot tell the front's host and port from {host_url!r}")
    return parts.hostname, parts.port


def login_url(host_url: str, query: dict[str, str], extra: dict[str, str] | None) -> str:
    """The URL Jupyverse's own server prints when it runs (`http://host:port?token=...`):
    its host URL with the query parameters its modules and `--query-param` added."""
    params = {**query, **(extra or {})}
    return host_url.rstrip("/") + ("?" + "&".join(f"{k}={v}" for k, v in params.items())
                                   if params else "")


class UvicornServer:
    """uvicorn serving the front's app inside the front's own event loop."""

    def __init__(self, app: Any, host: str, port: int,
                 login_url: Callable[[], str] | None = None) -> None:
        # Where a user logs in (with the token fps-auth made), said once listening, as
        # Jupyverse's own server says it: without it nobody gets past /login.
        self.login_url = login_url
        self._done = anyio.Event()
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
        if self.login_url is not None:
            logger.info("Server running", url=self.login_url())

    async def serve(self) -> None:
        assert self._socket is not None, "bind() first"
        try:
            await self._server.serve(sockets=[self._socket])
        finally:
            self._done.set()

    async def stop(self, timeout: float = 0.6) -> None:
        """Stop serving, waiting at most `timeout` seconds (Jupyverse gives the whole front
        1 s to stop: the kernel sockets are closed already, idle connections close at once).
        uvicorn closes the kernel sockets still open with 1012, as the front does."""
        self._server.should_exit = True
        with anyio.move_on_after(timeout):
            await self._done.wait()


def _server_class() -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):  # type: ignore[misc]
        # fps owns the process's signals (Ctrl-C stops every module, the front's SIGTERM
        # watch turns SIGTERM into it): uvicorn's own handlers would take them over.
        def capture_signals(self) -> Any:
            return contextlib.nullcontext()

    return Server
