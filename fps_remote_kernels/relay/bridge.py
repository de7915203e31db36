"""The kernel WebSocket bridge: upstream handshake first, then two pumps.

Frames pass through untouched (text as text, bytes as bytes) when both legs speak the same
protocol; client frames get a cheap framing check so a malformed one never reaches the remote.
A legacy client of a v1 remote is translated (see frames.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from anyio import CancelScope, Event, create_task_group, move_on_after
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..errors import RemoteKernelsError, close_code_for_client
from ..observers import ChannelsObserver, Frame
from ..remote.kernel_socket import ConnectionClosed, UpstreamConnection
from ..remote.rest_client import RemoteClient
from .frames import (
    V1_PROTOCOL,
    FrameError,
    check_legacy_frame,
    check_v1_frame,
    legacy_to_v1,
    refuse_text_on_v1,
    v1_to_legacy,
)
from .replay import AwaySession, ReplayBuffers

logger = structlog.get_logger()

# Close codes (RFC 6455): invalid payload, policy violation, going away, server error.
WS_NORMAL_CLOSURE = 1000
WS_INVALID_PAYLOAD = 1007
WS_POLICY_VIOLATION = 1008
WS_GOING_AWAY = 1001
# JupyterLab (services 7.6) gives up on 1000 and 1001 and reconnects on any other code: a
# front that stops (to restart or upgrade) says 1012 Service Restart, so clients come back.
WS_SERVICE_RESTART = 1012
WS_SERVER_ERROR = 1011
# What the server reports when the client's connection ended without a close frame.
WS_ABNORMAL_CLOSURE = 1006
_CLEANUP_SECONDS = 2.0



@dataclass(frozen=True)
class Wire:
    """How frames cross the bridge for one pair of agreed subprotocols."""

    client_protocol: str | None
    upstream_bytes: Callable[[bytes], Frame]
    upstream_text: Callable[[str], Frame]
    to_client: Callable[[bytes], Frame] | None  # None: relay as is


def _relay_as_is(frame: Frame) -> Frame:
    return frame


# The wires of the known pairs, shared by every socket.
_V1_WIRE = Wire(V1_PROTOCOL, check_v1_frame, refuse_text_on_v1, None)
_TRANSLATED_WIRE = Wire(None, legacy_to_v1, legacy_to_v1, v1_to_legacy)
_LEGACY_WIRE = Wire(None, check_legacy_frame, check_legacy_frame, None)


def choose_wire(offered: list[str], upstream_protocol: str | None) -> Wire:
    if upstream_protocol == V1_PROTOCOL and V1_PROTOCOL in offered:
        return _V1_WIRE
    if upstream_protocol == V1_PROTOCOL:
        return _TRANSLATED_WIRE
    if upstream_protocol is None:
        return _LEGACY_WIRE
    # A subprotocol we do not know: relay it as the client and the remote agreed.
    return Wire(upstream_protocol, _relay_as_is, _relay_as_is, None)


def upstream_offer(offered: list[str]) -> list[str]:
    # Always offer v1 upstream: it is binary-safe on every remote, legacy clients included.
    return offered if V1_PROTOCOL in offered else [*offered, V1_PROTOCOL]


class KernelChannelsBridge:
    """One client kernel WebSocket joined to one upstream kernel WebSocket."""

    __slots__ = ("websocket", "client", "kernel_id", "session_id", "kernel_exists", "observers",
                 "replay", "_client_vanished", "away", "_scope", "_ending", "_finished", "_done")

    def __init__(self, websocket: WebSocket, client: RemoteClient, kernel_id: str,
                 session_id: str, kernel_exists: Callable[[], Awaitable[object]] | None,
                 observers: tuple[ChannelsObserver, ...] = (),
                 replay: ReplayBuffers | None = None) -> None:
        self.websocket = websocket
        self.client = client
        self.kernel_id = kernel_id
        self.session_id = session_id
        self.kernel_exists = kernel_exists
        self.observers = observers
        self.replay = replay
        self._client_vanished = False
        self.away = False  # its client vanished; it keeps the upstream for a reconnect
        self._scope = CancelScope()
        self._ending: tuple[int, str] | None = None  # the close code the client gets
        # Made only when someone waits (a newer socket of the same session, rarely): an
        # Event held for the socket's whole life costs memory on every socket (measured:
        # benchmarks/RESULTS.md, memory per open socket).
        self._finished: Event | None = None
        self._done = False

    def shutdown(self) -> None:
        """End the bridge now (the front is stopping): the client gets 1012 Service Restart."""
        self._end(WS_SERVICE_RESTART, "Server shutting down")

    def replace(self) -> None:
        """A newer socket of the same session arrived: it wins, as in jupyter_server. This
        one is closed with 1000, on which JupyterLab stops reconnecting (no tug of war)."""
        self._end(WS_NORMAL_CLOSURE, "Replaced by a newer connection of the same session")

    def kernel_gone(self) -> None:
        """The front shut the kernel down (deleted, culled): the client gets 1000, on which
        JupyterLab stops reconnecting. (A Jupyverse remote leaves the socket open.)"""
        self._end(WS_NORMAL_CLOSURE, "Kernel shut down")

    def _end(self, code: int, reason: str) -> None:
        self._ending = (code, reason)
        self._scope.cancel()

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self._done = True
            if self._finished is not None:
                self._finished.set()

    async def wait_finished(self) -> None:
        """Return once `run()` has returned."""
        if self._done:
            return
        if self._finished is None:
            self._finished = Event()
        await self._finished.wait()

    async def _run(self) -> None:
        with self._scope:
            offered = list(self.websocket.scope.get("subprotocols") or [])
            away = (await self.replay.claim(self.kernel_id, self.session_id)
                    if self.replay is not None else None)
            upstream: UpstreamConnection | None
            refusal: RemoteKernelsError | None = None
            if away is not None:
                upstream = away.upstream
            else:
                upstream, refusal = await self._open_upstream(offered)
            if upstream is None or refusal is not None:
                if upstream is not None:
                    with CancelScope(shield=True), move_on_after(_CLEANUP_SECONDS):
                        await upstream.close()
                assert refusal is not None
                await deny(self.websocket, refusal)
                return
            kept = False
            try:
                await self._relay(upstream, choose_wire(offered, upstream.subprotocol),
                                  list(away.frames) if away else [])
                if self._client_vanished and self.replay is not None and self.replay.enabled:
                    self.away = True
                    kept = await self.replay.keep_while_away(
                        AwaySession(self.kernel_id, self.session_id, upstream), self.observers)
            finally:
                if not kept:
                    with CancelScope(shield=True), move_on_after(_CLEANUP_SECONDS):
                        await upstream.close()
        if self._ending is not None:
            with CancelScope(shield=True), move_on_after(_CLEANUP_SECONDS):
                await self._close_client(*self._ending)

    async def _open_upstream(self, offered: list[str]
                             ) -> tuple[UpstreamConnection | None, RemoteKernelsError | None]:
        """The upstream socket, opened while the kernel's existence is checked (both take a
        round trip to the remote: at once, the client waits for one)."""
        # The check's answer says most (404 unknown kernel, 502 garbage): it wins.
        refusals: dict[str, RemoteKernelsError] = {}
        upstream: UpstreamConnection | None = None

        if self.kernel_exists is None:  # not needed (see RemoteKernels.check_before_socket)
            try:
                upstream = await self.client.connect_channels(
                    self.kernel_id, self.session_id, upstream_offer(offered))
            except RemoteKernelsError as e:
                refusals["connect"] = e
            return upstream, refusals.get("connect")
        kernel_exists = self.kernel_exists

        async def check() -> None:
            try:
                await kernel_exists()
            except RemoteKernelsError as e:
                refusals["check"] = e

        async with create_task_group() as tg:
            tg.start_soon(check)
            try:
                upstream = await self.client.connect_channels(
                    self.kernel_id, self.session_id, upstream_offer(offered))
            except RemoteKernelsError as e:
                refusals["connect"] = e
        return upstream, refusals.get("check") or refusals.get("connect")

    async def _relay(self, upstream: UpstreamConnection, wire: Wire, replayed: list[Frame]
                     ) -> None:
        try:
            await self.websocket.accept(subprotocol=wire.client_protocol)
        except (OSError, RuntimeError, WebSocketDisconnect):
            return  # the client left during the upstream handshake
        logger.info("Kernel channels opened", kernel_id=self.kernel_id,
                    subprotocol=wire.client_protocol or "legacy",
                    upstream_subprotocol=upstream.subprotocol or "legacy",
                    replayed=len(replayed))
        try:
            for data in replayed:  # before the live stream: in order, once
                await self._send_to_client(wire, data)
        except (OSError, RuntimeError, FrameError):
            return
        for observer in self.observers:
            observer.opened(self.kernel_id, self.session_id)
        try:
            # The client's pump runs in this task, the upstream's in one child: each task
            # (with anyio's handle, event and cancel scope) is memory held per open socket
            # (benchmarks/RESULTS.md, memory per open socket).
            async with create_task_group() as tg:
                tg.start_soon(self._upstream_to_client, upstream, wire, tg.cancel_scope)
                await self._client_to_upstream(upstream, wire, tg.cancel_scope)
        finally:
            for observer in self.observers:
                observer.closed(self.kernel_id, self.session_id)
        logger.info("Kernel channels closed", kernel_id=self.kernel_id)

    async def _client_to_upstream(self, upstream: UpstreamConnection, wire: Wire,
                                  scope: CancelScope) -> None:
        # The raw ASGI callables: Starlette's WebSocket.receive/send re-check the connection
        # state on every frame, which the bridge already knows (accepted, not yet closed).
        receive = self.websocket._receive
        observers, kernel_id = self.observers, self.kernel_id
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    # int(): uvicorn gives wsproto's CloseReason enum, anycorn an int.
                    left = int(message.get("code") or WS_NORMAL_CLOSURE)
                    logger.info("Kernel client left", kernel_id=self.kernel_id, code=left)
                    if left == WS_ABNORMAL_CLOSURE:
                        # Gone without a close frame (network blip): it may come back.
                        self._client_vanished = True
                        return
                    # The client left: end the upstream leg normally, keeping a meaningful code.
                    code = close_code_for_client(left)
                    await upstream.close(code=1000 if code == WS_SERVER_ERROR else code)
                    return
                data = message.get("bytes")
                try:
                    if data is not None:
                        frame = wire.upstream_bytes(data)
                    else:
                        frame = wire.upstream_text(message.get("text") or "")
                except FrameError as e:
                    logger.warning("Refused a malformed client frame", kernel_id=self.kernel_id,
                                   problem=str(e))
                    await self._close_client(WS_INVALID_PAYLOAD, f"Malformed frame: {e}")
                    return
                for observer in observers:
                    observer.to_kernel(kernel_id, frame)
                await upstream.send(frame)
        except ConnectionClosed:
            pass  # the other pump reports the upstream's close code to the client
        finally:
            scope.cancel()

    async def _upstream_to_client(self, upstream: UpstreamConnection, wire: Wire,
                                  scope: CancelScope) -> None:
        send = self.websocket._send  # raw ASGI, as in _client_to_upstream
        to_client = wire.to_client
        observers, kernel_id = self.observers, self.kernel_id
        try:
            while True:
                data = await upstream.recv()
                for observer in observers:
                    observer.from_kernel(kernel_id, data)
                if to_client is not None and isinstance(data, bytes):
                    data = to_client(data)
                if isinstance(data, bytes):
                    await send({"type": "websocket.send", "bytes": data})
                else:
                    await send({"type": "websocket.send", "text": data})
        except ConnectionClosed as e:
            received = e.received
            code = close_code_for_client(received.code if received else None)
            reason = received.reason if received else "Remote kernel connection lost"
            with CancelScope(shield=True), move_on_after(_CLEANUP_SECONDS):
                await self._close_client(code, reason)
        except FrameError as e:
            logger.warning("The remote sent a malformed frame", kernel_id=self.kernel_id,
                           problem=str(e))
            await self._close_client(WS_SERVER_ERROR, "Remote sent a malformed frame")
        except (OSError, RuntimeError):
            pass  # the client is gone; its pump sees the disconnect
        finally:
            scope.cancel()

    async def _send_to_client(self, wire: Wire, data: Frame) -> None:
        if wire.to_client is not None and isinstance(data, bytes):
            data = wire.to_client(data)
        if isinstance(data, bytes):
            await self.websocket._send({"type": "websocket.send", "bytes": data})
        else:
            await self.websocket._send({"type": "websocket.send", "text": data})

    async def _close_client(self, code: int, reason: str) -> None:
        if self.websocket.application_state == WebSocketState.CONNECTED:
            try:
                await self.websocket.close(code=code, reason=reason[:120])
            except (OSError, RuntimeError, WebSocketDisconnect):
                pass  # the client is gone already


async def deny(websocket: WebSocket, error: RemoteKernelsError) -> None:
    """Refuse a handshake with an HTTP status where the server supports it (as jupyter_server
    answers 404 for an unknown kernel), else close with a policy violation."""
    # A remote that failed the open (5xx) is the operator's to see; a client's mistake is not.
    log = logger.warning if error.status >= 500 else logger.info
    log("Kernel channels refused", status=error.status, message=error.message)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        try:
            await websocket.send_denial_response(error.response())
            return
        except (OSError, RuntimeError):
            pass
    try:
        await websocket.close(code=WS_POLICY_VIOLATION, reason=error.message[:120])
    except (OSError, RuntimeError, WebSocketDisconnect):
        pass  # the client is gone already
