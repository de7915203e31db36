"""The auth cache: successful checks of the front's own auth are reused for the same
credentials and permissions only, for `auth_cache_ttl` seconds at most; refusals, changed
credentials and other permissions are checked by fps-auth every time."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Iterator

import httpx
import pytest
import websockets
from fastapi.dependencies.utils import solve_dependencies

from fps_remote_kernels.config import load_config
from fps_remote_kernels.host.auth_cache import (
    SOLVE_PARAMETERS,
    AuthCache,
    solve_dependencies_supported,
)
from tests.conftest import cookie_header, ws_url
from tests.support.kernel_client import KernelConnection
from tests.support.servers import Server, front_server
from tests.test_security import user

pytestmark = pytest.mark.anyio

TTL = 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.fast
def test_fastapi_solve_dependencies_still_takes_what_the_cache_passes() -> None:
    """FastAPI's solve_dependencies (not public API) has the keyword parameters the cache
    passes on a miss; if FastAPI changes them, this fails and the cache turns itself off."""
    parameters = inspect.signature(solve_dependencies).parameters
    assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
               for name in SOLVE_PARAMETERS)
    assert solve_dependencies_supported()


@pytest.mark.fast
def test_entries_expire_after_the_ttl() -> None:
    """An entry is returned until its ttl has passed, then never again."""
    clock = Clock()
    cache = AuthCache(2.0, clock=clock)
    cache.put("k", "user")
    clock.now = 1.99
    assert cache.get("k") == "user"
    clock.now = 2.0
    assert cache.get("k") is None
    assert len(cache) == 0


@pytest.mark.fast
def test_the_cache_is_bounded_and_drops_the_oldest_entry() -> None:
    """Past max_entries the oldest entry goes; a ttl of 0 stores nothing."""
    cache = AuthCache(10.0, max_entries=3)
    for key in "abcd":
        cache.put(key, key)
    assert len(cache) == 3 and cache.get("a") is None and cache.get("d") == "d"
    off = AuthCache(0)
    off.put("k", "user")
    assert len(off) == 0 and not off.enabled


@pytest.mark.fast
def test_auth_cache_ttl_is_validated() -> None:
    """A negative or too long auth_cache_ttl fails at start-up naming the option."""
    for bad in (-1, 61):
        with pytest.raises(ValueError, match="remote_kernels.auth_cache_ttl"):
            load_config({"url": "http://h:1", "auth_cache_ttl": bad})
    assert load_config({"url": "http://h:1"}).auth_cache_ttl == 5.0


@pytest.fixture(scope="module")
def cached_front(remote: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A front in fps-auth `user` mode with a 1 s auth cache."""
    server = front_server(tmp_path_factory.mktemp("cached-front"), remote.url, remote.token,
                          extra=["--set", "auth.mode=user", "--set", "auth.test=true",
                                 "--set", f"remote_kernels.auth_cache_ttl={TTL}"]).start()
    yield server
    server.stop()


async def new_user(front: Server, name: str,
                   permissions: dict[str, list[str]]) -> httpx.AsyncClient:
    """A client logged in as a new user with `permissions` (registered by the admin)."""
    async with httpx.AsyncClient(base_url=front.url, timeout=60) as admin:
        logged = await admin.post("/auth/login", data={"username": "admin@jupyter.com",
                                                       "password": "jupyverse"})
        assert logged.status_code == 204, logged.text
        return await user(front, admin, name, permissions)


async def test_a_cached_read_check_never_opens_a_write_route(cached_front: Server) -> None:
    """A read-only user whose read check is cached is still refused every write route and
    the kernel socket, each time, while the cached read keeps working."""
    reader = await new_user(cached_front, f"ro{uuid.uuid4().hex[:8]}",
                            {"kernels": ["read"], "sessions": ["read"]})
    try:
        for _ in range(3):
            assert (await reader.get("/api/kernels")).status_code == 200
            assert (await reader.get("/api/sessions")).status_code == 200
            started = await reader.post("/api/kernels", json={"name": "python3"})
            assert started.status_code == 403, started.text
            created = await reader.post("/api/sessions", json={"path": "x.ipynb",
                                                               "type": "notebook"})
            assert created.status_code == 403, created.text
            with pytest.raises(websockets.InvalidStatus) as denied:
                await KernelConnection.open(ws_url(cached_front, str(uuid.uuid4())),
                                            cookie=cookie_header(reader))
            assert denied.value.response.status_code == 403
    finally:
        await reader.aclose()


async def test_changed_or_removed_credentials_are_checked_at_once(cached_front: Server) -> None:
    """Right after a cached success, a forged cookie, no cookie, or the cookie after logout
    (fps-auth's JWT stays valid, but the client no longer sends it) is refused."""
    client = await new_user(cached_front, f"u{uuid.uuid4().hex[:8]}",
                            {"kernels": ["read"]})
    try:
        assert (await client.get("/api/kernels")).status_code == 200
        good = client.cookies["fastapiusersauth"]
        forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
        async with httpx.AsyncClient(base_url=cached_front.url, timeout=60) as other:
            assert (await other.get("/api/kernels")).status_code == 403
            refused = await other.get("/api/kernels",
                                      headers={"Cookie": f"fastapiusersauth={forged}"})
            assert refused.status_code == 403
        assert (await client.post("/auth/logout")).status_code == 204
        assert "fastapiusersauth" not in client.cookies
        assert (await client.get("/api/kernels")).status_code == 403
    finally:
        await client.aclose()
