"""The request checks of api/checks.py, called directly: what each accepts, and the status and
message of what it refuses (the same checks through real fronts are in test_security.py)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from starlette.requests import HTTPConnection, Request

from fps_remote_kernels.api.checks import (
    check_env,
    checked_kernel_id,
    checked_name,
    checked_path,
    checked_session_id,
    is_name,
    json_object,
    kernel_request,
    optional_str,
    origin_allowed,
    required_str,
)
from fps_remote_kernels.errors import RemoteKernelsError

pytestmark = [pytest.mark.anyio, pytest.mark.fast]

KERNEL_ID = "8C3F1F5E-1C4E-4B8A-9D2E-0123456789AB"
HOST = "front:8000"


def refused(call: Any, *args: Any) -> RemoteKernelsError:
    with pytest.raises(RemoteKernelsError) as error:
        call(*args)
    return error.value


def request(body: bytes | list[bytes], content_type: str | None = "application/json",
            origin: str | None = None) -> Request:
    """A POST request whose body arrives in the given chunks."""
    headers = [(b"host", HOST.encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    chunks = [body] if isinstance(body, bytes) else list(body)

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/api/kernels", "headers": headers,
             "query_string": b""}
    return Request(scope, receive)


async def body_refusal(req: Request, allowed: list[str] | None = None) -> RemoteKernelsError:
    with anyio.fail_after(5), pytest.raises(RemoteKernelsError) as error:
        await json_object(req, allowed or [])
    return error.value


def connection(origin: str | None, host: str = HOST) -> HTTPConnection:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return HTTPConnection({"type": "http", "headers": headers})


# ---------------------------------------------------------------- ids and names


def test_a_kernel_id_is_a_uuid_answered_in_lower_case() -> None:
    """A UUID in any case is accepted and lower-cased (one kernel, one spelling)."""
    assert checked_kernel_id(KERNEL_ID) == KERNEL_ID.lower()


@pytest.mark.parametrize("value", ["", "k", "../api/status", KERNEL_ID + "0",
                                   KERNEL_ID.replace("-", ""), KERNEL_ID[:-1] + "g"])
def test_anything_but_a_uuid_is_an_unknown_kernel(value: str) -> None:
    """A kernel id that is not a UUID is 404 Not Found, never sent to a remote."""
    error = refused(checked_kernel_id, value)
    assert (error.status, error.reason) == (404, "Not Found")
    assert error.message.startswith("Kernel ")


def test_a_long_bad_id_is_quoted_cut_short() -> None:
    """The 404 message quotes at most 64 characters of what was sent."""
    error = refused(checked_session_id, "x" * 1000)
    assert error.status == 404
    assert error.message == f"Session {'x' * 64!r} not found"


@pytest.mark.parametrize("name", ["python3", "gpu:python3", "ir", "_x", "conda-env.py_3.11"])
def test_kernelspec_names_as_jupyter_client_allows(name: str) -> None:
    """Letters, digits and `._:-` (not first) name a kernelspec; `remote:name` too."""
    assert is_name(name)
    assert checked_name(name, "Kernel spec") == name


@pytest.mark.parametrize("name", ["", ".hidden", "-x", "a/b", "a b", "..", "x" * 256])
def test_other_names_are_unknown_kernelspecs(name: str) -> None:
    """A dot-file, a path, a space or a name over 255 characters is 404 for that resource."""
    assert not is_name(name)
    error = refused(checked_name, name, "Kernel spec resource")
    assert error.status == 404 and error.message.startswith("Kernel spec resource ")


# ---------------------------------------------------------------- bodies


async def test_a_json_object_body_is_returned() -> None:
    """An application/json object body is parsed, whatever its charset parameter."""
    req = request(b'{"name": "python3"}', "application/json; charset=utf-8")
    with anyio.fail_after(5):
        assert await json_object(req, []) == {"name": "python3"}


async def test_jupyterlabs_text_plain_body_is_accepted_from_the_fronts_own_origin() -> None:
    """text/plain (what JupyterLab's fetch sends) is accepted when Origin is the front's."""
    req = request(b'{"name": "python3"}', "text/plain;charset=UTF-8", origin=f"http://{HOST}")
    with anyio.fail_after(5):
        assert await json_object(req, []) == {"name": "python3"}


async def test_a_cross_site_text_plain_body_is_forbidden() -> None:
    """text/plain from another origin (a cross-site form) is 403, naming the origin."""
    error = await body_refusal(request(b"{}", "text/plain", origin="http://evil.example"))
    assert error.status == 403
    assert "'http://evil.example' is not allowed" in error.message


async def test_a_cross_site_text_plain_body_from_an_allowed_origin_passes() -> None:
    """An origin in allow_origin may post text/plain."""
    req = request(b"{}", "text/plain", origin="http://lab.example")
    with anyio.fail_after(5):
        assert await json_object(req, ["http://lab.example"]) == {}


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded",
                                          "multipart/form-data"])
async def test_other_content_types_are_415(content_type: str | None) -> None:
    """A body that is not labelled JSON (or JupyterLab's text/plain) is 415."""
    error = await body_refusal(request(b"{}", content_type))
    assert (error.status, error.message) == (415, "Content-Type must be application/json")


async def test_a_body_over_one_mebibyte_is_413() -> None:
    """A body that grows past 1 MiB is refused as it arrives, with 413."""
    chunks = [b'{"a": "' + b"x" * 600_000, b"x" * 600_000 + b'"}']
    error = await body_refusal(request(chunks))
    assert (error.status, error.reason) == (413, "Payload Too Large")


@pytest.mark.parametrize(("body", "message"), [
    (b"", "No JSON data provided"),
    (b"  \n", "No JSON data provided"),
    (b"{not json", "Request body is not valid JSON"),
    (b"[" * 100_000, "Request body is not valid JSON"),
    (b'["python3"]', "Request body must be a JSON object"),
    (b"42", "Request body must be a JSON object"),
])
async def test_bodies_that_are_not_one_json_object_are_400(body: bytes, message: str) -> None:
    """Empty, unparseable (deep nesting too) or non-object bodies are 400 with a message."""
    error = await body_refusal(request(body))
    assert (error.status, error.message) == (400, message)


def test_string_fields() -> None:
    """optional_str: absent or null is None, a non-string is 400; required_str: empty is 400."""
    assert optional_str({}, "path") is None
    assert optional_str({"path": None}, "path") is None
    assert optional_str({"path": "a.ipynb"}, "path") == "a.ipynb"
    assert refused(optional_str, {"path": 1}, "path").message == "Field 'path' must be a string"
    assert required_str({"cell_id": "c"}, "cell_id") == "c"
    assert refused(required_str, {"cell_id": ""}, "cell_id").message == \
        "Missing field in JSON data: cell_id"


# ---------------------------------------------------------------- sessions' kernel field


def test_a_session_without_a_kernel_field_asks_for_none() -> None:
    """No `kernel` (or null): no name, no id, no environment."""
    assert kernel_request({}) == (None, None, {})
    assert kernel_request({"kernel": None}) == (None, None, {})


def test_a_session_kernel_field_gives_name_lowered_id_and_env() -> None:
    """`kernel` gives its name, its id lower-cased and its checked env."""
    assert kernel_request({"kernel": {"name": "gpu:python3", "id": KERNEL_ID,
                                      "env": {"KERNEL_NS": "team"}}}) == (
        "gpu:python3", KERNEL_ID.lower(), {"KERNEL_NS": "team"})


@pytest.mark.parametrize(("kernel", "status"), [
    ("python3", 400), ({"name": 3}, 400), ({"name": "../x"}, 404), ({"id": "nope"}, 404),
    ({"env": ["A"]}, 400),
])
def test_a_bad_session_kernel_field_is_refused(kernel: Any, status: int) -> None:
    """A `kernel` that is not an object, or has a bad name, id or env, is refused."""
    assert refused(kernel_request, {"kernel": kernel}).status == status


# ---------------------------------------------------------------- environment


def test_kernel_env_of_plain_strings_is_accepted() -> None:
    """Variables with proper names and plain string values pass; none is an empty env."""
    assert check_env(None) == {}
    assert check_env({"KERNEL_NS": "a", "_X9": "b c/d=e"}) == {"KERNEL_NS": "a", "_X9": "b c/d=e"}


@pytest.mark.parametrize(("env", "words"), [
    ({"": "x"}, "Invalid environment variable name"),
    ({"9LIVES": "x"}, "Invalid environment variable name"),
    ({"A-B": "x"}, "Invalid environment variable name"),
    ({"A": 1}, "Environment variable A must be a string"),
    ({"A": "x" * 4097}, "Environment variable A is longer than 4096"),
    ({"A": "$(id)"}, "forbidden character"),
    ({"A": "`id`"}, "forbidden character"),
    ({"A": "a\nb"}, "forbidden character"),
    ({"A": "a\0b"}, "forbidden character"),
])
def test_kernel_env_is_checked_as_enterprise_gateway_does(env: dict, words: str) -> None:
    """Bad names, non-strings, long values and shell metacharacters are 400, as EG refuses."""
    error = refused(check_env, env)
    assert error.status == 400 and words in error.message


def test_kernel_env_must_be_an_object() -> None:
    """A list where an object of variables is expected is 400."""
    assert refused(check_env, ["A=1"]).status == 400


# ---------------------------------------------------------------- origins


@pytest.mark.parametrize(("origin", "allowed", "ok"), [
    (None, [], True),  # not a browser
    (f"http://{HOST}", [], True),
    (f"https://{HOST.upper()}/", [], True),  # scheme, case and a trailing slash do not matter
    ("http://evil.example", [], False),
    ("http://front:9999", [], False),  # another port is another origin
    ("http://evil.example", ["http://evil.example"], True),
    ("http://evil.example", ["*"], True),
    ("null", [], False),
])
def test_origin_must_match_the_host_or_be_allowed(origin: str | None, allowed: list[str],
                                                  ok: bool) -> None:
    """jupyter_server's check: no Origin, the Host's own origin, or an allowed one."""
    assert origin_allowed(connection(origin), allowed) is ok


@pytest.mark.parametrize("path", ["../nb.ipynb", "a/../../nb.ipynb", "..", "a\\..\\..\\nb.ipynb"])
def test_a_session_path_that_leaves_the_root_is_refused(path: str) -> None:
    """A session path with a `..` segment (either separator) is a 400 that quotes it."""
    with pytest.raises(RemoteKernelsError) as refused:
        checked_path(path)
    assert refused.value.status == 400 and "leaves the root directory" in refused.value.message


@pytest.mark.parametrize("path", ["nb.ipynb", "a/b/nb.ipynb", "a..b.ipynb", "./nb.ipynb"])
def test_a_session_path_inside_the_root_is_kept_as_sent(path: str) -> None:
    """Paths that stay inside the root (dots inside a name included) pass unchanged."""
    assert checked_path(path) == path
