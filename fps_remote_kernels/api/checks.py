"""What the routes check in a request before any remote is contacted: ids, names, JSON
bodies, environment variables, and the origin of browser requests (REST and WebSocket alike).

Each check raises the RemoteKernelsError the client gets (errors.py), with jupyter_server's
status codes where it has one.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import Request
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from ..errors import RemoteKernelsError, bad_request, not_found

# Kernel and session ids are UUIDs on every Jupyter server; anything else is refused here,
# so it never reaches an unintended remote URL.
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# Kernelspec and resource names: what jupyter_client allows in a kernel name, no dot-files;
# `:` separates a remote's name from a kernelspec's (gpu:python3).
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:-]{0,254}$")
# The largest JSON body a kernels/sessions request needs.
_MAX_BODY_BYTES = 1024 * 1024
# Enterprise Gateway refuses values with these characters (shell metacharacters).
_FORBIDDEN_ENV_CHARACTERS = set("$`\n\r\0")
_MAX_ENV_VALUE = 4096


def checked_kernel_id(value: str) -> str:
    if not _UUID.match(value):
        raise not_found(f"Kernel {value[:64]!r}")
    return value.lower()


def checked_session_id(value: str) -> str:
    if not _UUID.match(value):
        raise not_found(f"Session {value[:64]!r}")
    return value.lower()


def is_name(value: str) -> bool:
    """Whether `value` may name a kernelspec or one of its resources."""
    return bool(_NAME.match(value))


def checked_path(value: str) -> str:
    """A session's path as the client sent it, refused (400) if it leaves the root: the
    kernel starts in its directory, and a Jupyverse remote does not confine it."""
    if ".." in value.replace("\\", "/").split("/"):
        raise bad_request(f"Path {value[:200]!r} leaves the root directory")
    return value


def checked_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise not_found(f"{what} {value[:64]!r}")
    return value


async def json_object(request: Request, allowed_origins: list[str]) -> dict[str, Any]:
    """The request's JSON object body, or a 4xx that says what is wrong with it."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    # JupyterLab (@jupyterlab/services) posts JSON strings with fetch(), which labels them
    # text/plain;charset=UTF-8; jupyter_server does not check the type. A cross-site form can
    # post text/plain too, but a browser sends Origin with it: it must be the front's own.
    if content_type not in ("application/json", "text/plain"):
        raise RemoteKernelsError(415, "Content-Type must be application/json",
                                 "Unsupported Media Type")
    if content_type == "text/plain" and not origin_allowed(request, allowed_origins):
        raise RemoteKernelsError(403, "Cross-origin request refused (Origin "
                                 f"{request.headers.get('origin')!r} is not allowed)", "Forbidden")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_BODY_BYTES:
            raise RemoteKernelsError(413, "Request body too large", "Payload Too Large")
    if not body.strip():
        raise bad_request("No JSON data provided")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise bad_request("Request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise bad_request("Request body must be a JSON object")
    return value


def optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise bad_request(f"Field {key!r} must be a string")
    return value


def required_str(body: dict[str, Any], key: str) -> str:
    value = optional_str(body, key)
    if not value:
        raise bad_request(f"Missing field in JSON data: {key}")
    return value


def kernel_request(body: dict[str, Any]) -> tuple[str | None, str | None, dict[str, str]]:
    """The (name, id, env) of the `kernel` field of a session request."""
    kernel = body.get("kernel")
    if kernel is None:
        return None, None, {}
    if not isinstance(kernel, dict):
        raise bad_request("Field 'kernel' must be an object")
    name = optional_str(kernel, "name")
    kernel_id = optional_str(kernel, "id")
    if name is not None:
        checked_name(name, "Kernel spec")
    if kernel_id is not None:
        kernel_id = checked_kernel_id(kernel_id)
    return name, kernel_id, check_env(kernel.get("env"))


def check_env(env: Any) -> dict[str, str]:
    """Validate kernel environment variables as Enterprise Gateway does, before any remote
    is contacted."""
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise bad_request("Field 'env' must be an object of variable names to strings")
    for name, value in env.items():
        if not name or not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise bad_request(f"Invalid environment variable name {name[:64]!r}")
        if not isinstance(value, str):
            raise bad_request(f"Environment variable {name} must be a string")
        if len(value) > _MAX_ENV_VALUE:
            raise bad_request(f"Environment variable {name} is longer than {_MAX_ENV_VALUE}")
        if _FORBIDDEN_ENV_CHARACTERS & set(value):
            raise bad_request(f"Environment variable {name} contains a forbidden character "
                              "($, backquote, newline, carriage return or NUL)")
    return dict(env)


def origin_allowed(connection: HTTPConnection, allowed_origins: list[str]) -> bool:
    """jupyter_server's check against cross-site requests (WebSocket hijacking, forms): a
    browser always sends Origin; it must match the Host, or be allowed explicitly.
    Non-browser clients send none."""
    origin = connection.headers.get("origin")
    if origin is None or "*" in allowed_origins or origin in allowed_origins:
        return True
    host = connection.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/").lower() == host.lower()


def refuse_origin(websocket: WebSocket) -> RemoteKernelsError:
    return RemoteKernelsError(403, "Cross-origin kernel WebSocket refused "
                              f"(Origin {websocket.headers.get('origin')!r} is not allowed)",
                              "Forbidden")
