"""The kernel WebSocket bridge: upstream handshake first, then two pumps.

Frames pass through untouched (text as text, bytes as bytes); only the framing of client
frames is checked, cheaply, so a malformed frame never reaches the remote.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from anyio import CancelScope, create_task_group, move_on_after
from starlette.websockets import WebSocket, WebSocketState
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .client import RemoteClient
from .errors import RemoteKernelsError, close_code_for_client
from .frames import (
    V1_PROTOCOL,
    legacy_binary_frame_problem,
    legacy_text_frame_problem,
    v1_frame_problem,
)

logger = structlog.get_logger()

# Close codes (RFC 6455): policy violation, invalid payload, going away.
WS_POLICY_VIOLATION = 1008
WS_INVALID_PAYLOAD = 1007
WS_GOING_AWAY = 1001
_CLEANUP_SECONDS = 2.0


class KernelChannelsBridge:
    """One client kernel WebSocket joined to one upstream kernel WebSocket."""

    def __init__(self, websocket: WebSocket, client: RemoteClient, kernel_id: str,
                 session_id: str) -> None:
        self.websocket = websocket
        self.client = client
        self.kernel_id = kernel_id
        self.session_id = session_id
        self._scope = CancelScope()
        self._shutting_down = False

    def shutdown(self) -> None:
        """End the bridge now (the front is stopping): the client gets 1001 Going Away."""
        self._shutting_down = True
        self._scope.cancel()

    async def run(self) -> None:
        with self._scope:
            offered = list(self.websocket.scope.get("subprotocols") or [])
            try:
                upstream = await self.client.connect_channels(
                    self.kernel_id, self.session_id, offered
                )
            except RemoteKernelsError as e:
                await deny(self.websocket, e)
                return
            try:
                await self._relay(upstream)
            finally:
                with CancelScope(shield=True), move_on_after(_CLEANUP_SECONDS):
                    await upstream.close()
        if self._shutting_down:
            with CancelScope(shield=True), move_on_after(_CLEANUP_SECONDS):
                await self._close_client(WS_GOING_AWAY, "Server shutting down")

    async def _relay(self, upstream: ClientConnection) -> None:
        subprotocol = upstream.subprotocol
        await self.websocket.accept(subprotocol=subprotocol)
        logger.info("Kernel channels opened", kernel_id=self.kernel_id,
                    subprotocol=subprotocol or "legacy")
        async with create_task_group() as tg:
            tg.start_soon(self._client_to_upstream, upstream, _frame_checks(subprotocol),
                          tg.cancel_scope)
            tg.start_soon(self._upstream_to_client, upstream, tg.cancel_scope)
        logger.info("Kernel channels closed", kernel_id=self.kernel_id)

    async def _client_to_upstream(
        self,
        upstream: ClientConnection,
        checks: tuple[Callable[[bytes], str | None], Callable[[str], str | None]],
        scope: CancelScope,
    ) -> None:
        check_bytes, check_text = checks
        receive = self.websocket.receive
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    # The client left: end the upstream leg normally, keeping a meaningful code.
                    code = close_code_for_client(message.get("code"))
                    await upstream.close(code=1000 if code == 1011 else code)
                    return
                data = message.get("bytes")
                if data is not None:
                    problem = check_bytes(data)
                    if problem is None:
                        await upstream.send(data)
                        continue
                else:
                    text = message.get("text") or ""
                    problem = check_text(text)
                    if problem is None:
                        await upstream.send(text)
                        continue
                logger.warning("Refused a malformed client frame", kernel_id=self.kernel_id,
                               problem=problem)
                await self._close_client(WS_INVALID_PAYLOAD, f"Malformed frame: {problem}")
                return
        except ConnectionClosed:
            pass  # the other pump reports the upstream's close code to the client
        finally:
            scope.cancel()

    async def _upstream_to_client(self, upstream: ClientConnection, scope: CancelScope) -> None:
        send = self.websocket.send
        try:
            while True:
                data = await upstream.recv()
                if isinstance(data, bytes):
                    await send({"type": "websocket.send", "bytes": data})
                else:
                    await send({"type": "websocket.send", "text": data})
        except ConnectionClosed as e:
            received = e.rcvd
            code = close_code_for_client(received.code if received else None)
            reason = received.reason if received else "Remote kernel connection lost"
            with CancelScope(shield=True), move_on_after(_CLEANUP_SECONDS):
                await self._close_client(code, reason)
        except (OSError, RuntimeError):
            pass  # the client is gone; its pump sees the disconnect
        finally:
            scope.cancel()

    async def _close_client(self, code: int, reason: str) -> None:
        if self.websocket.application_state == WebSocketState.CONNECTED:
            try:
                await self.websocket.close(code=code, reason=reason[:120])
            except (OSError, RuntimeError):
                pass


def _accept_any(_: object) -> None:
    return None


def _refuse_text_on_v1(_: str) -> str:
    return "text frame on the binary v1 protocol"


def _frame_checks(
    subprotocol: str | None,
) -> tuple[Callable[[bytes], str | None], Callable[[str], str | None]]:
    if subprotocol == V1_PROTOCOL:
        return v1_frame_problem, _refuse_text_on_v1
    if subprotocol is None:
        return legacy_binary_frame_problem, legacy_text_frame_problem
    # A subprotocol we do not know: we cannot check its framing, relay it as the remote agreed.
    return _accept_any, _accept_any


async def deny(websocket: WebSocket, error: RemoteKernelsError) -> None:
    """Refuse a handshake with an HTTP status where the server supports it (as jupyter_server
    answers 404 for an unknown kernel), else close with a policy violation."""
    logger.info("Kernel channels refused", status=error.status, message=error.message)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        try:
            await websocket.send_denial_response(error.response())
            return
        except (OSError, RuntimeError):
            pass
    await websocket.close(code=WS_POLICY_VIOLATION, reason=error.message[:120])


def origin_allowed(websocket: WebSocket, allowed_origins: list[str]) -> bool:
    """jupyter_server's check against cross-site WebSocket hijacking: a browser always sends
    Origin; it must match the Host, or be allowed explicitly. Non-browser clients send none."""
    origin = websocket.headers.get("origin")
    if origin is None or "*" in allowed_origins or origin in allowed_origins:
        return True
    host = websocket.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/").lower() == host.lower()


def refuse_origin(websocket: WebSocket) -> RemoteKernelsError:
    return RemoteKernelsError(403, "Cross-origin kernel WebSocket refused "
                              f"(Origin {websocket.headers.get('origin')!r} is not allowed)",
                              "Forbidden")

