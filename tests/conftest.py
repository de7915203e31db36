"""Fixtures that start real servers on free ports: a kernels-only Jupyverse as the remote and
a Jupyverse front with this plugin (fps-auth token mode, each with its own auth directory)."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.fake_remote import FakeKernelRemote
from tests.support.fault_proxy import BackgroundLoop
from tests.support.servers import (
    Server,
    enterprise_gateway_remote,
    front_server,
    jupyter_server_remote,
    kernel_gateway_remote,
    remote_server,
)

# The server-side execution tests need the collaboration plugins (in the `test` extra): an
# environment without them does not collect these files.
collect_ignore = [] if importlib.util.find_spec("jupyter_ydoc") else ["execution"]

# Every kind of remote the front supports. A test module runs against all of them with
# `pytestmark = [..., ALL_KINDS]`; others get a Jupyverse remote.
REMOTE_KINDS = {
    "jupyverse": remote_server,
    "jupyter_server": jupyter_server_remote,
    "kernel_gateway": kernel_gateway_remote,
    "enterprise_gateway": enterprise_gateway_remote,
}
ALL_KINDS = pytest.mark.parametrize("remote_kind", list(REMOTE_KINDS), indirect=True,
                                    scope="session")


@pytest.fixture(scope="module")
def loop() -> Iterator[BackgroundLoop]:
    """An event loop on a thread of its own, for fault proxies and fake remotes."""
    background = BackgroundLoop()
    yield background
    background.close()


@pytest.fixture(scope="module")
def fake(loop: BackgroundLoop) -> Iterator[FakeKernelRemote]:
    """A fake kernel remote: fast, scriptable kernels for load and fault tests."""
    remote = FakeKernelRemote(loop)
    yield remote
    remote.close()


@pytest.fixture(scope="module")
def fake_front(fake: FakeKernelRemote, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Server]:
    """A front in front of the module's fake kernel remote."""
    server = front_server(tmp_path_factory.mktemp("fake-front"), fake.url, "fake-token").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Every async test module sets `pytestmark = pytest.mark.anyio`; asyncio only."""
    return "asyncio"


@pytest.fixture(scope="session")
def remote_kind(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "jupyverse"))


@pytest.fixture(scope="session")
def remote(remote_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server where kernels really run: by default a kernels-only Jupyverse (fps-kernels,
    ipykernel); jupyter_server, Kernel Gateway or Enterprise Gateway for ALL_KINDS modules."""
    server = REMOTE_KINDS[remote_kind](tmp_path_factory.mktemp(remote_kind)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def front(remote: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Jupyverse with JupyterLab, its own users and this plugin pointed at `remote`."""
    server = front_server(tmp_path_factory.mktemp("front"), remote.url, remote.token,
                          ui=True).start()
    yield server
    server.stop()


async def login(server: Server) -> httpx.AsyncClient:
    """A client logged in as a browser is: `/?token=` sets the auth cookie."""
    client = httpx.AsyncClient(base_url=server.url, timeout=60)
    response = await client.get("/", params={"token": server.token})
    assert response.status_code < 400, response.text
    assert client.cookies.get("fastapiusersauth"), "the front set no auth cookie"
    return client


@pytest.fixture
async def api(front: Server) -> AsyncIterator[httpx.AsyncClient]:
    """The front's API, as a logged-in browser sees it."""
    client = await login(front)
    yield client
    await client.aclose()


@pytest.fixture
async def capi(collab: Server) -> AsyncIterator[httpx.AsyncClient]:
    """The API of the module's `collab` front (modules that use this define that fixture)."""
    client = await login(collab)
    yield client
    await client.aclose()


@pytest.fixture
async def kernel(capi: httpx.AsyncClient) -> AsyncIterator[str]:
    """A kernel started through the `collab` front, shut down afterwards."""
    response = await capi.post("/api/kernels", json={"name": "python3"})
    assert response.status_code == 201, response.text
    kernel_id = str(response.json()["id"])
    yield kernel_id
    await capi.delete(f"/api/kernels/{kernel_id}")


@pytest.fixture
async def remote_api(remote: Server) -> AsyncIterator[httpx.AsyncClient]:
    """The remote's own API, to check what really happened there."""
    client = httpx.AsyncClient(base_url=remote.url, timeout=60, headers=remote.headers)
    if remote.kind == "jupyverse":
        await client.get("/api/status", params={"token": remote.token})
    yield client
    await client.aclose()


async def runs_on_remote(remote_api: httpx.AsyncClient, kernel_id: str) -> bool:
    """Whether the remote runs this kernel (asked by id: gateways do not list kernels, and
    Jupyverse answers `200 null` for an unknown one)."""
    response = await remote_api.get(f"/api/kernels/{kernel_id}")
    return response.status_code == 200 and response.json() is not None


def cookie_header(client: httpx.AsyncClient) -> str:
    return f"fastapiusersauth={client.cookies['fastapiusersauth']}"


def ws_url(server: Server, kernel_id: str) -> str:
    return f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels"


@pytest.fixture
async def session(api: httpx.AsyncClient) -> AsyncIterator[dict]:
    """A notebook session (and its kernel) created through the front, deleted afterwards."""
    response = await api.post("/api/sessions", json={
        "path": f"nb-{id(api)}.ipynb", "type": "notebook", "name": "nb.ipynb",
        "kernel": {"name": "python3"},
    })
    assert response.status_code == 201, response.text
    model = response.json()
    yield model
    await api.delete(f"/api/sessions/{model['id']}")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
