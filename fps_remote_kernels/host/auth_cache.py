"""A short-lived cache of the front's successful authentication checks.

fps-auth resolves its whole dependency tree on every request: a database session, a user
manager, a JWT decode, a user query through aiosqlite (and in token mode a second query for the
global user). That costs as much as the remote's whole answer to `GET /api/kernels`. The
front remembers a successful check for a few seconds, keyed on the exact credentials the
request carries (its Cookie header, its `token` query parameter, its Authorization header) and
on the permissions the route requires, so:

- a changed, removed or forged credential is a different key: it is checked at once;
- a route that needs other permissions is a different key: a read-only user's cached check for
  a read route never opens a write route;
- a refusal is never cached, nor a request that carries no credentials (anonymous users,
  fps-auth's noauth mode), nor a check that set a cookie;
- what a cached check may miss is a change on the server side (a user's permissions changed or
  the user deactivated): it takes effect after `auth_cache_ttl` seconds at most.

The entries are bounded in number and age. On a miss the original dependency is resolved with
FastAPI's own `solve_dependencies`, exactly as FastAPI would have resolved it; if that function
does not have the signature this module was written against, the cache is off (and says so).
"""

from __future__ import annotations

import inspect
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import structlog
from fastapi import Request, Response
from fastapi.dependencies.utils import get_dependant, solve_dependencies
from fastapi.exceptions import RequestValidationError
from jupyverse_auth import Auth

logger = structlog.get_logger()

MAX_ENTRIES = 1024
# What FastAPI 0.115-0.165 take; checked once, and by tests/host/test_auth_cache.py.
SOLVE_PARAMETERS = ("request", "dependant", "response", "async_exit_stack", "embed_body_fields")
SCOPE_STACK = "fastapi_inner_astack"

Permissions = dict[str, list[str]] | None


def solve_dependencies_supported() -> bool:
    """Whether FastAPI's `solve_dependencies` takes what this module passes."""
    parameters = inspect.signature(solve_dependencies).parameters
    return all(name in parameters for name in SOLVE_PARAMETERS)


def credentials(connection: Any) -> tuple[str, str, str] | None:
    """Every credential fps-auth may read from a request or WebSocket handshake, or None if it
    carries none (an anonymous request is never cached)."""
    found = (connection.headers.get("cookie", ""), connection.query_params.get("token", ""),
             connection.headers.get("authorization", ""))
    return found if any(found) else None


def permissions_key(permissions: Permissions) -> Hashable:
    if permissions is None:
        return None
    return tuple(sorted((resource, tuple(sorted(actions)))
                        for resource, actions in permissions.items()))


class AuthCache:
    """Successful checks by key, each for `ttl` seconds, at most `max_entries` of them."""

    def __init__(self, ttl: float, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: Hashable, value: Any) -> None:
        if not self.enabled:
            return
        self._entries.pop(key, None)
        self._entries[key] = (self._clock() + self.ttl, value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)  # the oldest entry goes first

    def clear(self) -> None:
        self._entries.clear()


class CachedAuth(Auth):
    """`auth` whose `current_user` dependencies remember successful checks in `cache`.
    `websocket_auth` and `update_user` are `auth`'s own (kernel sockets use the cache in
    handshake_auth.py, where the handshake is resolved)."""

    def __init__(self, auth: Auth, cache: AuthCache) -> None:
        self.auth = auth
        self.cache = cache

    def __getattr__(self, name: str) -> Any:
        # Anything else fps-auth's Auth offers (create_user, db, ...) is the original's.
        return getattr(self.auth, name)

    def current_user(self, permissions: Permissions = None) -> Callable:
        original = self.auth.current_user(permissions=permissions)
        if not self.cache.enabled or not inspect.iscoroutinefunction(original):
            return original
        dependant = get_dependant(path="", call=original)
        scope = permissions_key(permissions)
        cache = self.cache

        async def cached_current_user(request: Request, response: Response) -> Any:
            found = credentials(request)
            key = None if found is None else (found, scope)
            if key is not None:
                user = cache.get(key)
                if user is not None:
                    return user
            cookies_before = _set_cookies(response)
            solved = await solve_dependencies(
                request=request, dependant=dependant, response=response,
                dependency_overrides_provider=request.scope.get("app"),
                async_exit_stack=request.scope[SCOPE_STACK], embed_body_fields=False)
            if solved.errors:
                raise RequestValidationError(solved.errors)
            user = await original(**solved.values)  # raises on refusal: nothing cached
            # A check that set a cookie (a token login, a new guest) is not a plain check.
            if key is not None and user is not None and _set_cookies(response) == cookies_before:
                cache.put(key, user)
            return user

        return cached_current_user

    async def update_user(self) -> Callable:
        return await self.auth.update_user()

    def websocket_auth(self, permissions: Permissions = None) -> Callable:
        return self.auth.websocket_auth(permissions=permissions)


def _set_cookies(response: Response) -> list[bytes]:
    return [value for name, value in response.raw_headers if name == b"set-cookie"]


def cached_auth(auth: Auth, ttl: float) -> tuple[Auth, AuthCache | None]:
    """`auth` with a cache of `ttl` seconds, and the cache; `auth` itself and None if the
    cache is off (ttl 0) or FastAPI's dependency solver is not the one this was written for."""
    if ttl <= 0:
        return auth, None
    if not solve_dependencies_supported():
        logger.warning("remote_kernels.auth_cache_ttl ignored: this FastAPI's "
                       "solve_dependencies has another signature; every request is checked")
        return auth, None
    cache = AuthCache(ttl)
    return CachedAuth(auth, cache), cache
