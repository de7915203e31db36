"""The real front in-process (Jupyverse's module tree with this plugin, driven through an ASGI
transport, as jupyverse's own tests drive theirs) in front of fake Kernel Gateway remotes
served by uvicorn inside the test process: the REST API, its error mapping, two remotes
merged, and kernel WebSockets relayed. No subprocess, no real kernel."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.support.in_process import (
    ECHO,
    LOGO,
    AsgiWebSocket,
    Closed,
    Denied,
    FakeGateway,
    Front,
    closed_port,
    in_process_front,
    legacy_request,
    serving,
    v1_request,
)
from tests.support.kernel_client import V1, deserialize_legacy, deserialize_v1

pytestmark = [pytest.mark.anyio, pytest.mark.fast]

REMOTE_TOKEN = "remote-s3cret-token"
FRONT_TOKEN = "front-s3cret-token"


@pytest.fixture(scope="module", autouse=True)
def file_ids_left_as_they_were() -> Iterator[None]:
    """The plugin guards fps-file-id's watching loop when it is built; the digest test of
    that code (host/test_collaboration_guards.py) must still see the original afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        try:
            from fps_file_id.file_id import _FileId
        except ImportError:
            yield
            return
        patch.setattr(_FileId, "watch_files", _FileId.watch_files)
        yield


@pytest.fixture(scope="module")
async def gateway() -> AsyncIterator[FakeGateway]:
    async with serving(FakeGateway(REMOTE_TOKEN)) as served:
        yield served


@pytest.fixture(scope="module")
async def front(gateway: FakeGateway, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[Front]:
    async with in_process_front(tmp_path_factory.mktemp("front"), {
            "url": gateway.url, "kind": "kernel_gateway", "token": REMOTE_TOKEN},
            FRONT_TOKEN) as started:
        yield started


@pytest.fixture
async def api(front: Front) -> httpx.AsyncClient:
    return front.client


@pytest.fixture
async def kernel(api: httpx.AsyncClient) -> AsyncIterator[str]:
    """A kernel started through the front, deleted afterwards."""
    with anyio.fail_after(10):
        response = await api.post("/api/kernels", json={"name": "python3"})
    assert response.status_code == 201, response.text
    kernel_id = str(response.json()["id"])
    yield kernel_id
    with anyio.fail_after(10):
        await api.delete(f"/api/kernels/{kernel_id}")


def no_secret_in(text: str) -> None:
    assert REMOTE_TOKEN not in text and FRONT_TOKEN not in text, text


async def call(api: httpx.AsyncClient, method: str, path: str, **kwargs: Any
               ) -> httpx.Response:
    with anyio.fail_after(10):
        return await api.request(method, path, **kwargs)


# ---------------------------------------------------------------- REST


async def test_status_names_the_remote_its_kind_and_health(api: httpx.AsyncClient,
                                                           gateway: FakeGateway) -> None:
    """GET /api/status: the remote's URL (no credentials), its kind, and that it answers."""
    response = await call(api, "GET", "/api/status")
    assert response.status_code == 200
    (remote,) = response.json()["remotes"]
    assert (remote["url"], remote["kind"], remote["reachable"]) == (
        gateway.url, "kernel_gateway", True)
    no_secret_in(response.text)


async def test_requests_without_the_fronts_login_are_refused(front: Front) -> None:
    """A client without the front's cookie or token gets no kernel listing."""
    transport = httpx.ASGITransport(app=front.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as anon:
        with anyio.fail_after(10):
            response = await anon.get("/api/kernels")
    assert response.status_code == 403


async def test_kernelspecs_are_the_remotes_with_resources_served_by_the_front(
        api: httpx.AsyncClient) -> None:
    """The remote's kernelspecs, default included; resource URLs point at the front."""
    response = await call(api, "GET", "/api/kernelspecs")
    assert response.status_code == 200
    specs = response.json()
    assert specs["default"] == "python3" and list(specs["kernelspecs"]) == ["python3"]
    spec = specs["kernelspecs"]["python3"]
    assert spec["spec"]["display_name"] == "Python3"  # one remote: no suffix
    assert spec["resources"] == {"logo-64x64": "/kernelspecs/python3/logo-64x64.png"}


async def test_a_kernelspec_resource_comes_from_the_remote(api: httpx.AsyncClient) -> None:
    """GET /kernelspecs/{name}/{file} answers the remote's bytes and content type."""
    response = await call(api, "GET", "/kernelspecs/python3/logo-64x64.png")
    assert response.status_code == 200
    assert response.content == LOGO
    assert response.headers["content-type"] == "image/png"


async def test_one_kernelspec_by_name_and_an_unknown_one(api: httpx.AsyncClient) -> None:
    """GET /api/kernelspecs/{name}: the spec, or 404 for a name no remote has."""
    assert (await call(api, "GET", "/api/kernelspecs/python3")).json()["name"] == "python3"
    assert (await call(api, "GET", "/api/kernelspecs/nope")).status_code == 404


async def test_a_kernel_is_started_listed_got_and_deleted(api: httpx.AsyncClient,
                                                          gateway: FakeGateway) -> None:
    """A kernel: POST 201 with Location, listed, got, DELETE 204, then 404; on the remote too."""
    started = await call(api, "POST", "/api/kernels", json={"name": "python3"})
    assert started.status_code == 201, started.text
    kernel_id = started.json()["id"]
    assert started.headers["location"] == f"/api/kernels/{kernel_id}"
    assert kernel_id in gateway.kernels
    listed = await call(api, "GET", "/api/kernels")
    assert kernel_id in [k["id"] for k in listed.json()]
    got = await call(api, "GET", f"/api/kernels/{kernel_id}")
    assert (got.status_code, got.json()["name"]) == (200, "python3")
    assert (await call(api, "DELETE", f"/api/kernels/{kernel_id}")).status_code == 204
    assert kernel_id not in gateway.kernels
    assert (await call(api, "GET", f"/api/kernels/{kernel_id}")).status_code == 404


async def test_a_kernel_start_sends_the_kernel_user_and_the_requested_env(
        api: httpx.AsyncClient, gateway: FakeGateway) -> None:
    """A start sends KERNEL_USERNAME and the request's env to the remote, never a token."""
    started = await call(api, "POST", "/api/kernels",
                         json={"name": "python3", "env": {"KERNEL_NS": "x"}})
    await call(api, "DELETE", f"/api/kernels/{started.json()['id']}")
    body = gateway.starts[-1]
    assert body["name"] == "python3"
    assert body["env"]["KERNEL_NS"] == "x" and body["env"]["KERNEL_USERNAME"]
    no_secret_in(str(body))


async def test_an_unknown_kernel_is_404(api: httpx.AsyncClient) -> None:
    """A kernel id the remote does not know is 404 with jupyter_server's JSON shape."""
    response = await call(api, "GET", f"/api/kernels/{uuid.uuid4()}")
    assert response.status_code == 404
    assert set(response.json()) == {"message", "reason"}


async def test_a_kernel_id_that_is_not_a_uuid_never_reaches_the_remote(
        api: httpx.AsyncClient, gateway: FakeGateway) -> None:
    """GET /api/kernels/not-a-uuid is 404 from the front itself."""
    before = len(gateway.requests)
    response = await call(api, "GET", "/api/kernels/not-a-uuid")
    assert response.status_code == 404
    assert not any("not-a-uuid" in path for _, path, _ in gateway.requests[before:])


async def test_a_kernelspec_no_remote_offers_is_501(api: httpx.AsyncClient) -> None:
    """Starting a kernel of a kernelspec no remote has is 501, as jupyter_server answers."""
    response = await call(api, "POST", "/api/kernels", json={"name": "nope"})
    assert response.status_code == 501
    assert "'nope' kernel is not available" in response.json()["message"]


async def test_interrupt_is_204_and_restart_answers_the_model(api: httpx.AsyncClient,
                                                              kernel: str) -> None:
    """POST interrupt: 204; POST restart: 200 with the kernel's model."""
    assert (await call(api, "POST", f"/api/kernels/{kernel}/interrupt")).status_code == 204
    restarted = await call(api, "POST", f"/api/kernels/{kernel}/restart")
    assert (restarted.status_code, restarted.json()["id"]) == (200, kernel)


async def test_a_session_is_created_with_its_kernel_in_the_notebooks_directory(
        api: httpx.AsyncClient, gateway: FakeGateway) -> None:
    """POST /api/sessions: 201, its kernel started in the notebook's directory, front-kept."""
    response = await call(api, "POST", "/api/sessions", json={
        "path": "work/a.ipynb", "type": "notebook", "name": "a.ipynb",
        "kernel": {"name": "python3"}})
    assert response.status_code == 201, response.text
    session = response.json()
    try:
        assert gateway.starts[-1]["path"] == "work"
        assert session["kernel"]["id"] in gateway.kernels
        assert session["notebook"] == {"path": "work/a.ipynb", "name": "a.ipynb"}
        assert response.headers["location"] == f"/api/sessions/{session['id']}"
        got = await call(api, "GET", f"/api/sessions/{session['id']}")
        assert got.json()["kernel"]["id"] == session["kernel"]["id"]
        assert session["id"] in [s["id"] for s in (await call(api, "GET", "/api/sessions")
                                                   ).json()]
    finally:
        await call(api, "DELETE", f"/api/sessions/{session['id']}")


async def test_a_second_session_for_the_same_path_is_the_first(api: httpx.AsyncClient) -> None:
    """Creating a session for a path that has one returns that one (jupyter_server's rule)."""
    body = {"path": "same.ipynb", "type": "notebook", "name": "same.ipynb",
            "kernel": {"name": "python3"}}
    first = (await call(api, "POST", "/api/sessions", json=body)).json()
    try:
        second = (await call(api, "POST", "/api/sessions", json=body)).json()
        assert second["id"] == first["id"]
        assert second["kernel"]["id"] == first["kernel"]["id"]
    finally:
        await call(api, "DELETE", f"/api/sessions/{first['id']}")


async def test_a_session_renamed_keeps_its_kernel(api: httpx.AsyncClient) -> None:
    """PATCH with a new path moves the session; its kernel stays."""
    session = (await call(api, "POST", "/api/sessions", json={
        "path": "old.ipynb", "type": "notebook", "name": "old.ipynb",
        "kernel": {"name": "python3"}})).json()
    try:
        renamed = await call(api, "PATCH", f"/api/sessions/{session['id']}",
                             json={"path": "new.ipynb", "name": "new.ipynb"})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["path"] == "new.ipynb"
        assert renamed.json()["kernel"]["id"] == session["kernel"]["id"]
    finally:
        await call(api, "DELETE", f"/api/sessions/{session['id']}")


async def test_deleting_a_session_shuts_its_kernel_down(api: httpx.AsyncClient,
                                                        gateway: FakeGateway) -> None:
    """DELETE /api/sessions/{id}: 204, its kernel gone from the remote, the session 404."""
    session = (await call(api, "POST", "/api/sessions", json={
        "path": "gone.ipynb", "type": "notebook", "name": "gone.ipynb",
        "kernel": {"name": "python3"}})).json()
    assert (await call(api, "DELETE", f"/api/sessions/{session['id']}")).status_code == 204
    assert session["kernel"]["id"] not in gateway.kernels
    assert (await call(api, "GET", f"/api/sessions/{session['id']}")).status_code == 404


async def test_a_session_without_a_path_is_400(api: httpx.AsyncClient) -> None:
    """The route's own check: a missing field is 400, named."""
    response = await call(api, "POST", "/api/sessions", json={"type": "notebook"})
    assert (response.status_code, response.json()["message"]) == (
        400, "Missing field in JSON data: path")


async def test_a_form_body_is_415(api: httpx.AsyncClient) -> None:
    """A kernel start posted as a form is 415 before any remote is asked."""
    response = await call(api, "POST", "/api/kernels", data={"name": "python3"})
    assert response.status_code == 415


async def test_a_failing_remote_is_502_without_credentials_in_the_answer(
        api: httpx.AsyncClient, gateway: FakeGateway) -> None:
    """A remote answering 500 is 502 Bad Gateway naming the remote, never a token."""
    gateway.failing = 500
    try:
        response = await call(api, "GET", "/api/kernels")
    finally:
        gateway.failing = None
    assert response.status_code == 502
    assert response.json()["reason"] == "Bad Gateway"
    assert gateway.url in response.json()["message"]
    no_secret_in(response.text)


async def test_a_remote_refusing_the_fronts_token_is_502_naming_the_option(
        api: httpx.AsyncClient, gateway: FakeGateway) -> None:
    """The remote refusing our token is 502 naming remote_kernels.token, without the token."""
    gateway.token = "another-token"
    try:
        response = await call(api, "GET", "/api/kernels")
    finally:
        gateway.token = REMOTE_TOKEN
    assert response.status_code == 502
    assert "check remote_kernels.token" in response.json()["message"]
    no_secret_in(response.text)


async def test_the_remote_is_sent_its_token_and_never_the_fronts(
        api: httpx.AsyncClient, gateway: FakeGateway) -> None:
    """The remote gets `Authorization: token <its token>`, never the front's token or cookie."""
    before = len(gateway.requests)
    await call(api, "GET", "/api/kernels")
    for _, _, headers in gateway.requests[before:]:
        assert headers["authorization"] == f"token {REMOTE_TOKEN}"
        assert FRONT_TOKEN not in str(headers) and "fastapiusersauth" not in str(headers)


async def test_metrics_count_the_requests_sent_to_the_remote(api: httpx.AsyncClient) -> None:
    """GET /metrics (logged in) shows the remote's requests by route template."""
    await call(api, "GET", "/api/kernels")
    response = await call(api, "GET", "/metrics")
    assert response.status_code == 200
    assert 'remote_kernels_remote_requests_total{method="GET",remote="remote",' \
           'route="api/kernels",status="200"}' in response.text


# ---------------------------------------------------------------- remote down


@pytest.fixture(scope="module")
async def down_front(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Front]:
    async with in_process_front(tmp_path_factory.mktemp("down"), {
            "url": closed_port(), "kind": "kernel_gateway", "token": REMOTE_TOKEN},
            FRONT_TOKEN) as started:
        yield started


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/kernels"), ("GET", "/api/kernelspecs"),
    ("GET", "/api/kernels/8c3f1f5e-1c4e-4b8a-9d2e-0123456789ab"),
    ("POST", "/api/kernels"),
])
async def test_a_remote_that_is_down_is_503_unreachable(down_front: Front, method: str,
                                                        path: str) -> None:
    """A remote down is 503 unreachable (JupyterLab keeps polling), naming it, with no token."""
    response = await call(down_front.client, method, path,
                          **({"json": {"name": "python3"}} if method == "POST" else {}))
    assert response.status_code == 503, response.text
    assert "is unreachable" in response.json()["message"]
    no_secret_in(response.text)


async def test_the_front_answers_its_status_while_its_remote_is_down(down_front: Front) -> None:
    """GET /api/status is 200 and says the remote is not reachable, and why."""
    response = await call(down_front.client, "GET", "/api/status")
    assert response.status_code == 200
    (remote,) = response.json()["remotes"]
    assert remote["reachable"] is False and "unreachable" in remote["message"]


# ---------------------------------------------------------------- two remotes


@pytest.fixture(scope="module")
async def pair(tmp_path_factory: pytest.TempPathFactory
               ) -> AsyncIterator[tuple[Front, FakeGateway, FakeGateway]]:
    async with serving(FakeGateway(REMOTE_TOKEN, ("python3",))) as a, \
            serving(FakeGateway(REMOTE_TOKEN, ("python3", "ir"))) as b:
        remotes = [{"name": name, "url": g.url, "kind": "kernel_gateway",
                    "token": REMOTE_TOKEN} for name, g in (("a", a), ("b", b))]
        async with in_process_front(tmp_path_factory.mktemp("pair"),
                                    {"remotes": remotes}, FRONT_TOKEN) as started:
            yield started, a, b


async def test_two_remotes_kernelspecs_are_merged_with_clashes_prefixed(
        pair: tuple[Front, FakeGateway, FakeGateway]) -> None:
    """Two remotes' kernelspecs merge: a clash is b:python3, display names say the remote."""
    front, _, _ = pair
    specs = (await call(front.client, "GET", "/api/kernelspecs")).json()
    assert specs["default"] == "python3"
    assert sorted(specs["kernelspecs"]) == ["b:python3", "ir", "python3"]
    names = {n: s["spec"]["display_name"] for n, s in specs["kernelspecs"].items()}
    assert names == {"python3": "Python3 (a)", "b:python3": "Python3 (b)", "ir": "Ir (b)"}
    assert specs["kernelspecs"]["b:python3"]["resources"] == {
        "logo-64x64": "/kernelspecs/b:python3/logo-64x64.png"}


async def test_a_prefixed_kernelspec_starts_on_its_remote(
        pair: tuple[Front, FakeGateway, FakeGateway]) -> None:
    """b:python3 starts on remote b as python3, is named b:python3 and routed to b."""
    front, a, b = pair
    started = await call(front.client, "POST", "/api/kernels", json={"name": "b:python3"})
    assert started.status_code == 201, started.text
    kernel_id = started.json()["id"]
    try:
        assert kernel_id in b.kernels and kernel_id not in a.kernels
        assert b.starts[-1]["name"] == "python3"
        got = await call(front.client, "GET", f"/api/kernels/{kernel_id}")
        assert got.json()["name"] == "b:python3"
    finally:
        await call(front.client, "DELETE", f"/api/kernels/{kernel_id}")
    assert kernel_id not in b.kernels


async def test_one_remote_failing_leaves_the_others_listed(
        pair: tuple[Front, FakeGateway, FakeGateway]) -> None:
    """One remote failing: a's kernels listed, b's known one unreachable, b's specs left out."""
    front, a, b = pair
    on_a = (await call(front.client, "POST", "/api/kernels", json={"name": "python3"})).json()
    on_b = (await call(front.client, "POST", "/api/kernels", json={"name": "ir"})).json()
    b.failing = 500
    try:
        listed = await call(front.client, "GET", "/api/kernels")
        specs = await call(front.client, "GET", "/api/kernelspecs")
    finally:
        b.failing = None
        for kernel in (on_a, on_b):
            await call(front.client, "DELETE", f"/api/kernels/{kernel['id']}")
    assert listed.status_code == 200
    by_id = {k["id"]: k for k in listed.json()}
    assert by_id[on_a["id"]].get("reachable", True) is True
    assert by_id[on_b["id"]]["reachable"] is False
    assert by_id[on_b["id"]]["execution_state"] == "unknown"
    assert sorted(specs.json()["kernelspecs"]) == ["python3"]


# ---------------------------------------------------------------- kernel WebSockets


def socket_to(front: Front, kernel_id: str, subprotocols: list[str], *,
              cookie: bool = True, origin: str | None = None,
              session: str = "s1") -> AsgiWebSocket:
    headers = {"cookie": front.cookie()} if cookie else {}
    if origin is not None:
        headers["origin"] = origin
    return AsgiWebSocket(front.app, f"/api/kernels/{kernel_id}/channels?session_id={session}",
                         headers, subprotocols)


async def test_frames_are_relayed_text_as_text_and_bytes_as_bytes(front: Front,
                                                                  kernel: str) -> None:
    """On a subprotocol relayed as agreed, text comes back as text and bytes as bytes."""
    with anyio.fail_after(10):
        async with socket_to(front, kernel, [ECHO]).connected() as ws:
            assert ws.subprotocol == ECHO
            await ws.send("héllo")
            assert await ws.receive() == "héllo"
            await ws.send(b"\x00\xffbinary")
            assert await ws.receive() == b"\x00\xffbinary"


async def test_a_v1_request_gets_its_reply(front: Front, kernel: str) -> None:
    """v1 on both legs: a kernel_info_request gets its v1 reply, parented to the request."""
    with anyio.fail_after(10):
        async with socket_to(front, kernel, [V1]).connected() as ws:
            assert ws.subprotocol == V1
            request = v1_request("kernel_info_request", {})
            await ws.send(request)
            reply = await ws.receive()
    assert isinstance(reply, bytes)
    message = deserialize_v1(reply)
    assert message["header"]["msg_type"] == "kernel_info_reply"
    assert message["parent_header"]["msg_id"] == deserialize_v1(request)["header"]["msg_id"]


async def test_a_legacy_client_of_a_v1_remote_is_translated(front: Front, kernel: str) -> None:
    """A legacy client of a v1 remote sends and gets JSON text, the kernel's messages in order."""
    with anyio.fail_after(10):
        async with socket_to(front, kernel, []).connected() as ws:
            assert ws.subprotocol is None
            await ws.send(legacy_request("execute_request", {"code": "print(42)"}))
            received = [await ws.receive() for _ in range(4)]
    assert all(isinstance(m, str) for m in received)
    messages = [deserialize_legacy(m) for m in received]
    assert [m["header"]["msg_type"] for m in messages] == [
        "status", "stream", "execute_reply", "status"]
    assert messages[1]["content"]["text"] == "print(42)"
    assert messages[1]["channel"] == "iopub"


async def test_the_remotes_close_code_and_reason_reach_the_client(front: Front,
                                                                  kernel: str) -> None:
    """The remote closing the socket with 4321 and a reason: the client gets both."""
    with anyio.fail_after(10):
        async with socket_to(front, kernel, [V1]).connected() as ws:
            await ws.send(v1_request("execute_request", {"code": "close 4321 kernel says bye"}))
            with pytest.raises(Closed) as closed:
                await ws.receive()
    assert (closed.value.code, closed.value.reason) == (4321, "kernel says bye")


async def test_a_malformed_v1_frame_closes_the_client_with_1007(front: Front,
                                                                kernel: str) -> None:
    """A binary frame that is not a v1 message closes the client's socket with 1007."""
    with anyio.fail_after(10):
        async with socket_to(front, kernel, [V1]).connected() as ws:
            await ws.send(b"\x01\x00not a v1 frame")
            with pytest.raises(Closed) as closed:
                await ws.receive()
    assert closed.value.code == 1007


async def test_a_socket_to_an_unknown_kernel_is_refused_with_404(front: Front) -> None:
    """The remote refusing the handshake for an unknown kernel: the client gets 404."""
    with anyio.fail_after(10), pytest.raises(Denied) as denied:
        async with socket_to(front, str(uuid.uuid4()), [V1]).connected():
            pass
    assert denied.value.status == 404


async def test_a_socket_without_the_fronts_login_is_refused(front: Front, kernel: str) -> None:
    """No cookie: the handshake is refused before any remote is contacted."""
    with anyio.fail_after(10), pytest.raises(Denied) as denied:
        async with socket_to(front, kernel, [V1], cookie=False).connected():
            pass
    assert (denied.value.status, denied.value.close_code) == (None, 1008)  # fps-auth's close


async def test_a_cross_origin_socket_is_refused_with_403(front: Front, kernel: str) -> None:
    """A browser socket from another origin is refused 403 (WebSocket hijacking)."""
    with anyio.fail_after(10), pytest.raises(Denied) as denied:
        async with socket_to(front, kernel, [V1], origin="http://evil.example").connected():
            pass
    assert denied.value.status == 403
    assert b"evil.example" in denied.value.body


async def test_deleting_a_kernel_closes_its_sockets_with_1000(front: Front,
                                                              api: httpx.AsyncClient) -> None:
    """DELETE of a kernel with a socket open: that client gets 1000 "Kernel shut down"."""
    kernel_id = (await call(api, "POST", "/api/kernels", json={"name": "python3"})).json()["id"]
    with anyio.fail_after(10):
        async with socket_to(front, kernel_id, [V1]).connected() as ws:
            assert (await call(api, "DELETE", f"/api/kernels/{kernel_id}")).status_code == 204
            with pytest.raises(Closed) as closed:
                await ws.receive()
    assert (closed.value.code, closed.value.reason) == (1000, "Kernel shut down")


async def test_an_open_socket_and_the_kernels_status_show_in_its_model(
        front: Front, api: httpx.AsyncClient, kernel: str) -> None:
    """The kernel's model counts an open socket and has the state last seen on it."""
    with anyio.fail_after(10):
        async with socket_to(front, kernel, [V1]).connected() as ws:
            await ws.send(v1_request("execute_request", {"code": "1"}))
            for _ in range(4):
                await ws.receive()
            model = (await call(api, "GET", f"/api/kernels/{kernel}")).json()
    assert model["connections"] >= 1
    assert model["execution_state"] == "idle"


async def test_a_front_kept_session_survives_a_restart_of_the_front(
        gateway: FakeGateway, tmp_path: Path) -> None:
    """A session the front keeps survives a restart of the front on the same sessions_db."""
    options = {"url": gateway.url, "kind": "kernel_gateway", "token": REMOTE_TOKEN}
    async with in_process_front(tmp_path, options, FRONT_TOKEN) as first:
        session = (await call(first.client, "POST", "/api/sessions", json={
            "path": "kept.ipynb", "type": "notebook", "name": "kept.ipynb",
            "kernel": {"name": "python3"}})).json()
    async with in_process_front(tmp_path, options, FRONT_TOKEN) as second:
        try:
            got = await call(second.client, "GET", f"/api/sessions/{session['id']}")
            assert got.status_code == 200
            assert got.json()["kernel"]["id"] == session["kernel"]["id"]
        finally:
            await call(second.client, "DELETE", f"/api/sessions/{session['id']}")


async def test_a_client_back_within_the_grace_period_gets_what_it_missed(
        front: Front, gateway: FakeGateway, kernel: str) -> None:
    """A client gone without a close frame (1006) and back with its session_id: in order."""
    replay = front.module.kernels.replay
    claimed_before = replay.replayed_sessions
    gateway.hold = anyio.Event()
    with anyio.fail_after(10):
        async with socket_to(front, kernel, [V1], session="away").connected() as first:
            await first.send(v1_request("execute_request", {"code": "hold"}))
            busy = deserialize_v1(await first.receive())
            assert busy["content"] == {"execution_state": "busy"}
            await first.vanish()
            await anyio.wait_all_tasks_blocked()  # the bridge keeps the upstream, away
            assert len(replay) == 1
            gateway.hold.set()  # the kernel goes on while its client is away
            async with socket_to(front, kernel, [V1], session="away").connected() as second:
                missed = [deserialize_v1(await second.receive()) for _ in range(3)]
    assert [m["header"]["msg_type"] for m in missed] == ["stream", "execute_reply", "status"]
    assert missed[0]["content"]["text"] == "hold"
    assert replay.replayed_sessions == claimed_before + 1
