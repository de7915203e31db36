from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jupyverse_api import Config
from pydantic import Field, ValidationError, field_validator

OPTION_PREFIX = "remote_kernels"


class RemoteKernelsConfig(Config):
    url: str | None = Field(
        default=None,
        description=(
            "Base URL of the remote Jupyter server that runs the kernels (required), "
            "e.g. http://gpu-box:8002 or https://host/base/path/."
        ),
    )
    token: str | None = Field(
        default=None,
        description=(
            "Token the front uses to authenticate to the remote. If unset, it is read from the "
            "environment variable named by token_env, so it need not appear on a command line."
        ),
        repr=False,
    )
    token_env: str = Field(
        default="REMOTE_KERNELS_TOKEN",
        description="Environment variable holding the remote token when `token` is not set.",
    )
    ws_url: str | None = Field(
        default=None,
        description=(
            "Base WebSocket URL of the remote (ws:// or wss://), if it differs from `url` "
            "with its scheme changed."
        ),
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra HTTP headers sent to the remote on every request and WebSocket handshake, "
            'as a JSON object, e.g. {"X-Forwarded-User": "alice"}.'
        ),
    )
    connect_timeout: float = Field(
        default=5.0, description="Seconds to wait for a TCP/TLS connection to the remote."
    )
    request_timeout: float = Field(
        default=30.0, description="Seconds to wait for the remote to answer a REST request."
    )
    kernel_start_timeout: float = Field(
        default=120.0,
        description=(
            "Seconds to wait for the remote to start a kernel (creating a session or a kernel, "
            "restarting or changing a kernel). Kernel starts are slow, especially on clusters."
        ),
    )
    verify: bool | str = Field(
        default=True,
        description=(
            "TLS verification of an https remote: true (system CAs), false (no verification), "
            "or the path to a CA bundle file."
        ),
    )
    client_cert: str | None = Field(
        default=None, description="Path to a client certificate (PEM) presented to the remote."
    )
    client_key: str | None = Field(
        default=None,
        description="Path to the client certificate's private key, if not inside client_cert.",
    )
    ping_interval: float = Field(
        default=20.0,
        description=(
            "Seconds between keepalive pings on each upstream kernel WebSocket; a remote that "
            "does not answer within ping_timeout is treated as gone."
        ),
    )
    ping_timeout: float = Field(
        default=20.0, description="Seconds to wait for a keepalive pong from the remote."
    )
    kernelspecs_cache_ttl: float = Field(
        default=2.0,
        description=(
            "Seconds the front reuses the remote's kernelspecs before asking again. Identical "
            "concurrent requests share one remote call. 0 disables the cache."
        ),
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _base_url(value, ("http", "https"), "url")

    @field_validator("ws_url")
    @classmethod
    def _check_ws_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _base_url(value, ("ws", "wss"), "ws_url")

    @field_validator("headers", mode="before")
    @classmethod
    def _parse_headers(cls, value: Any) -> Any:
        # `--set remote_kernels.headers=...` passes a string; a JSON config passes an object.
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as e:
                raise ValueError(f"must be a JSON object: {e}") from None
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object of header names to values")
        for name in value:
            if name.lower() in ("host", "cookie", "content-length", "connection", "upgrade"):
                raise ValueError(f"header {name!r} is managed by the front and cannot be set")
        return value

    @field_validator(
        "connect_timeout", "request_timeout", "kernel_start_timeout", "ping_interval",
        "ping_timeout",
    )
    @classmethod
    def _check_positive(cls, value: float) -> float:
        if not value > 0:
            raise ValueError("must be a positive number of seconds")
        return value

    @field_validator("kernelspecs_cache_ttl")
    @classmethod
    def _check_not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be zero or a positive number of seconds")
        return value

    @field_validator("verify", mode="before")
    @classmethod
    def _parse_verify(cls, value: Any) -> bool | str:
        if isinstance(value, bool):
            return value
        text = str(value).strip()
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        if not Path(text).is_file():
            raise ValueError(f"must be true, false or the path of a CA bundle file: {text!r}")
        return text

    @field_validator("client_cert", "client_key")
    @classmethod
    def _check_file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"no such file: {value!r}")
        return value

    def resolved_token(self) -> str | None:
        return self.token or os.environ.get(self.token_env) or None

    def resolved_ws_url(self) -> str:
        if self.ws_url is not None:
            return self.ws_url
        assert self.url is not None
        return "ws" + self.url[len("http") :]


def _base_url(value: str, schemes: tuple[str, ...], option: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in schemes or not parts.netloc:
        wanted = " or ".join(f"{s}://" for s in schemes)
        raise ValueError(f"must start with {wanted} and name a host, got {value!r}")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment (use token/headers instead)")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials (use token instead)")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return f"{parts.scheme}://{parts.netloc}{path}"


def load_config(kwargs: dict[str, Any]) -> RemoteKernelsConfig:
    """Validate the module's keyword arguments, naming the failing option in the error."""
    try:
        return RemoteKernelsConfig(**kwargs)
    except ValidationError as e:
        problems = []
        for error in e.errors():
            field = ".".join(str(p) for p in error["loc"]) or "?"
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{OPTION_PREFIX}.{field} {message}")
        raise ValueError("Invalid configuration: " + "; ".join(problems)) from None
