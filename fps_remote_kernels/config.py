from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from jupyverse_api import Config
from pydantic import Field, ValidationError, field_validator, model_validator

from .remote.kinds import KindName

OPTION_PREFIX = "remote_kernels"
_REMOTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _RemoteConnection(Config):
    """Where a remote kernel server is and how to reach it."""

    url: str | None = Field(
        default=None,
        description=(
            "Base URL of the remote Jupyter server that runs the kernels (required), "
            "e.g. http://gpu-box:8002 or https://host/base/path/."
        ),
    )
    kind: KindName = Field(
        default="auto",
        description=(
            "What the remote is: jupyverse, jupyter_server, kernel_gateway, "
            "enterprise_gateway, or auto (detected from its answers, and logged)."
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
        default={},  # pydantic copies it per instance; jupyverse --help-all shows it
        description=(
            "Extra HTTP headers sent to the remote on every request and WebSocket handshake, "
            'as a JSON object, e.g. {"X-Forwarded-User": "alice"}.'
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
    # -- credentials as deployments hand them out (GatewayClient's names;
    # docs/operators/credentials.md) --
    auth_scheme: str = Field(
        default="token",
        description=(
            "Scheme before the token in the auth header: `token` (jupyter_server, the "
            "gateways), `Bearer` (OAuth-style gateways), or empty for the bare token "
            "(GatewayClient.auth_scheme)."
        ),
    )
    auth_header: str = Field(
        default="Authorization",
        description=(
            "Name of the header carrying the token, e.g. X-Auth-Token "
            "(GatewayClient.auth_header_key)."
        ),
    )
    token_file: str | None = Field(
        default=None,
        description=(
            "File whose content is the token (e.g. a Kubernetes projected service-account "
            "token), re-read when it changes; a refused request re-reads it and is retried "
            "once. Takes precedence over token/token_env."
        ),
    )
    http_user: str | None = Field(
        default=None,
        description="User name for HTTP basic auth, e.g. behind Apache Knox "
        "(GatewayClient.http_user).",
    )
    http_pwd: str | None = Field(
        default=None,
        description="Password for HTTP basic auth; if unset, read from the variable named by "
        "http_pwd_env (GatewayClient.http_pwd).",
        repr=False,
    )
    http_pwd_env: str = Field(
        default="REMOTE_KERNELS_HTTP_PWD",
        description="Environment variable holding the basic-auth password when http_pwd is "
        "not set.",
    )
    # -- end of credentials --
    # ---- pools
    pool: str | None = Field(
        default=None,
        description=(
            "Name of the pool this remote belongs to. The members of a pool offer their "
            "kernelspecs once, under plain names (display names say the pool); a new kernel "
            "goes to the reachable member with the fewest kernels (ties: round robin)."
        ),
    )

    @field_validator("pool")
    @classmethod
    def _check_pool(cls, value: str | None) -> str | None:
        if value is not None and not _REMOTE_NAME.match(value):
            raise ValueError("must be 1-32 letters, digits, '-' or '_'")
        return value
    # ---- end of pools

    # -- working directories (see remote/working_dirs.py) --
    kernel_working_dir_root: str | None = Field(
        default=None,
        description=(
            "Where the front's root directory is on the kernel host, as an absolute path (a "
            "shared filesystem). With it, a kernel started for a notebook in a/b/ gets "
            "KERNEL_WORKING_DIR=<this>/a/b (Enterprise Gateway starts container and remote "
            "kernels there; GatewayClient sends the front's own path instead). Without it, no "
            "KERNEL_WORKING_DIR is sent; the notebook's directory is always sent as `path`."
        ),
    )
    kernelspecs: list[str] = Field(
        default=["*"],
        description=(
            "Which of the remote's kernelspecs the front offers: names or shell-style "
            'patterns, as a JSON list, e.g. ["python3", "gpu-*"].'
        ),
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _base_url(value, ("http", "https"))


    @field_validator("ws_url")
    @classmethod
    def _check_ws_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _base_url(value, ("ws", "wss"))

    @field_validator("headers", mode="before")
    @classmethod
    def _parse_headers(cls, value: Any) -> Any:
        # `--set remote_kernels.headers=...` passes a string; a JSON config passes an object.
        value = _json(value, dict, "a JSON object of header names to values")
        for name in value:
            if name.lower() in ("host", "cookie", "content-length", "connection", "upgrade"):
                raise ValueError(f"header {name!r} is managed by the front and cannot be set")
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

    @field_validator("kernelspecs", mode="before")
    @classmethod
    def _parse_patterns(cls, value: Any) -> Any:
        return _json(value, list, "a JSON list of kernelspec names or patterns")

    def resolved_token(self) -> str | None:
        return self.token or os.environ.get(self.token_env) or None

    def resolved_http_pwd(self) -> str | None:
        return self.http_pwd or os.environ.get(self.http_pwd_env) or None

    @field_validator("auth_header")
    @classmethod
    def _check_auth_header(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", value):
            raise ValueError(f"must be an HTTP header name, got {value!r}")
        if value.lower() in ("host", "cookie", "content-length", "connection", "upgrade"):
            raise ValueError(f"header {value!r} is managed by the front and cannot be set")
        return value

    @field_validator("auth_scheme")
    @classmethod
    def _check_auth_scheme(cls, value: str) -> str:
        value = value.strip()
        if value and not re.match(r"^[A-Za-z0-9._~+/-]+$", value):
            raise ValueError(f"must be a single word such as token or Bearer, got {value!r}")
        return value

    @field_validator("kernel_working_dir_root")
    @classmethod
    def _check_working_dir_root(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not (value.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", value)):
            raise ValueError(f"must be an absolute path on the kernel host, got {value!r}")
        return value

    @field_validator("token_file")
    @classmethod
    def _check_token_file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"no such file: {value!r}")
        return value

    def resolved_ws_url(self) -> str:
        if self.ws_url is not None:
            return self.ws_url
        assert self.url is not None
        return "ws" + self.url[len("http") :]


_NAME_DESCRIPTION = (
    "Short name of the remote, shown in kernel display names and used to prefix clashing "
    "kernelspec names (e.g. gpu:python3) when there are several remotes."
)


def _check_remote_name(value: str) -> str:
    if not _REMOTE_NAME.match(value):
        raise ValueError("must be 1-32 letters, digits, '-' or '_'")
    return value


class RemoteConfig(_RemoteConnection):
    """One entry of `remotes`."""

    name: str = Field(description=_NAME_DESCRIPTION)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _check_remote_name(value)


class RemoteKernelsConfig(_RemoteConnection):
    """The plugin's options: one remote given inline (url, token, ...) and/or `remotes`."""

    # Not `name`: fps passes the module's own name as `name`.
    remote_name: str = Field(default="remote", description=_NAME_DESCRIPTION)
    remotes: list[RemoteConfig] = Field(
        default=[],
        description=(
            "Several remotes, as a JSON list of objects with the keys of a single remote "
            "(name, url, kind, token, token_env, token_file, auth_scheme, auth_header, "
            "http_user, http_pwd, http_pwd_env, ws_url, headers, verify, client_cert, "
            "client_key, kernelspecs, kernel_working_dir_root, pool), "
            'e.g. [{"name": "gpu", "url": "http://gpu:8002"}]. '
            "A kernel or session goes to the remote that serves its kernelspec. The inline "
            "url, if given, is one more remote, listed first."
        ),
    )
    connect_timeout: float = Field(gt=0, 
        default=5.0, description="Seconds to wait for a TCP/TLS connection to the remote."
    )
    request_timeout: float = Field(gt=0, 
        default=30.0, description="Seconds to wait for the remote to answer a REST request."
    )
    kernel_start_timeout: float = Field(gt=0, 
        default=120.0,
        description=(
            "Seconds to wait for the remote to start a kernel (creating a session or a kernel, "
            "restarting or changing a kernel). Kernel starts are slow, especially on clusters; "
            "Enterprise Gateway is told this as KERNEL_LAUNCH_TIMEOUT."
        ),
    )
    ping_interval: float = Field(gt=0, 
        default=20.0,
        description=(
            "Seconds between keepalive pings on each upstream kernel WebSocket; a remote that "
            "does not answer within ping_timeout is treated as gone."
        ),
    )
    ping_timeout: float = Field(gt=0, 
        default=20.0, description="Seconds to wait for a keepalive pong from the remote."
    )
    env_proxy: bool = Field(
        default=True,
        description=(
            "Reach the remotes through the proxy the environment names (HTTP_PROXY, "
            "HTTPS_PROXY, ALL_PROXY, minus the hosts of NO_PROXY; lower-case forms too), for "
            "REST calls and kernel WebSockets alike (an HTTP CONNECT tunnel). False: connect "
            "directly."
        ),
    )
    kernelspecs_cache_ttl: float = Field(ge=0, 
        default=2.0,
        description=(
            "Seconds the front reuses the remote's kernelspecs before asking again. Identical "
            "concurrent requests share one remote call. 0 disables the cache."
        ),
    )
    env_allowlist: list[str] = Field(
        default=[],
        description=(
            "Names of the front's environment variables sent to the remote on kernel start "
            "(besides KERNEL_USERNAME and the variables given in the request), as a JSON list, "
            'e.g. ["KERNEL_NAMESPACE"]. The rest of the environment is never sent.'
        ),
    )
    kernel_username: str | None = Field(
        default=None,
        description=(
            "KERNEL_USERNAME sent on kernel start when the front's auth mode has no named users "
            "(token, noauth). Default: the operating-system user running the front. In `user` "
            "mode the authenticated user's name is sent."
        ),
    )
    sessions_db: str | None = Field(
        default=None,
        description=(
            "SQLite file where the front keeps the sessions and kernels it manages itself "
            "(for Kernel Gateway / Enterprise Gateway remotes, and to route kernels among "
            "several remotes), so they survive a restart of the front. Default: "
            "<Jupyter data dir>/fps_remote_kernels/sessions.sqlite."
        ),
    )
    replay_grace_period: float = Field(ge=0, 
        default=120.0,
        description=(
            "Seconds a kernel WebSocket whose client went away without a close frame (Wi-Fi "
            "drop, sleep) stays open upstream, buffering what the kernel sends for that "
            "session; a client that comes back with the same session_id in time gets it "
            "replayed, in order, before the live stream (as jupyter_server does for its own "
            "kernels). JupyterLab's first six reconnect attempts span at most 63 s. 0 disables."
        ),
    )
    replay_buffer_bytes: int = Field(ge=1, 
        default=64 * 1024 * 1024,
        description="Most bytes buffered for one away session; over it the buffer is dropped.",
    )
    replay_buffer_messages: int = Field(ge=1, 
        default=100_000,
        description="Most messages buffered for one away session; over it the buffer is dropped.",
    )
    replay_total_bytes: int = Field(ge=1, 
        default=1024 * 1024 * 1024,
        description=(
            "Most bytes buffered for all away sessions together; a session whose message would "
            "go over it has its buffer dropped."
        ),
    )
    shutdown_kernels_on_stop: bool = Field(
        default=False,
        description=(
            "Shut down, when the front stops, the remote kernels it started. By default they "
            "keep running: they belong to the remote, and the front finds them again."
        ),
    )

    # ---- the front's own process (host/)
    event_loop: Literal["asyncio", "uvloop"] = Field(
        default="asyncio",
        description=(
            "Event loop of the whole front process: asyncio, or uvloop (faster; needs the "
            "uvloop package, and changes one anyio function so that anycorn works with it: "
            "see docs/operators/front-process.md). Applies to the whole Jupyverse server, not "
            "only this plugin."
        ),
    )

    server: Literal["anycorn", "uvicorn"] = Field(
        default="anycorn",
        description=(
            "The HTTP server of the whole front: anycorn (Jupyverse's own), or uvicorn "
            "(faster per request and per kernel message; needs `pip install "
            "'fps-remote-kernels[uvicorn]'` and `--set start_server=false`, so that Jupyverse "
            "does not start its own; serves on Jupyverse's host and port). See "
            "docs/operators/front-process.md."
        ),
    )

    tune_server: bool = Field(
        default=True,
        description=(
            "Apply the front's version-checked speed-ups to its server (fewer copies of each "
            "kernel message in wsproto, no event-loop turn for an uncontended send lock in "
            "anycorn; see docs/operators/front-process.md). Each applies only to the library "
            "code it was written for. Set false to run the libraries unchanged."
        ),
    )



    # ---- metrics (metrics.py)
    authenticate_prometheus: bool = Field(
        default=True,
        description=(
            "Whether GET /metrics (Prometheus text format) needs the front's login, like every "
            "other route (jupyter_server's ServerApp.authenticate_prometheus). Set false only "
            "when the front's port is reachable by trusted scrapers alone."
        ),
    )

    # ---- auth cache
    auth_cache_ttl: float = Field(ge=0, le=60, 
        default=5.0,
        description=(
            "Seconds the front reuses a successful check of its own authentication for the same "
            "credentials (cookie, token, Authorization header) and the same required "
            "permissions. Refusals and requests without credentials are never reused; a "
            "changed user (permissions, deactivation) takes effect after this long at most. "
            "0 disables the cache."
        ),
    )

    # ---- end of auth cache

    # ---- server-side execution
    execution_queue_limit: int = Field(ge=1, le=100_000, 
        default=100,
        description=(
            "Cells queued or running at once per kernel for server-side execution "
            "(POST /api/kernels/{id}/execute, with the collaboration plugins); one more is "
            "answered 429."
        ),
    )
    execution_output_limit: int = Field(ge=0, le=10**12,
        default=100_000_000,
        description=(
            "Bytes of output one cell may hold, in the notebook and in the front's memory, "
            "under server-side execution (characters of stream text, JSON of rich outputs). "
            "Beyond it the cell gets a stderr output saying so and later output is dropped, "
            "as jupyter_server warns when its iopub_data_rate_limit drops output. 0: no limit."
        ),
    )

    # ---- end of server-side execution

    # ---- local kernels
    local_kernels: bool = Field(
        default=False,
        description=(
            "Also run kernels on the front's own machine: the front starts and supervises a "
            "kernels-only Jupyverse on a loopback port, with a generated token and its own "
            "auth directory, restarts it if it dies and stops it (and its kernels) with the "
            "front. It is listed as one more remote, named by local_name, e.g. "
            "'Python 3 (local)' next to 'Python 3 (gpu)'. Its kernels start in the front's "
            "working directory. With it, url and remotes are optional. A local kernel runs "
            "as the front's OS user: its code can read what the front can (its environment "
            "and command line in /proc, token_file), the remotes' tokens included; see "
            "docs/users/local-kernels.md."
        ),
    )
    local_name: str = Field(
        default="local",
        description="Name of the local kernels' remote (display names, name:spec prefixes).",
    )
    local_port: int = Field(ge=0, le=65535, 
        default=0,
        description="Loopback port of the local kernel server; 0 picks a free port.",
    )
    local_start_timeout: float = Field(gt=0, 
        default=60.0,
        description=(
            "Seconds the local kernel server has to answer after it is started; one that does "
            "not (Jupyverse hangs instead of exiting when, e.g., its port is taken) is killed "
            "and started again."
        ),
    )

    @field_validator("local_name")
    @classmethod
    def _check_local_name(cls, value: str) -> str:
        return _check_remote_name(value)



    @model_validator(mode="after")
    def _check_local_name_unique(self) -> RemoteKernelsConfig:
        taken = {r.name for r in self.all_remotes()} | {r.pool for r in self.all_remotes()}
        if self.local_kernels and self.local_name in taken:
            raise ValueError(f"local_name {self.local_name!r} is already the name of a remote "
                             "or pool: each remote needs its own name")
        return self
    # ---- end of local kernels

    # ---- idle culling: jupyter_server's MappingKernelManager options
    cull_idle_timeout: float = Field(ge=0, 
        default=0,
        description=(
            "Seconds of inactivity after which the front shuts down a kernel it started, on "
            "any kind of remote (jupyter_server's cull_idle_timeout). 0 disables culling."
        ),
    )
    cull_interval: float = Field(gt=0, 
        default=300,
        description="Seconds between checks for idle kernels (jupyter_server's cull_interval).",
    )
    cull_connected: bool = Field(
        default=False,
        description=(
            "Cull idle kernels that still have open connections (jupyter_server's "
            "cull_connected)."
        ),
    )
    cull_busy: bool = Field(
        default=False,
        description=(
            "Cull kernels that are busy but have shown no activity for cull_idle_timeout "
            "(jupyter_server's cull_busy)."
        ),
    )


    # ---- end of idle culling




    @field_validator("remote_name")
    @classmethod
    def _check_remote_name(cls, value: str) -> str:
        return _check_remote_name(value)

    @field_validator("remotes", mode="before")
    @classmethod
    def _parse_remotes(cls, value: Any) -> Any:
        return _json(value, list, "a JSON list of remote objects")

    @field_validator("env_allowlist", mode="before")
    @classmethod
    def _parse_allowlist(cls, value: Any) -> Any:
        names = _json(value, list, "a JSON list of environment variable names")
        for name in names:
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return names

    @model_validator(mode="after")
    def _check_remotes(self) -> RemoteKernelsConfig:
        names = [remote.name for remote in self.all_remotes()]
        for remote in self.remotes:
            if remote.url is None:
                raise ValueError(f"remotes: remote {remote.name!r} has no url")
        if len(set(names)) != len(names):
            raise ValueError("remotes: each remote needs its own name")
        # `gpu:python3` names a remote's or a pool's kernelspec: the two must not clash.
        for pool in {remote.pool for remote in self.all_remotes()} & set(names):
            raise ValueError(f"remotes: pool {pool!r} has the name of a remote")
        return self

    def all_remotes(self) -> list[RemoteConfig]:
        """Every configured remote; the inline `url` (if any) comes first."""
        inline = []
        if self.url is not None:
            fields = set(_RemoteConnection.model_fields)
            inline = [RemoteConfig(name=self.remote_name,
                                   **{k: v for k, v in self.__dict__.items() if k in fields})]
        return [*inline, *self.remotes]


def _json(value: Any, expected: type, what: str) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else expected()
        except json.JSONDecodeError as e:
            raise ValueError(f"must be {what}: {e}") from None
    if not isinstance(value, expected):
        raise ValueError(f"must be {what}")
    return value


def _redacted(value: str) -> str:
    """A URL as an error may repeat it: without credentials, query or fragment."""
    value = value.strip().split("?", 1)[0].split("#", 1)[0]
    scheme, found, rest = value.partition("://")
    if not found:
        scheme, rest = "", value
    rest = rest.rsplit("@", 1)[-1]
    return f"{scheme}://{rest}" if scheme else rest


def _base_url(value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in schemes or not parts.netloc:
        wanted = " or ".join(f"{s}://" for s in schemes)
        raise ValueError(f"must start with {wanted} and name a host, got {_redacted(value)!r}")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment (use token/headers instead)")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials (use token instead)")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return f"{parts.scheme}://{parts.netloc}{path}"


class ConfigError(ValueError):
    """A configuration the front cannot start with; the message names each option."""


def load_config(kwargs: dict[str, Any]) -> RemoteKernelsConfig:
    """Validate the module's keyword arguments, naming the failing option in the error, with
    the value given and, for an unknown option, the known one it most resembles."""
    try:
        return RemoteKernelsConfig(**kwargs)
    except ValidationError as e:
        problems = [_problem(error) for error in e.errors()]
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def _problem(error: Any) -> str:
    field = ".".join(str(p) for p in error["loc"])
    # pydantic's own checks (Literal, bounds) say "Input should be ...": as ours, "must be".
    message = str(error["msg"]).removeprefix("Value error, ").replace("Input should be ",
                                                                       "must be ")
    if not field:  # whole-model checks name their option at the start of the message
        return f"{OPTION_PREFIX}.{message}"
    option = f"{OPTION_PREFIX}.{field}"
    if error["type"] == "extra_forbidden":
        known = [*RemoteKernelsConfig.model_fields, *RemoteConfig.model_fields]
        close = difflib.get_close_matches(field.rsplit(".", 1)[-1], known, n=1)
        hint = f"; did you mean {OPTION_PREFIX}.{close[0]}?" if close else ""
        return f"{option} is not an option{hint} (jupyverse --help-all lists them)"
    given = error.get("input")
    # A refused value is repeated to help, except what may carry a secret (a URL's
    # credentials or query, a token, a password, a header value).
    if isinstance(given, int | float) or (
            isinstance(given, str) and not _may_hold_a_secret(field, given)):
        shown = repr(given[:80]) if isinstance(given, str) else str(given)
        if shown not in message:
            message += f" (got {shown})"
    return f"{option} {message}"


def _may_hold_a_secret(field: str, value: str) -> bool:
    name = field.rsplit(".", 1)[-1]
    return ("://" in value or "@" in value or "?" in value
            or any(word in name for word in ("token", "pwd", "user", "headers", "url")))
