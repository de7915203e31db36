"""The REST API served by the front, against a real remote, with jupyter_server's codes."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import ALL_KINDS, runs_on_remote
from tests.support.servers import Server

pytestmark = [pytest.mark.anyio, ALL_KINDS]


async def test_kernelspecs_list_the_remote_specs_with_front_resource_urls(
    api: httpx.AsyncClient, remote_api: httpx.AsyncClient
) -> None:
    """GET /api/kernelspecs answers the remote's specs, resources pointing at the front."""
    response = await api.get("/api/kernelspecs")
    assert response.status_code == 200
    specs = response.json()
    remote_specs = (await remote_api.get("/api/kernelspecs")).json()
    assert specs["default"] == remote_specs["default"]
    assert set(specs["kernelspecs"]) == set(remote_specs["kernelspecs"])
    python = specs["kernelspecs"]["python3"]
    assert python["spec"] == remote_specs["kernelspecs"]["python3"]["spec"]
    assert python["resources"]["logo-64x64"] == "/kernelspecs/python3/logo-64x64.png"


async def test_kernelspec_by_name_and_unknown_name(api: httpx.AsyncClient) -> None:
    """GET /api/kernelspecs/{name} is 200 for a remote spec and 404 for others."""
    response = await api.get("/api/kernelspecs/python3")
    assert response.status_code == 200
    assert response.json()["name"] == "python3"
    missing = await api.get("/api/kernelspecs/no-such-kernel")
    assert missing.status_code == 404
    assert "not found" in missing.json()["message"]


async def test_logo_bytes_equal_the_remote_logo(
    api: httpx.AsyncClient, remote_api: httpx.AsyncClient
) -> None:
    """GET /kernelspecs/{name}/{file} relays the remote's bytes with an image content type."""
    front_logo = await api.get("/kernelspecs/python3/logo-64x64.png")
    remote_logo = await remote_api.get("/kernelspecs/python3/logo-64x64.png")
    assert front_logo.status_code == 200
    assert front_logo.headers["content-type"] == "image/png"
    assert front_logo.content == remote_logo.content and front_logo.content[:4] == b"\x89PNG"
    assert (await api.get("/kernelspecs/python3/no-such-file.png")).status_code == 404


async def test_start_kernel_get_interrupt_restart_delete(
    api: httpx.AsyncClient, remote_api: httpx.AsyncClient
) -> None:
    """POST /api/kernels 201+Location, GET 200, interrupt 204, restart 200, DELETE 204 then 404."""
    created = await api.post("/api/kernels", json={"name": "python3"})
    assert created.status_code == 201, created.text
    kernel = created.json()
    kernel_id = kernel["id"]
    assert created.headers["location"] == f"/api/kernels/{kernel_id}"
    assert kernel["name"] == "python3"
    # It runs on the remote, and does not show as a session of the front.
    assert await runs_on_remote(remote_api, kernel_id)
    assert all(s["kernel"]["id"] != kernel_id for s in (await api.get("/api/sessions")).json())

    got = await api.get(f"/api/kernels/{kernel_id}")
    assert got.status_code == 200 and got.json()["id"] == kernel_id
    assert kernel_id in [k["id"] for k in (await api.get("/api/kernels")).json()]

    interrupted = await api.post(f"/api/kernels/{kernel_id}/interrupt")
    assert interrupted.status_code == 204 and interrupted.content == b""
    restarted = await api.post(f"/api/kernels/{kernel_id}/restart")
    assert restarted.status_code == 200 and restarted.json()["id"] == kernel_id

    deleted = await api.delete(f"/api/kernels/{kernel_id}")
    assert deleted.status_code == 204
    assert not await runs_on_remote(remote_api, kernel_id)
    assert (await api.get(f"/api/kernels/{kernel_id}")).status_code == 404
    assert (await api.delete(f"/api/kernels/{kernel_id}")).status_code == 404


async def test_unknown_kernel_ids_are_404_on_every_kernel_route(api: httpx.AsyncClient) -> None:
    """A well-formed but unknown kernel id is 404 (the remote itself says `200 null`)."""
    kernel_id = str(uuid.uuid4())
    assert (await api.get(f"/api/kernels/{kernel_id}")).status_code == 404
    assert (await api.delete(f"/api/kernels/{kernel_id}")).status_code == 404
    assert (await api.post(f"/api/kernels/{kernel_id}/interrupt")).status_code == 404
    assert (await api.post(f"/api/kernels/{kernel_id}/restart")).status_code == 404


async def test_start_kernel_with_unknown_spec_is_refused(api: httpx.AsyncClient) -> None:
    """POST /api/kernels for a spec the remote lacks answers an error with a message."""
    response = await api.post("/api/kernels", json={"name": "no-such-kernel"})
    assert response.status_code == 501
    assert "no-such-kernel" in response.json()["message"]


async def test_session_lifecycle(api: httpx.AsyncClient, remote_api: httpx.AsyncClient) -> None:
    """Sessions: POST 201+Location, GET list/by id, PATCH rename and move, DELETE 204 then 404."""
    created = await api.post("/api/sessions", json={
        "path": "lifecycle.ipynb", "type": "notebook", "name": "lifecycle.ipynb",
        "kernel": {"name": "python3"},
    })
    assert created.status_code == 201, created.text
    session = created.json()
    session_id = session["id"]
    assert created.headers["location"] == f"/api/sessions/{session_id}"
    assert session["kernel"]["name"] == "python3"
    assert await runs_on_remote(remote_api, session["kernel"]["id"])

    # Creating a session for a path that has one returns that session, as jupyter_server does.
    again = await api.post("/api/sessions", json={
        "path": "lifecycle.ipynb", "type": "notebook", "name": "x", "kernel": {"name": "python3"},
    })
    assert again.status_code == 201 and again.json()["id"] == session_id

    assert session_id in [s["id"] for s in (await api.get("/api/sessions")).json()]
    got = await api.get(f"/api/sessions/{session_id}")
    assert got.status_code == 200 and got.json() == session

    renamed = await api.patch(f"/api/sessions/{session_id}",
                              json={"name": "renamed.ipynb", "path": "dir/renamed.ipynb"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "renamed.ipynb"
    assert renamed.json()["path"] == "dir/renamed.ipynb"
    assert renamed.json()["notebook"] == {"path": "dir/renamed.ipynb", "name": "renamed.ipynb"}
    assert renamed.json()["kernel"]["id"] == session["kernel"]["id"]
    assert (await api.get(f"/api/sessions/{session_id}")).json()["name"] == "renamed.ipynb"

    deleted = await api.delete(f"/api/sessions/{session_id}")
    assert deleted.status_code == 204
    assert (await api.get(f"/api/sessions/{session_id}")).status_code == 404
    assert (await api.delete(f"/api/sessions/{session_id}")).status_code == 404
    assert (await api.patch(f"/api/sessions/{session_id}", json={"name": "x"})).status_code == 404
    assert not await runs_on_remote(remote_api, session["kernel"]["id"])


async def test_patch_changes_the_kernel_of_a_session(
    api: httpx.AsyncClient, session: dict
) -> None:
    """PATCH with a kernel name starts a new remote kernel for the session."""
    old_kernel = session["kernel"]["id"]
    response = await api.patch(f"/api/sessions/{session['id']}",
                               json={"id": session["id"], "kernel": {"name": "python3"}})
    assert response.status_code == 200, response.text
    assert response.json()["kernel"]["id"] != old_kernel
    assert (await api.get(f"/api/kernels/{response.json()['kernel']['id']}")).status_code == 200


async def test_session_requests_with_bad_bodies_get_4xx_with_a_message(
    api: httpx.AsyncClient, session: dict
) -> None:
    """Malformed JSON, missing fields, wrong types and non-JSON content types are 4xx."""
    bad = [
        (b"{not json", "application/json", 400),
        (b"", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'{"type": "notebook"}', "application/json", 400),
        (b'{"path": 3, "type": "notebook"}', "application/json", 400),
        (b'{"path": "a", "type": "notebook", "kernel": "python3"}', "application/json", 400),
        (b'{"path": "a.ipynb", "type": "notebook"}', "application/x-www-form-urlencoded", 415),
    ]
    for body, content_type, status in bad:
        response = await api.post("/api/sessions", content=body,
                                  headers={"Content-Type": content_type})
        assert response.status_code == status, (body, response.text)
        assert response.json()["message"]
    # text/plain is how fetch() labels JupyterLab's JSON, and what a cross-site form sends:
    # it is accepted from the front's own pages only.
    cross_site = await api.post("/api/sessions",
                                content=b'{"path": "x.ipynb", "type": "notebook"}',
                                headers={"Content-Type": "text/plain",
                                         "Origin": "https://evil.example"})
    assert cross_site.status_code == 403
    mismatch = await api.patch(f"/api/sessions/{session['id']}",
                               json={"id": str(uuid.uuid4()), "name": "x"})
    assert mismatch.status_code == 400
    unknown_spec = await api.post("/api/sessions", json={
        "path": "u.ipynb", "type": "notebook", "kernel": {"name": "nope"}})
    assert unknown_spec.status_code == 501


async def test_malformed_ids_and_names_never_reach_the_remote(api: httpx.AsyncClient) -> None:
    """Traversal, encoded slashes and non-UUID ids are 404 (or refused), never proxied."""
    paths = [
        "/api/kernels/..%2F..%2Fapi%2Fstatus",
        "/api/kernels/%2e%2e",
        "/api/kernels/not-a-uuid",
        "/api/kernels/" + "a" * 300,
        "/api/sessions/not-a-uuid",
        "/api/kernelspecs/..",
        "/kernelspecs/python3/..%2Fkernel.json",
        "/kernelspecs/%2e%2e/logo-64x64.png",
        "/kernelspecs/python3/.hidden",
    ]
    for path in paths:
        response = await api.get(path)
        assert response.status_code in (400, 404), (path, response.status_code)


async def test_status_reports_the_remote_as_reachable(api: httpx.AsyncClient, remote: Server
                                                      ) -> None:
    """GET /api/status answers the front's status and that the remote is reachable."""
    response = await api.get("/api/status")
    assert response.status_code == 200
    status = response.json()
    assert status["remote"]["reachable"] is True
    assert status["remote"]["url"] == remote.url
    assert status["remote"]["kind"] == remote.kind  # detected


async def test_unauthenticated_requests_are_refused_everywhere(front: Server) -> None:
    """Without the front's cookie every route is refused by Jupyverse's auth (403 or login)."""
    kernel_id = str(uuid.uuid4())
    routes = [
        ("GET", "/api/status"), ("GET", "/api/kernelspecs"), ("GET", "/api/kernelspecs/python3"),
        ("GET", "/kernelspecs/python3/logo-64x64.png"), ("GET", "/api/kernels"),
        ("POST", "/api/kernels"), ("GET", f"/api/kernels/{kernel_id}"),
        ("DELETE", f"/api/kernels/{kernel_id}"), ("POST", f"/api/kernels/{kernel_id}/interrupt"),
        ("POST", f"/api/kernels/{kernel_id}/restart"), ("GET", "/api/sessions"),
        ("POST", "/api/sessions"), ("GET", f"/api/sessions/{kernel_id}"),
        ("PATCH", f"/api/sessions/{kernel_id}"), ("DELETE", f"/api/sessions/{kernel_id}"),
    ]
    async with httpx.AsyncClient(base_url=front.url) as anonymous:
        for method, path in routes:
            response = await anonymous.request(method, path, json={})
            assert response.status_code in (401, 403) or (
                response.status_code in (302, 307) and "login" in response.headers["location"]
            ), (method, path, response.status_code)


async def test_remote_token_never_appears_in_answers_or_front_logs(
    api: httpx.AsyncClient, remote: Server, front: Server, session: dict
) -> None:
    """The remote token is in no response body or header, and in no line of the front's log."""
    responses = [
        await api.get("/api/status"), await api.get("/api/kernelspecs"),
        await api.get("/api/kernels"), await api.get("/api/sessions"),
        await api.get(f"/api/sessions/{session['id']}"),
        await api.get("/kernelspecs/python3/logo-64x64.png"),
        await api.post("/api/sessions", content=b"{", headers={"Content-Type": "application/json"}),
    ]
    for response in responses:
        assert remote.token not in response.text
        assert all(remote.token not in value for value in response.headers.values())
        assert "set-cookie" not in response.headers  # the remote's cookie stays in the front
    assert remote.token not in front.log_path.read_text(errors="replace")
