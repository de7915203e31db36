"""Start Jupyverse servers as the demo, the tests and the benchmarks need them, and the other
kinds of remote kernel server: jupyter_server, Kernel Gateway, Enterprise Gateway.

Each server gets a free port, its own auth directory (servers sharing one overwrite each
other's token) and its own process group, so that stopping it also ends the kernels it started.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from fps_remote_kernels.local.processes import (
    REMOTE_PLUGINS,
    descendants,
    disabled_except,
    free_port,
    kill_survivors,
)

# Plugins of a front that serves only the kernels API.
FRONT_API_PLUGINS = {"app", "auth", "frontend", "remote_kernels"}
# A front a browser can use: JupyterLab, contents, login page.
FRONT_UI_PLUGINS = FRONT_API_PLUGINS | {"contents", "lab", "jupyterlab", "login", "page_config",
                                        "file_watcher", "nbconvert"}
# jupyverse[collaboration]: shared (Yjs) documents, saved by the server.
COLLABORATION_PLUGINS = {"yjs", "yrooms", "ystore_sqlite", "file_id"}


class _EarlyExit(Exception):
    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log  # what the server wrote since it was started


# Enterprise Gateway pins old jupyter_server/jupyter_client: it lives in its own virtualenv,
# made by scripts/setup.sh next to the main one.
EG_VENV = Path(__file__).resolve().parents[2] / ".venv-eg"
# Variables by which Jupyter applications configure themselves (JUPYTER_GATEWAY_URL would turn a
# jupyter_server into a gateway client; KG_* / EG_* set gateway options): not inherited.
_CONFIGURING_ENV = ("JUPYTER_", "KG_", "EG_", "JPY_")
# Event loop of every front started here, if set (e.g. uvloop): runs the suite on it.
_LOOP_ENV = "REMOTE_KERNELS_TEST_EVENT_LOOP"
# HTTP server of every front started here, if set (uvicorn): runs the suite on it.
_SERVER_ENV = "REMOTE_KERNELS_TEST_SERVER"


@dataclass
class Server:
    name: str
    port: int
    token: str
    workdir: Path
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # Run `fps --config FILE` instead of the `jupyverse` CLI.
    config_file: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    # One of KINDS. The other kinds take `Authorization: token <token>` and run `command_override`
    # (the whole command line but the port, added as `--port=N`).
    kind: str = "jupyverse"
    command_override: list[str] | None = None
    # What answers once the server is up: with the token, 200 for the other kinds; any answer
    # for Jupyverse.
    ready_path: str = "api/status"
    # The port came from free_port(): if another process took it first, pick another one.
    any_port: bool = False
    # Where it runs (a front's notebook root, a remote's kernels' directory) if not in
    # `workdir`, which keeps its state: log, auth directory, databases.
    cwd: Path | None = None
    _log_start: int = field(default=0, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def headers(self) -> dict[str, str]:
        """Headers that authenticate a request (Jupyverse reads only `?token=` and its cookie)."""
        return {} if self.kind == "jupyverse" else {"Authorization": f"token {self.token}"}

    def command(self) -> list[str]:
        if self.command_override is not None:
            return [*self.command_override, f"--port={self.port}", *self.args]
        bin_dir = Path(sys.executable).parent
        if self.config_file is not None:
            cli = [str(bin_dir / "fps"), "--config", str(self.config_file),
                   "--set", f"port={self.port}"]
        else:
            cli = [str(bin_dir / "jupyverse"), "--port", str(self.port)]
        return [
            *cli,
            # fps gives each module 1 s to prepare unless told otherwise: too short on a
            # loaded machine (fps-auth hashes passwords and creates its database).
            "--timeout", "60",
            "--set", "auth.mode=token",
            "--set", f"auth.token={self.token}",
            "--set", f"auth.directory={self.workdir / (self.name + '-auth')}",
            *self.args,
        ]

    def start(self, timeout: float = 60) -> Server:
        # A free port can be taken by another process before the server binds it: when the
        # port was ours to choose, choose another and try again.
        for attempt in range(3):
            self._spawn()
            try:
                self.wait_ready(timeout)
                return self
            except _EarlyExit as e:
                if attempt < 2 and self.any_port and "already in use" in e.log:
                    self.port = free_port()
                    continue
                raise RuntimeError(str(e)) from None
        raise AssertionError("unreachable")

    def _environment(self) -> dict[str, str]:
        if self.kind == "jupyverse":
            return {**os.environ, **self.env}
        # Its own Jupyter config, data and runtime directories: no user config, no user
        # kernelspecs, connection files under the workdir.
        env = {k: v for k, v in os.environ.items() if not k.startswith(_CONFIGURING_ENV)}
        for name in ("config", "data", "runtime"):
            path = self.workdir / f"{self.name}-{name}"
            path.mkdir(parents=True, exist_ok=True)
            env[f"JUPYTER_{name.upper()}_DIR"] = str(path)
        return {**env, **self.env}

    def _spawn(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.cwd or self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._environment(),
            start_new_session=True,  # its own process group: ending it ends its kernels
        )
        log.close()

    def _log_since_spawn(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise _EarlyExit(f"{self.name} exited with {code}:\n{self.log_tail()}",
                                 self._log_since_spawn())
            try:
                response = httpx.get(f"{self.url}{self.ready_path}", headers=self.headers,
                                     timeout=1)
                if self.kind == "jupyverse" or response.status_code == 200:
                    return
                time.sleep(0.1)
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.name} did not start within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        # jupyter_client and Enterprise Gateway start each kernel in a session of its own,
        # outside the server's group: note them now, end those the server leaves behind.
        noted = descendants(process.pid)
        end_process_group(process, signal.SIGTERM, timeout)
        # Kernels may outlive the server process itself: end whatever is left of the group.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        kill_survivors(noted)


def end_process_group(process: subprocess.Popen[bytes], first: signal.Signals,
                      timeout: float) -> None:
    """Send `first` to the process group of `process`, then SIGKILL if it has not exited
    within `timeout` seconds."""
    for sig in (first, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def remote_server(workdir: Path, port: int | None = None, extra: list[str] | None = None,
                  *, with_plugin: bool = False) -> Server:
    """A kernels-only Jupyverse: what the front talks to. `with_plugin`: with this package's
    module loaded too (no url), which lifts the remote's limit of 15 kernel WebSockets."""
    plugins = REMOTE_PLUGINS | {"remote_kernels"} if with_plugin else REMOTE_PLUGINS
    return Server(
        name="remote",
        port=port or free_port(),
        token=secrets.token_hex(16),
        workdir=workdir,
        args=[*disabled_except(plugins), *(extra or [])],
    )


def jupyter_server_remote(workdir: Path, *, port: int | None = None,
                          extra: list[str] | None = None) -> Server:
    """A jupyter_server (from the main virtualenv) serving its kernels, kernelspecs, sessions.

    Token auth, no browser, no terminals, no iopub rate limit (it cuts large outputs), files
    under `workdir`, loopback only.
    """
    token = secrets.token_hex(16)
    command = [
        sys.executable, "-m", "jupyter_server",
        f"--IdentityProvider.token={token}",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port_retries=0",
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",  # CI runs as root
        "--ServerApp.allow_remote_access=False",
        "--ServerApp.terminals_enabled=False",
        f"--ServerApp.root_dir={workdir}",
        "--ZMQChannelsWebsocketConnection.iopub_data_rate_limit=0",
        "--ZMQChannelsWebsocketConnection.iopub_msg_rate_limit=0",
    ]
    return _tornado_app("jupyter-server", "jupyter_server", token, workdir, port, extra, command)


def kernel_gateway_remote(workdir: Path, list_kernels: bool = False, *,
                          port: int | None = None, env_whitelist: list[str] | None = None,
                          extra: list[str] | None = None) -> Server:
    """A Jupyter Kernel Gateway (jupyter-websocket mode, from the main virtualenv).

    `list_kernels`: allow GET /api/kernels and /api/sessions (403 otherwise). `env_whitelist`:
    variables of a POST /api/kernels `env` that reach the kernel besides `KERNEL_*`.
    """
    token = secrets.token_hex(16)
    command = [
        sys.executable, "-m", "kernel_gateway",
        f"--KernelGatewayApp.auth_token={token}",
        "--KernelGatewayApp.ip=127.0.0.1",
        "--KernelGatewayApp.port_retries=0",
        f"--JupyterWebsocketPersonality.list_kernels={list_kernels}",
        # Its default iopub data rate limit (1 MB/s) drops large outputs, proxy or not.
        "--ZMQChannelsWebsocketConnection.iopub_data_rate_limit=0",
        "--ZMQChannelsWebsocketConnection.iopub_msg_rate_limit=0",
    ]
    if env_whitelist:
        command.append(f"--JupyterWebsocketPersonality.env_whitelist={env_whitelist!r}")
    return _tornado_app("kernel-gateway", "kernel_gateway", token, workdir, port, extra, command)


def enterprise_gateway_remote(workdir: Path, list_kernels: bool = False, *,
                              port: int | None = None, client_envs: list[str] | None = None,
                              unauthorized_users: list[str] | None = None,
                              venv: Path | None = None, extra: list[str] | None = None
                              ) -> Server:
    """A Jupyter Enterprise Gateway with local kernels (its default LocalProcessProxy).

    It runs from its own virtualenv (`venv`, default `.venv-eg/` made by scripts/setup.sh), whose
    ipykernel its kernelspec `python3` starts. `list_kernels` as for Kernel Gateway;
    `client_envs`: variables of a POST /api/kernels `env` that reach the kernel besides
    `KERNEL_*`. `unauthorized_users`: KERNEL_USERNAME values it refuses with 403 (its own default
    is `root`, which would refuse every start without KERNEL_USERNAME here: none by default).
    """
    venv = venv or EG_VENV
    python = venv / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"{python} not found: run scripts/setup.sh")
    token = secrets.token_hex(16)
    command = [
        str(python), "-m", "enterprise_gateway",
        f"--EnterpriseGatewayApp.auth_token={token}",
        "--EnterpriseGatewayApp.ip=127.0.0.1",
        "--EnterpriseGatewayApp.port_retries=0",
        f"--EnterpriseGatewayApp.list_kernels={list_kernels}",
        # By default it refuses kernels whose KERNEL_USERNAME (default: the user it runs as)
        # is root, with 403; tests and CI run as root.
        f"--EnterpriseGatewayApp.unauthorized_users={sorted(unauthorized_users or [])!r}",
    ]
    if client_envs:
        command.append(f"--EnterpriseGatewayApp.client_envs={client_envs!r}")
    return _tornado_app("enterprise-gateway", "enterprise_gateway", token, workdir, port, extra,
                        command)


def _tornado_app(name: str, kind: str, token: str, workdir: Path, port: int | None,
                 extra: list[str] | None, command: list[str]) -> Server:
    """A jupyter_server-based remote: token in an Authorization header, ready when its
    kernelspecs answer."""
    return Server(
        name=name,
        kind=kind,
        port=port or free_port(),
        any_port=port is None,
        token=token,
        workdir=workdir,
        args=list(extra or []),
        command_override=command,
        ready_path="api/kernelspecs",
    )


def front_server_choice(server: str) -> list[str]:
    """The settings that make a front serve itself with `server` (anycorn: Jupyverse's own)."""
    if server in ("", "anycorn"):
        return []
    return ["--set", "start_server=false", "--set", f"remote_kernels.server={server}"]


def front_server(workdir: Path, remote_url: str, remote_token: str, *, ui: bool = False,
                 port: int | None = None, extra: list[str] | None = None,
                 collaboration: bool = False, root: Path | None = None) -> Server:
    """A Jupyverse serving the kernels API from `remote_url`, with its own users and token.
    `collaboration`: with the collaboration plugins enabled too (implies `ui`). `root`: the
    directory JupyterLab shows, if not `workdir` (which holds the front's state).

    The remote token goes through the environment, as a user would pass it, not argv.
    """
    return Server(
        name="front",
        port=port or free_port(),
        token=secrets.token_hex(16),
        workdir=workdir,
        args=[
            *disabled_except(FRONT_UI_PLUGINS | COLLABORATION_PLUGINS if collaboration
                             else FRONT_UI_PLUGINS if ui else FRONT_API_PLUGINS),
            "--set", f"remote_kernels.url={remote_url}",
            # Its own store: fronts sharing one would see each other's sessions and kernels.
            "--set", f"remote_kernels.sessions_db={workdir / 'front-sessions.sqlite'}",
            # The whole suite can run on another event loop (uvloop) this way.
            *(["--set", f"remote_kernels.event_loop={os.environ[_LOOP_ENV]}"]
              if os.environ.get(_LOOP_ENV) else []),
            *front_server_choice(os.environ.get(_SERVER_ENV, "")),
            *(extra or []),
        ],
        env={"REMOTE_KERNELS_TOKEN": remote_token},
        cwd=root,
    )
