"""Close the connection after an answer that left the request's body unread.

An early answer (413 for a body over the limit, 415, 400, an auth refusal) is sent before the
body was read to its end. HTTP/1.1 cannot reuse that connection: the rest of the body is still on
the wire, ahead of the client's next request. Saying `Connection: close` on such an answer
tells the client so, and makes the server close the connection once the answer is out.

anycorn (0.20) also deadlocks there when the body is larger than its queue of body chunks for
the app (`max_app_queue_size`, 10 chunks): at the end of the answer it puts `http.disconnect`
into that full queue from the app's own task, which is the only one that could empty it, so
neither the connection nor the app ever ends. While the answer's last message goes out, the
body's unread chunks are therefore read and dropped (only as long as that send takes: a large
body is never read to its end).
"""

from __future__ import annotations

from typing import Any

from anyio import create_task_group
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _declares_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


class CloseAfterUnreadBody:
    """ASGI middleware: `Connection: close` on an answer started before the body was read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _declares_body(scope):
            await self.app(scope, receive, send)
            return
        body_read = False

        async def tracking_receive() -> Message:
            nonlocal body_read
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read = True
            return message

        async def discard_body() -> None:
            while not body_read:
                await tracking_receive()

        async def closing_send(message: Message) -> None:
            if body_read:
                await send(message)
                return
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                async with create_task_group() as tg:
                    tg.start_soon(discard_body)
                    await send(message)
                    tg.cancel_scope.cancel()
                return
            if message["type"] == "http.response.start":
                headers: list[Any] = [
                    (name, value) for name, value in message.get("headers", ())
                    if name.lower() != b"connection"
                ]
                headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, tracking_receive, closing_send)
