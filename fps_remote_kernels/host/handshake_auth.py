"""Kernel WebSocket authentication that holds no database connection while the socket lives.

Jupyverse's `websocket_auth` dependency (fps-auth) reads the user through a database session
that FastAPI closes only when the endpoint returns, which for a kernel WebSocket is when the
socket closes. SQLAlchemy's default pool has 15 connections, so the 16th open kernel
WebSocket of a Jupyverse server waits 30 s and fails with 500 (measured). The front resolves
the same dependency itself, under its own exit stack, and closes what it opened as soon as the
handshake is authorized. Dependencies it cannot resolve alone (request parameters, security
scopes) leave Jupyverse's route as it is.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.routing import APIWebSocketRoute

from .auth_cache import AuthCache, credentials

KERNEL_CHANNELS_PATH = "/api/kernels/{kernel_id}/channels"
_AUTH_PARAMETER = "websocket_permissions"
_PARAM_LISTS = ("path_params", "query_params", "header_params", "cookie_params", "body_params")
_UNSUPPORTED = ("request_param_name", "response_param_name", "background_tasks_param_name",
                "security_scopes_param_name")

Handler = Callable[[str, str, Any], Awaitable[None]]


def authorize_at_handshake_only(router: APIRouter, handler: Handler,
                                cache: AuthCache | None = None) -> bool:
    """Replace the kernel channels route of `router` by one that runs the same auth
    dependency only for the handshake, then calls `handler(kernel_id, session_id,
    websocket_permissions)`. False (and nothing changed) if that is not possible. With a
    `cache`, a handshake with the same credentials as one accepted a moment ago is accepted
    without asking fps-auth again (see auth_cache.py)."""
    holder = _router_holding_channels(router)
    if holder is None:
        return False
    router = holder
    found = [(i, r) for i, r in enumerate(router.routes)
             if isinstance(r, APIWebSocketRoute) and r.path == KERNEL_CHANNELS_PATH]
    index, route = found[0]
    auth = next((d for d in route.dependant.dependencies if d.name == _AUTH_PARAMETER), None)
    if auth is None or not _resolvable(auth):
        return False

    async def kernel_channels(websocket: WebSocket, kernel_id: str, session_id: str) -> None:
        found = credentials(websocket) if cache is not None else None
        key = None if found is None else (found, _AUTH_PARAMETER, id(auth.call))
        accepted = None if key is None or cache is None else cache.get(key)
        if accepted is not None:
            # The same checked permissions fps-auth answered for these credentials.
            await handler(kernel_id, session_id, (websocket, accepted[0]))
            return
        async with AsyncExitStack() as stack:
            permissions = await _resolve(auth, websocket, stack, {})
        if key is not None and cache is not None and permissions is not None:
            cache.put(key, (permissions[1],))  # a refusal (None) is never cached
        await handler(kernel_id, session_id, permissions)

    router.add_api_websocket_route(KERNEL_CHANNELS_PATH, kernel_channels)
    router.routes[index] = router.routes.pop()
    # FastAPI caches the routes of an included router by a version number.
    mark_changed = getattr(router, "_mark_routes_changed", None)
    if callable(mark_changed):
        mark_changed()
    return True


def _router_holding_channels(router: APIRouter) -> APIRouter | None:
    """`router`, or the router included in it (an app's routers are included once the server
    runs the kernels itself), that defines the kernel channels route."""
    for route in router.routes:
        if isinstance(route, APIWebSocketRoute) and route.path == KERNEL_CHANNELS_PATH:
            return router
        # FastAPI keeps an included router whole, as `original_router`.
        included = getattr(route, "original_router", None)
        if isinstance(included, APIRouter):
            holder = _router_holding_channels(included)
            if holder is not None:
                return holder
    return None


def _resolvable(dependant: Any) -> bool:
    if dependant.call is None:
        return False
    if any(getattr(dependant, name, None) for name in _PARAM_LISTS + _UNSUPPORTED):
        return False
    return all(_resolvable(sub) for sub in dependant.dependencies)


async def _resolve(dependant: Any, websocket: WebSocket, stack: AsyncExitStack,
                   cache: dict[int, Any]) -> Any:
    """What FastAPI would pass for `dependant`, with generator dependencies entered into
    `stack` (FastAPI shares a dependency's value within a request: so does this)."""
    call = dependant.call
    if getattr(dependant, "use_cache", True) and id(call) in cache:
        return cache[id(call)]
    kwargs: dict[str, Any] = {}
    for name in ("websocket_param_name", "http_connection_param_name"):
        if getattr(dependant, name, None):
            kwargs[getattr(dependant, name)] = websocket
    for sub in dependant.dependencies:
        kwargs[sub.name] = await _resolve(sub, websocket, stack, cache)
    if inspect.isasyncgenfunction(call):
        value = await stack.enter_async_context(asynccontextmanager(call)(**kwargs))
    elif inspect.isgeneratorfunction(call):
        value = stack.enter_context(contextmanager(call)(**kwargs))
    else:
        value = call(**kwargs)
        if inspect.isawaitable(value):
            value = await value
    cache[id(call)] = value
    return value
