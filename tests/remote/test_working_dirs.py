"""Kernels start where their notebook is: the notebook's directory reaches every kind of remote
as `path`, and as KERNEL_WORKING_DIR (mapped into `kernel_working_dir_root`) where kernels read
their environment; Enterprise Gateway lists only the kernelspecs the front's user may start."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ALL_KINDS, cookie_header, ws_url
from tests.support.harness import login
from tests.support.kernel_client import KernelConnection
from tests.support.servers import Server, enterprise_gateway_remote, front_server

pytestmark = pytest.mark.anyio

# Where the front's root is "mounted" on the kernel host, as the option says. Local kernels
# do not run there: they only receive it as KERNEL_WORKING_DIR.
MAPPED_ROOT = "/srv/notebooks"
PROBE = ("import os; print(os.getcwd()); "
         "print(os.environ.get('KERNEL_WORKING_DIR', '-'))")


@pytest.fixture(scope="module")
def mapping_front(remote: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = front_server(tmp_path_factory.mktemp("front-wd"), remote.url, remote.token, extra=[
        "--set", f"remote_kernels.kernel_working_dir_root={MAPPED_ROOT}"]).start()
    yield server
    server.stop()


@pytest.fixture
async def mapping_api(mapping_front: Server) -> AsyncIterator[httpx.AsyncClient]:
    client = await login(mapping_front)
    yield client
    await client.aclose()


async def cwd_and_env(front: Server, api: httpx.AsyncClient, kernel_id: str) -> list[str]:
    conn = await KernelConnection.open(ws_url(front, kernel_id), cookie=cookie_header(api))
    try:
        execution = await conn.execute(PROBE)
        assert execution.reply["content"]["status"] == "ok", execution.reply
        return execution.stdout.splitlines()
    finally:
        await conn.close()


@ALL_KINDS
async def test_session_kernel_starts_in_the_notebooks_directory(
    remote: Server, mapping_front: Server, mapping_api: httpx.AsyncClient
) -> None:
    """A session for projects/a/nb.ipynb gets a kernel whose working directory is projects/a
    under the remote's root; gateways (whose kernels read their environment) also get
    KERNEL_WORKING_DIR mapped into kernel_working_dir_root, Jupyverse gets no environment."""
    (remote.workdir / "projects" / "a").mkdir(parents=True, exist_ok=True)
    response = await mapping_api.post("/api/sessions", json={
        "path": "projects/a/nb.ipynb", "type": "notebook", "name": "nb.ipynb",
        "kernel": {"name": "python3"}})
    assert response.status_code == 201, response.text
    session = response.json()
    try:
        cwd, working_dir = await cwd_and_env(mapping_front, mapping_api,
                                             session["kernel"]["id"])
        assert Path(cwd).resolve() == (remote.workdir / "projects" / "a").resolve()
        # Jupyverse and jupyter_server keep sessions themselves and start the kernel from the
        # session's path; the gateways get a kernel start with `env`.
        expected = (f"{MAPPED_ROOT}/projects/a"
                    if remote.kind in ("kernel_gateway", "enterprise_gateway") else "-")
        assert working_dir == expected
    finally:
        await mapping_api.delete(f"/api/sessions/{session['id']}")


@ALL_KINDS
async def test_kernel_start_with_path_maps_it(
    remote: Server, mapping_front: Server, mapping_api: httpx.AsyncClient
) -> None:
    """POST /api/kernels with `path` starts the kernel there; every kind that takes a kernel
    environment (the gateways: jupyter_server 2 drops the `env` of a kernel start) gets
    KERNEL_WORKING_DIR=<root>/<path>."""
    (remote.workdir / "projects" / "b").mkdir(parents=True, exist_ok=True)
    response = await mapping_api.post("/api/kernels", json={"name": "python3",
                                                            "path": "projects/b"})
    assert response.status_code == 201, response.text
    kernel_id = response.json()["id"]
    try:
        cwd, working_dir = await cwd_and_env(mapping_front, mapping_api, kernel_id)
        assert Path(cwd).resolve() == (remote.workdir / "projects" / "b").resolve()
        expected = (f"{MAPPED_ROOT}/projects/b"
                    if remote.kind in ("kernel_gateway", "enterprise_gateway") else "-")
        assert working_dir == expected
    finally:
        await mapping_api.delete(f"/api/kernels/{kernel_id}")


async def test_a_path_that_leaves_the_root_is_refused(mapping_api: httpx.AsyncClient) -> None:
    """A kernel `path` with `..` is answered 400 before any remote is asked."""
    response = await mapping_api.post("/api/kernels", json={"name": "python3",
                                                            "path": "a/../../etc"})
    assert response.status_code == 400
    assert "leaves the root" in response.json()["message"]


@ALL_KINDS
async def test_a_session_path_that_leaves_the_root_is_refused(api: httpx.AsyncClient) -> None:
    """A session `path` with `..` is answered 400 on every kind of remote (a Jupyverse remote
    would start the kernel there), and no kernel is started."""
    before = {k["id"] for k in (await api.get("/api/kernels")).json()}
    response = await api.post("/api/sessions", json={
        "path": "../../outside.ipynb", "type": "notebook", "name": "outside.ipynb",
        "kernel": {"name": "python3"}})
    assert response.status_code == 400, response.text
    assert "leaves the root" in response.json()["message"]
    assert {k["id"] for k in (await api.get("/api/kernels")).json()} == before


# ------------------------------------------------------------------ kernelspecs per user


@pytest.fixture(scope="module")
def eg_with_private_spec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An Enterprise Gateway with a kernelspec only `alice` may use."""
    workdir = tmp_path_factory.mktemp("eg-users")
    server = enterprise_gateway_remote(workdir)
    python3 = json.loads(next(
        (Path(server.command_override[0]).parents[1] / "share/jupyter/kernels").glob(
            "python3/kernel.json")).read_text()) if server.command_override else {}
    spec_dir = workdir / f"{server.name}-data" / "kernels" / "alices"
    spec_dir.mkdir(parents=True)
    spec = {**python3, "display_name": "Alice's Python", "metadata": {
        "process_proxy": {"config": {"authorized_users": ["alice"]}}}}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("user,sees_it", [("alice", True), ("bob", False)])
async def test_enterprise_gateway_lists_kernelspecs_for_the_kernel_user(
    eg_with_private_spec: Server, tmp_path: Path, user: str, sees_it: bool
) -> None:
    """The front asks Enterprise Gateway for the kernelspecs of its KERNEL_USERNAME
    (`?user=`): a spec authorized for alice is listed for her, not for bob."""
    front = front_server(tmp_path, eg_with_private_spec.url, eg_with_private_spec.token, extra=[
        "--set", f"remote_kernels.kernel_username={user}"]).start()
    try:
        client = await login(front)
        try:
            specs = (await client.get("/api/kernelspecs")).json()["kernelspecs"]
        finally:
            await client.aclose()
        assert "python3" in specs
        assert ("alices" in specs) is sees_it
    finally:
        front.stop()
