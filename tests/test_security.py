"""Bad input and security: the front lets no unauthenticated or unauthorized request through,
never forwards a hostile path, body or frame to the remote, shields the remote from
malformed kernel frames, refuses cross-site kernel sockets, keeps credentials apart, and
verifies the remote's TLS certificate.

The main front here reaches a real remote Jupyverse over TLS (a certificate made by trustme,
terminated by the fault proxy, which records the plaintext the remote receives) and runs with
`--debug`, so that its log holds everything the libraries log.
"""

from __future__ import annotations

import json
import ssl
import struct
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import anyio
import httpx
import pytest
import trustme
import websockets
from fps_kernels.kernel_server.message import deserialize_msg_from_ws_v1
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from fps_remote_kernels.relay.frames import (
    FrameError,
    check_legacy_frame,
    check_v1_frame,
    legacy_to_v1,
)
from tests.conftest import cookie_header, ws_url
from tests.support.fault_proxy import BackgroundLoop, FaultProxy
from tests.support.harness import (
    logged_in,
    login,
    outside_the_kernels_api,
    raw_request,
    raw_request_sync,
    rss_mb,
)
from tests.support.kernel_client import V1, KernelConnection, make_message, serialize_v1
from tests.support.servers import Server, front_server

pytestmark = pytest.mark.anyio

ALLOWED_ORIGIN = "https://allowed.example"
FOREIGN_ORIGIN = "https://evil.example"
KERNEL_API = ("/api/kernels", "/api/kernelspecs", "/kernelspecs/", "/api/sessions", "/api/status")
CHANNELS = ("shell", "control", "stdin", "iopub")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def tls_terminator(ca: trustme.CA, remote: Server, loop: BackgroundLoop) -> FaultProxy:
    """An https remote: TLS with a certificate for 127.0.0.1 signed by `ca`, in front of the
    real (plain http) remote."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return FaultProxy(remote.port, loop=loop, ssl_context=context)


@pytest.fixture(scope="module")
def tls_proxy(ca: trustme.CA, remote: Server, loop: BackgroundLoop) -> Iterator[FaultProxy]:
    proxy = tls_terminator(ca, remote, loop)
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def secure_front(tls_proxy: FaultProxy, remote: Server, ca_file: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An API-only front, debug logging on, one allowed foreign origin, whose remote is https
    with a certificate checked against a configured CA bundle."""
    server = front_server(tmp_path_factory.mktemp("secure-front"), tls_proxy.url, remote.token,
                          extra=["--debug", "--allow-origin", ALLOWED_ORIGIN,
                                 "--set", f"remote_kernels.verify={ca_file}"]).start()
    yield server
    server.stop()


@pytest.fixture
async def client(secure_front: Server) -> AsyncIterator[httpx.AsyncClient]:
    http = await login(secure_front)
    yield http
    await http.aclose()


@pytest.fixture(scope="module")
def kernel_id(secure_front: Server) -> Iterator[str]:
    """A kernel started through the secure front (over TLS), deleted at the end."""
    with httpx.Client(base_url=secure_front.url, timeout=120) as http:
        http.get("/api/status", params={"token": secure_front.token})
        created = http.post("/api/sessions", json={
            "path": f"security-{uuid.uuid4().hex}.ipynb", "type": "notebook",
            "kernel": {"name": "python3"}})
        assert created.status_code == 201, created.text
        yield created.json()["kernel"]["id"]
        http.delete(f"/api/sessions/{created.json()['id']}")


def kernel_routes(front: Server) -> list[tuple[str, str]]:
    """(method, path template) of every kernels-API route, from the front's /openapi.json
    (plus the kernel WebSocket, which OpenAPI does not list)."""
    spec = httpx.get(f"{front.url}openapi.json", timeout=30).json()
    routes = [(method.upper(), path) for path, operations in spec["paths"].items()
              if path.startswith(KERNEL_API) for method in operations]
    assert len(routes) >= 15, routes
    return routes


async def open_kernel(front: Server, client: httpx.AsyncClient, kernel: str
                      ) -> KernelConnection:
    return await KernelConnection.open(ws_url(front, kernel), cookie=cookie_header(client))


def fill(template: str, value: str) -> str:
    for name in ("{kernel_id}", "{session_id}", "{kernel_name}", "{file_name}"):
        template = template.replace(name, value)
    return template


# ---------------------------------------------------------------- TLS


async def test_remote_is_reached_over_verified_tls(
    secure_front: Server, client: httpx.AsyncClient, tls_proxy: FaultProxy, kernel_id: str
) -> None:
    """With `verify` set to a CA bundle, an https remote with a certificate from that CA is
    used for REST and kernel sockets (wss)."""
    status = (await client.get("/api/status")).json()
    assert status["remote"]["url"].startswith("https://")
    assert status["remote"]["reachable"] is True
    conn = await open_kernel(secure_front, client, kernel_id)
    try:
        assert (await conn.execute("print('over tls')")).stdout == "over tls\n"
    finally:
        await conn.close()
    assert any(r.path.endswith("/channels") for r in tls_proxy.requests)


async def test_self_signed_remote_is_refused_without_a_ca_bundle(
    ca: trustme.CA, remote: Server, loop: BackgroundLoop,
    tmp_path_factory: pytest.TempPathFactory
) -> None:
    """TLS verification is on by default: a remote whose certificate no system CA signed is
    refused (503 with the reason), and not one request reaches it."""
    untrusted = tls_terminator(ca, remote, loop)
    front = front_server(tmp_path_factory.mktemp("front-no-ca"), untrusted.url, remote.token
                         ).start()
    try:
        async with logged_in(front) as http:
            response = await http.get("/api/kernels")
            assert response.status_code == 503, response.text
            assert "certificate verify failed" in response.json()["message"].lower()
            assert (await http.get("/api/status")).json()["remote"]["reachable"] is False
            with pytest.raises(websockets.InvalidStatus) as refused:
                await KernelConnection.open(ws_url(front, str(uuid.uuid4())),
                                            cookie=cookie_header(http))
            assert refused.value.response.status_code == 503
        assert untrusted.requests == []
    finally:
        front.stop()
        untrusted.close()


# ---------------------------------------------------------------- authentication


async def test_every_route_refuses_unauthenticated_requests(
    secure_front: Server, tls_proxy: FaultProxy, client: httpx.AsyncClient
) -> None:
    """Every kernels-API route (from the front's OpenAPI) answers 403 without the front's
    cookie, with a forged cookie, or with the front's token in an Authorization header; the
    kernel socket is refused the same ways; nothing reaches the remote meanwhile."""
    await client.get("/api/kernels")  # the front's first contact with the remote is done
    before = len(tls_proxy.requests)
    forged = "fastapiusersauth=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    credentials: list[dict[str, str]] = [
        {}, {"Cookie": forged}, {"Authorization": f"token {secure_front.token}"},
        {"Authorization": f"Bearer {secure_front.token}"},
    ]
    for method, template in kernel_routes(secure_front):
        path = fill(template, str(uuid.uuid4()))
        for headers in credentials:
            status, _, _ = await raw_request(
                secure_front.port, method, path,
                {**headers, "Content-Type": "application/json"}, b"{}")
            assert status == 403, (method, path, headers, status)
    for headers in credentials:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(
                f"{ws_url(secure_front, str(uuid.uuid4()))}?session_id=x",
                additional_headers=headers)
        assert refused.value.response.status_code == 403
    assert tls_proxy.requests[before:] == []


@pytest.fixture(scope="module")
def user_proxy(remote: Server, loop: BackgroundLoop) -> Iterator[FaultProxy]:
    proxy = FaultProxy(remote.port, loop=loop)
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def user_mode_front(user_proxy: FaultProxy, remote: Server,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A front in fps-auth `user` mode (`auth.test` creates admin@jupyter.com/jupyverse)."""
    server = front_server(tmp_path_factory.mktemp("user-mode-front"), user_proxy.url,
                          remote.token, extra=["--set", "auth.mode=user",
                                               "--set", "auth.test=true"]).start()
    yield server
    server.stop()


async def user(front: Server, admin: httpx.AsyncClient, name: str,
               permissions: dict[str, list[str]]) -> httpx.AsyncClient:
    """Register a user with `permissions` (as the admin) and log in as that user."""
    password = f"pw-{uuid.uuid4().hex}"
    registered = await admin.post("/auth/register", json={
        "email": f"{name}@example.com", "password": password, "username": name,
        "permissions": permissions})
    assert registered.status_code == 201, registered.text
    http = httpx.AsyncClient(base_url=front.url, timeout=120)
    logged = await http.post("/auth/login", data={"username": f"{name}@example.com",
                                                   "password": password})
    assert logged.status_code == 204, logged.text
    return http


async def test_user_mode_permissions_are_enforced_before_the_remote(
    user_mode_front: Server, user_proxy: FaultProxy, remote: Server
) -> None:
    """In fps-auth `user` mode a user with only read permissions can list kernels but is
    refused (403) every route that needs write, sessions or execute — kernel socket included —
    and none of those refused requests reaches the remote; a user with the permissions can."""
    async with httpx.AsyncClient(base_url=user_mode_front.url, timeout=60) as admin:
        logged = await admin.post("/auth/login", data={"username": "admin@jupyter.com",
                                                       "password": "jupyverse"})
        assert logged.status_code == 204, logged.text
        suffix = uuid.uuid4().hex[:8]
        reader = await user(user_mode_front, admin, f"reader{suffix}", {
            "kernels": ["read"], "kernelspecs": ["read"], "status": ["read"]})
        writer = await user(user_mode_front, admin, f"writer{suffix}", {
            "kernels": ["read", "write", "execute"], "kernelspecs": ["read"],
            "sessions": ["read", "write"], "status": ["read"]})
    try:
        created = await writer.post("/api/sessions", json={
            "path": f"perm-{suffix}.ipynb", "type": "notebook", "kernel": {"name": "python3"}})
        assert created.status_code == 201, created.text
        assert "set-cookie" not in created.headers
        session_id, kernel = created.json()["id"], created.json()["kernel"]["id"]
        conn = await KernelConnection.open(ws_url(user_mode_front, kernel),
                                           cookie=cookie_header(writer))
        try:
            assert (await conn.execute("print('allowed')")).stdout == "allowed\n"
        finally:
            await conn.close()

        for path in ("/api/kernels", f"/api/kernels/{kernel}", "/api/kernelspecs",
                     "/api/status"):
            response = await reader.get(path)
            assert response.status_code == 200, (path, response.text)
            assert "set-cookie" not in response.headers
        before = len(user_proxy.requests)
        refused = [
            ("POST", "/api/kernels", {"name": "python3"}),
            ("DELETE", f"/api/kernels/{kernel}", None),
            ("POST", f"/api/kernels/{kernel}/interrupt", None),
            ("POST", f"/api/kernels/{kernel}/restart", None),
            ("GET", "/api/sessions", None),
            ("GET", f"/api/sessions/{session_id}", None),
            ("POST", "/api/sessions", {"path": "x.ipynb", "type": "notebook"}),
            ("PATCH", f"/api/sessions/{session_id}", {"name": "stolen"}),
            ("DELETE", f"/api/sessions/{session_id}", None),
        ]
        for method, path, body in refused:
            response = await reader.request(method, path, json=body)
            assert response.status_code == 403, (method, path, response.status_code)
        with pytest.raises(websockets.InvalidStatus) as denied:
            await KernelConnection.open(ws_url(user_mode_front, kernel),
                                        cookie=cookie_header(reader))
        assert denied.value.response.status_code == 403
        assert user_proxy.requests[before:] == [], "a refused request reached the remote"
        assert (await writer.get(f"/api/kernels/{kernel}")).status_code == 200
        assert (await writer.delete(f"/api/sessions/{session_id}")).status_code == 204
    finally:
        await reader.aclose()
        await writer.aclose()
    assert outside_the_kernels_api(user_proxy.requests) == []


# ---------------------------------------------------------------- hostile ids, paths, bodies


HOSTILE_TARGETS = [
    ("GET", "/api/kernels/.."), ("GET", "/api/kernels/%2e%2e"), ("GET", "/api/kernels/%2E%2E"),
    ("GET", "/api/kernels/..%2F..%2Fapi%2Fstatus"), ("GET", "/api/kernels/%2e%2e%2fstatus"),
    ("GET", "/api/kernels/%252e%252e%252fstatus"), ("GET", "/api/kernels/not-a-uuid"),
    ("GET", "/api/kernels/" + "a" * 300), ("GET", "/api/kernels/" + "0" * 5000),
    ("GET", f"/api/kernels/{uuid.uuid4()}%00"), ("GET", f"/api/kernels/{uuid.uuid4()}x"),
    ("GET", f"/api/kernels/{uuid.uuid4()}%2F..%2F..%2Fapi%2Fstatus"),
    ("GET", f"/api/kernels/{str(uuid.uuid4())[:-1]}%2F"),
    ("DELETE", "/api/kernels/.."), ("DELETE", "/api/kernels/%2e%2e"),
    ("POST", "/api/kernels/%2e%2e/interrupt"), ("POST", "/api/kernels/..%2F..%2F/restart"),
    ("POST", "/api/kernels/not-a-uuid/restart"),
    ("GET", "/api/sessions/..%2Fkernels"), ("GET", "/api/sessions/%2e%2e"),
    ("DELETE", "/api/sessions/%2e%2e"), ("PATCH", "/api/sessions/not-a-uuid"),
    ("GET", "/api/kernelspecs/.."), ("GET", "/api/kernelspecs/%2e%2e"),
    ("GET", "/api/kernelspecs/..%2F..%2Fapi%2Fstatus"), ("GET", "/api/kernelspecs/.hidden"),
    ("GET", "/api/kernelspecs/python3%2F..%2F..%2Fapi%2Fstatus"),
    ("GET", "/api/kernelspecs/" + "p" * 300), ("GET", "/api/kernelspecs/python3%00"),
    ("GET", "/kernelspecs/python3/..%2Fkernel.json"), ("GET", "/kernelspecs/%2e%2e/logo-64x64.png"),
    ("GET", "/kernelspecs/python3/.hidden"), ("GET", "/kernelspecs/python3/%2e%2e"),
    ("GET", "/kernelspecs/python3/%2e%2e%2f%2e%2e%2fapi%2fstatus"),
    ("GET", "/kernelspecs/..%5C..%5Cwindows/logo.png"), ("GET", "/kernelspecs/python3/logo%00.png"),
    ("GET", "/kernelspecs/python3/..%252f..%252fapi%252fstatus"),
    ("GET", "/kernelspecs/" + "k" * 300 + "/logo-64x64.png"),
]


async def test_hostile_ids_and_paths_are_refused_and_never_reach_the_remote(
    secure_front: Server, client: httpx.AsyncClient, tls_proxy: FaultProxy
) -> None:
    """Traversal (`..`, `%2F`, `%2e%2e`, double-encoded), NUL bytes, overlong and non-UUID ids
    and hidden resource names answer 400/404/405, and the remote receives no request for any
    of them (checked at the TLS terminator)."""
    await client.get("/api/kernels")
    before = len(tls_proxy.requests)
    headers = {"Cookie": cookie_header(client), "Content-Type": "application/json"}
    for method, target in HOSTILE_TARGETS:
        status, answer_headers, body = await raw_request(secure_front.port, method, target,
                                                         headers, b"{}")
        if status in (307, 308):  # Starlette drops a trailing slash (an encoded one too)
            location = answer_headers["location"].split("127.0.0.1:", 1)[-1].split("/", 1)[1]
            status, _, body = await raw_request(secure_front.port, method, "/" + location,
                                                headers, b"{}")
        assert status in (400, 404, 405, 422), (method, target, status, body[:200])
    for target in ("..%2F..%2Fapi%2Fstatus", "%2e%2e", "not-a-uuid", "a" * 300):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(
                f"ws://127.0.0.1:{secure_front.port}/api/kernels/{target}/channels?session_id=x",
                additional_headers={"Cookie": cookie_header(client)})
        assert refused.value.response.status_code in (403, 404)
    assert [f"{r.method} {r.target}" for r in tls_proxy.requests[before:]] == []


async def test_malformed_bodies_and_wrong_content_types_get_4xx_with_a_message(
    secure_front: Server, client: httpx.AsyncClient, tls_proxy: FaultProxy
) -> None:
    """Malformed, empty, non-object, deeply nested, non-UTF-8 and huge JSON bodies, wrong field
    types and wrong content types (a cross-site form's text/plain included) answer 4xx with a
    JSON message on every mutating route, and none of them reaches the remote."""
    await client.get("/api/kernels")
    before = len(tls_proxy.requests)
    session = str(uuid.uuid4())
    targets = [("POST", "/api/sessions"), ("POST", "/api/kernels"),
               ("PATCH", f"/api/sessions/{session}")]
    json_type = "application/json"
    cases: list[tuple[bytes, str, dict[str, str], tuple[int, ...]]] = [
        (b"{not json", json_type, {}, (400,)),
        (b"", json_type, {}, (400,)),
        (b"   ", json_type, {}, (400,)),
        (b"null", json_type, {}, (400,)),
        (b"[1, 2]", json_type, {}, (400,)),
        (b'"a string"', json_type, {}, (400,)),
        (b"[" * 100_000 + b"]" * 100_000, json_type, {}, (400,)),
        (b'{"path": "\xff\xfe", "type": "notebook"}', json_type, {}, (400,)),
        (b'{"path": 3, "type": "notebook", "name": 4}', json_type, {}, (400,)),
        (b'{"path": "a", "type": "notebook", "kernel": "python3", "name": []}', json_type, {},
         (400,)),
        (b'{"path": "a", "type": "notebook", "kernel": {"name": "../../etc"}, "name": 1}',
         json_type, {}, (400, 404)),
        (b'{"kernel": {"env": {"1BAD": "x"}}, "name": {}, "path": 1}', json_type, {}, (400,)),
        (json.dumps({"path": "a", "pad": "x" * 2_000_000}).encode(), json_type, {}, (413,)),
        (b'{"path": "a.ipynb", "type": "notebook"}', "text/html", {}, (415,)),
        (b"path=a.ipynb&type=notebook", "application/x-www-form-urlencoded", {}, (415,)),
        (b"--x\r\n\r\n--x--", "multipart/form-data; boundary=x", {}, (415,)),
        (b'{"path": "a.ipynb", "type": "notebook"}', "", {}, (415,)),
        (b'{"path": "a.ipynb", "type": "notebook"}', "text/plain",
         {"Origin": FOREIGN_ORIGIN}, (403,)),
        (b'{"path": 1}', "text/plain", {"Origin": ALLOWED_ORIGIN}, (400,)),
    ]
    for method, target in targets:
        for body, content_type, extra, statuses in cases:
            headers = {"Cookie": cookie_header(client), **extra}
            if content_type:
                headers["Content-Type"] = content_type
            status, _, answer = await raw_request(secure_front.port, method, target, headers,
                                                  body)
            assert status in statuses, (method, target, body[:60], content_type, status, answer)
            assert json.loads(answer)["message"], answer
    assert [f"{r.method} {r.target}" for r in tls_proxy.requests[before:]] == []


# Property-based: random requests on every kernels-API route.

SEGMENTS = st.one_of(
    st.uuids().map(str),
    st.sampled_from(["..", ".", "%2e%2e", "%2E%2E%2F", "..%2F..%2Fapi%2Fstatus", "%252e%252e",
                     "%2F", "%00", "%", "%zz", "%5C..%5C", ".hidden", "python3", "kernel.json",
                     "logo-64x64.png", "a" * 300, ";", "~", "api", "*", "%20"]),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30).map(
        lambda s: quote(s, safe="/%.;~:@!$&'()*+,=-_")),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["path", "type", "name", "kernel", "id", "env", "KERNEL_X"])
        | st.text(max_size=6), children, max_size=5),
    max_leaves=12,
)
BODIES = st.one_of(JSON_VALUES.map(lambda v: json.dumps(v).encode()), st.binary(max_size=80))
CONTENT_TYPES = st.sampled_from(["application/json", "application/json; charset=utf-8",
                                 "text/plain", "text/html", "application/x-www-form-urlencoded",
                                 ""])
ORIGINS = st.sampled_from([None, FOREIGN_ORIGIN, ALLOWED_ORIGIN])


def would_start_a_kernel(method: str, template: str, body: bytes) -> bool:
    """Whether the request may validly start a kernel (slow, and covered elsewhere)."""
    if method != "POST" or template not in ("/api/kernels", "/api/sessions"):
        return False
    try:
        value = json.loads(body)
    except ValueError:
        return False
    if not isinstance(value, dict):
        return False
    if template == "/api/kernels":
        return value.get("name") in (None, "python3")
    return isinstance(value.get("path"), str) and isinstance(value.get("type"), str)


@pytest.fixture(scope="module")
def routes(secure_front: Server) -> list[tuple[str, str]]:
    return kernel_routes(secure_front)


@pytest.fixture(scope="module")
def front_cookie(secure_front: Server) -> str:
    response = httpx.get(f"{secure_front.url}api/status", params={"token": secure_front.token},
                         timeout=30)
    return f"fastapiusersauth={response.cookies['fastapiusersauth']}"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_requests_never_cause_a_server_error(
    secure_front: Server, routes: list[tuple[str, str]], front_cookie: str,
    tls_proxy: FaultProxy, data: st.DataObject
) -> None:
    """Hypothesis: any method/route with random path segments (traversal and escapes
    included), random bodies, content types and origins answers < 500 (or jupyter_server's
    501), and the remote never sees a request outside the kernels API."""
    method, template = data.draw(st.sampled_from(routes))
    target = template
    for name in ("{kernel_id}", "{session_id}", "{kernel_name}", "{file_name}"):
        if name in target:
            target = target.replace(name, data.draw(SEGMENTS))
    target += data.draw(st.sampled_from(["", "/", "/..", "?token=x", "%2F..", "/extra"]))
    body = data.draw(BODIES)
    assume(not would_start_a_kernel(method, template, body))
    headers = {"Cookie": front_cookie}
    content_type = data.draw(CONTENT_TYPES)
    if content_type:
        headers["Content-Type"] = content_type
    origin = data.draw(ORIGINS)
    if origin:
        headers["Origin"] = origin
    status, answer = raw_request_sync(secure_front.port, method, target, headers, body)
    assert status < 500 or status == 501, (method, target, body[:80], status, answer[:300])
    assert outside_the_kernels_api(tls_proxy.requests) == []


def mutated_frames() -> st.SearchStrategy[bytes]:
    """Good v1 frames, then one field of their framing changed (count, an offset, length)."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        msg = make_message(draw(st.sampled_from(["execute_request", "comm_msg"])),
                           {"code": draw(st.text(max_size=20))}, "s",
                           channel=draw(st.sampled_from(CHANNELS)),
                           buffers=draw(st.lists(st.binary(max_size=8), max_size=3)))
        frame = bytearray(serialize_v1(msg))
        (count,) = struct.unpack_from("<Q", frame)
        where = draw(st.integers(0, count))
        value = draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, len(frame) + 8)))
        struct.pack_into("<Q", frame, 8 * where, value)
        cut = draw(st.integers(0, len(frame)))
        return bytes(frame[:cut] if draw(st.booleans()) else frame)

    return build()


@settings(max_examples=1500, deadline=None)
@given(frame=st.one_of(st.binary(max_size=120), mutated_frames()))
@pytest.mark.fast
def test_every_v1_frame_the_front_lets_through_is_safe_for_the_remote(frame: bytes) -> None:
    """Hypothesis: the front's v1 check either refuses a frame (FrameError, nothing else) or
    lets through, untouched, a frame Jupyverse's own parser reads within its bounds — the
    count and offsets that make a plain Jupyverse loop and grow never pass."""
    try:
        checked = check_v1_frame(frame)
    except FrameError:
        return
    assert checked is frame  # good frames are neither copied nor parsed
    (count,) = struct.unpack_from("<Q", frame)
    assert 6 <= count <= 4096 and 8 * (1 + count) <= len(frame)
    channel, parts = deserialize_msg_from_ws_v1(frame)
    assert channel in CHANNELS
    assert sum(len(p) for p in parts) <= len(frame)


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(st.text(max_size=80), JSON_VALUES.map(json.dumps),
                      st.binary(max_size=80)))
@pytest.mark.fast
def test_legacy_frames_are_refused_or_translated_to_valid_v1(text: str | bytes) -> None:
    """Hypothesis: a legacy client's frame is either refused (FrameError) or becomes a v1
    frame that passes the v1 check; garbage never goes upstream as such."""
    try:
        check_legacy_frame(text)
        translated = legacy_to_v1(text)
    except FrameError:
        return
    assert check_v1_frame(translated) is translated


# ---------------------------------------------------------------- kernel frames


def v1_with(good: bytes, *, count: int | None = None, offset: tuple[int, int] | None = None
            ) -> bytes:
    frame = bytearray(good)
    if count is not None:
        struct.pack_into("<Q", frame, 0, count)
    if offset is not None:
        struct.pack_into("<Q", frame, 8 * (1 + offset[0]), offset[1])
    return bytes(frame)


def bad_frames(session: str) -> dict[str, tuple[str | None, str | bytes]]:
    good = serialize_v1(make_message("kernel_info_request", {}, session))
    (count,) = struct.unpack_from("<Q", good)
    evil = make_message("kernel_info_request", {}, session)
    evil["channel"] = "evil"
    return {
        "v1 offset count 2**40": (V1, v1_with(good, count=2**40)),
        "v1 offset count 2**64-1": (V1, v1_with(good, count=2**64 - 1)),
        "v1 offset count 2": (V1, v1_with(good, count=2)),
        "v1 offset past the end": (V1, v1_with(good, offset=(3, 10 * len(good)))),
        "v1 offsets decreasing": (V1, v1_with(good, offset=(2, 8 * (1 + count) + 1))),
        "v1 first offset inside the table": (V1, v1_with(good, offset=(0, 8))),
        "v1 shorter than its count": (V1, b"\x06\x00\x00"),
        "v1 unknown channel": (V1, serialize_v1(evil)),
        "v1 text frame": (V1, "not a v1 frame"),
        "legacy text not JSON": (None, "{not json"),
        "legacy JSON not a message": (None, "[1, 2, 3]"),
        "legacy message without channel": (None, json.dumps({"header": {}, "content": {}})),
        "legacy binary offsets past the end": (None, struct.pack("!3I", 2, 12, 999) + b"{}"),
        "legacy binary count 2**31": (None, struct.pack("!I", 2**31) + b"\x00" * 12),
    }


async def test_malformed_frames_close_the_client_with_1007_and_never_reach_the_remote(
    secure_front: Server, client: httpx.AsyncClient, tls_proxy: FaultProxy, kernel_id: str,
    remote: Server
) -> None:
    """Each malformed client frame (v1 count or offsets out of bounds, unknown channel, text on
    v1, legacy garbage) closes that client with 1007; the remote never receives it (checked at
    the TLS terminator), receives no text frame at all, and stays healthy and small."""
    assert remote.process is not None
    remote_rss = rss_mb(remote.process.pid)
    sent: list[bytes] = []
    for problem, (protocol, frame) in bad_frames(uuid.uuid4().hex).items():
        conn = await KernelConnection.open(ws_url(secure_front, kernel_id),
                                           cookie=cookie_header(client), protocol=protocol)
        await conn.ws.send(frame)
        sent.append(frame.encode() if isinstance(frame, str) else frame)
        with anyio.fail_after(10), pytest.raises(ConnectionClosed):
            while True:
                await conn.ws.recv()
        assert conn.ws.close_code == 1007, (problem, conn.ws.close_code)

    upstream = [m for m in tls_proxy.ws_messages if m.opcode in (1, 2)]
    assert not [m for m in upstream if m.opcode == 1], "a text frame reached the remote"
    assert not [m for m in upstream if m.payload in sent], "a malformed frame reached the remote"
    conn = await open_kernel(secure_front, client, kernel_id)
    try:
        assert (await conn.execute("print('still healthy')")).stdout == "still healthy\n"
    finally:
        await conn.close()
    assert rss_mb(remote.process.pid) < remote_rss + 100


# ---------------------------------------------------------------- cross-site, credentials


async def test_cross_origin_kernel_socket_is_refused_unless_allowed(
    secure_front: Server, client: httpx.AsyncClient, tls_proxy: FaultProxy, kernel_id: str
) -> None:
    """A kernel socket with a valid cookie but a foreign Origin (cross-site WebSocket hijacking)
    is refused with 403 before the remote is contacted; the front's own origin, an origin
    allowed with --allow-origin, and clients that send no Origin are accepted."""
    url = ws_url(secure_front, kernel_id)
    sockets_before = len([r for r in tls_proxy.requests if r.path.endswith("/channels")])
    for origin in (FOREIGN_ORIGIN, "http://127.0.0.1.evil.example", "null",
                   f"http://localhost:{secure_front.port + 1}"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await KernelConnection.open(url, cookie=cookie_header(client),
                                        additional_headers={"Origin": origin})
        assert refused.value.response.status_code == 403, origin
    assert len([r for r in tls_proxy.requests if r.path.endswith("/channels")]) == sockets_before
    for origin in (ALLOWED_ORIGIN, f"http://127.0.0.1:{secure_front.port}", None):
        headers = {"Origin": origin} if origin else {}
        conn = await KernelConnection.open(url, cookie=cookie_header(client),
                                           additional_headers=headers)
        try:
            assert (await conn.execute("print(1)")).stdout == "1\n"
        finally:
            await conn.close()


async def test_front_credentials_are_not_forwarded_and_remote_cookies_not_returned(
    secure_front: Server, client: httpx.AsyncClient, tls_proxy: FaultProxy, kernel_id: str,
    remote: Server
) -> None:
    """The browser's cookies, Authorization and XSRF headers stay in the front: the remote gets
    only the front's own credentials; no answer carries a Set-Cookie or the remote token."""
    front_cookie = client.cookies["fastapiusersauth"]
    secrets = [front_cookie, "user-secret-7c1f", "xsrf-secret-9a2b", secure_front.token]
    headers = {"Authorization": "token user-secret-7c1f", "X-XSRFToken": "xsrf-secret-9a2b",
               "Cookie": f"fastapiusersauth={front_cookie}; _xsrf=xsrf-secret-9a2b"}
    before = len(tls_proxy.requests)
    async with httpx.AsyncClient(base_url=secure_front.url, timeout=60) as browser:
        answers = [
            await browser.get("/api/kernels", headers=headers),
            await browser.get(f"/api/kernels/{kernel_id}", headers=headers),
            await browser.get("/api/sessions", headers=headers),
            await browser.get("/api/kernelspecs", headers=headers),
            await browser.get("/kernelspecs/python3/logo-64x64.png", headers=headers),
            await browser.post(f"/api/kernels/{kernel_id}/interrupt", headers=headers),
            await browser.get(f"/api/kernels/{uuid.uuid4()}", headers=headers),
            await browser.post("/api/sessions", headers=headers, json={"path": 1}),
        ]
    conn = await KernelConnection.open(ws_url(secure_front, kernel_id),
                                       additional_headers=headers)
    try:
        assert (await conn.execute("print(2)")).stdout == "2\n"
    finally:
        await conn.close()
    for answer in answers:
        assert answer.status_code < 500, answer.text
        assert "set-cookie" not in answer.headers
        assert remote.token not in answer.text
    forwarded = tls_proxy.requests[before:]
    assert forwarded, "nothing reached the remote"
    for request in forwarded:
        for key, value in request.headers:
            for secret in secrets:
                assert secret not in value, (request.target, key)
        cookie = request.header("cookie")
        if cookie is not None:
            assert [c.split("=")[0].strip() for c in cookie.split(";")] == ["fastapiusersauth"]
        assert request.header("x-xsrftoken") is None
        assert request.header("authorization") in (None, f"token {remote.token}")


async def test_remote_token_never_appears_in_answers_errors_or_logs(
    secure_front: Server, client: httpx.AsyncClient, tls_proxy: FaultProxy, kernel_id: str,
    remote: Server
) -> None:
    """Through successes and errors (unknown ids, bad bodies, refused sockets, a dropped
    connection, the remote unreachable), the remote token is in no answer, and in no line of
    the front's debug log, where the libraries' lines that carried it show it redacted."""
    answers = [
        await client.get("/api/kernels"), await client.get("/api/status"),
        await client.get(f"/api/kernels/{uuid.uuid4()}"),
        await client.post("/api/sessions", content=b"{", headers={"Content-Type":
                                                                  "application/json"}),
        await client.post("/api/kernels", json={"name": "no-such-kernel"}),
        await client.get("/api/kernelspecs/no-such-kernel"),
    ]
    conn = await open_kernel(secure_front, client, kernel_id)
    await conn.close()
    tls_proxy.stall()
    async with anyio.create_task_group() as tg:
        async def ask() -> None:
            answers.append(await client.get("/api/sessions"))

        held = tls_proxy.held_chunks
        tg.start_soon(ask)
        with anyio.fail_after(10):
            while tls_proxy.held_chunks == held:
                await anyio.sleep(0.02)
        tls_proxy.cut()
    tls_proxy.resume()
    tls_proxy.refuse()
    try:
        answers.append(await client.get("/api/kernels"))
        with pytest.raises(websockets.InvalidStatus) as refused:
            await KernelConnection.open(ws_url(secure_front, kernel_id),
                                        cookie=cookie_header(client))
        assert refused.value.response.status_code == 503
    finally:
        tls_proxy.accept()
    assert {a.status_code for a in answers} >= {200, 400, 404, 501, 503}
    for answer in answers:
        assert remote.token not in answer.text
        assert all(remote.token not in v for v in answer.headers.values())
    log = secure_front.log_path.read_text(errors="replace")
    assert "Authorization: token [token]" in log, "the debug log shows no upstream handshake"
    assert remote.token not in log
    # The remote's session cookie opens the remote as the token does, until it restarts.
    remote_cookies = {c.split("=", 1)[1].split(";")[0] for r in tls_proxy.requests
                      if (c := r.header("cookie"))}
    assert remote_cookies, "the front never sent its remote cookie"
    assert not [c for c in remote_cookies if c in log], "the remote's cookie is in the log"
