"""Start Jupyverse servers as the demo, the tests and the benchmarks need them.

Each server gets a free port, its own auth directory (servers sharing one overwrite each
other's token) and its own process group, so that stopping it also ends the kernels it started.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

import httpx

# Plugins of a kernels-only remote, and of a front that serves only the kernels API.
REMOTE_PLUGINS = {"app", "auth", "frontend", "kernels", "kernel_subprocess", "file_watcher"}
FRONT_API_PLUGINS = {"app", "auth", "frontend", "remote_kernels"}
# A front a browser can use: JupyterLab, contents, login page.
FRONT_UI_PLUGINS = FRONT_API_PLUGINS | {"contents", "lab", "jupyterlab", "login", "page_config",
                                        "file_watcher", "nbconvert"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def disabled_except(wanted: set[str]) -> list[str]:
    """The --disable arguments that leave only `wanted` of the installed Jupyverse plugins."""
    installed = {ep.name for ep in entry_points(group="jupyverse.modules")}
    args: list[str] = []
    for name in sorted(installed - wanted):
        args += ["--disable", name]
    return args


class _EarlyExit(Exception):
    pass


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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def command(self) -> list[str]:
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
        # fps gives each module one second to prepare; on a loaded 2-core machine fps-auth
        # sometimes needs more and the server exits. That is worth another try, not a failure.
        for attempt in range(3):
            self._spawn()
            try:
                self.wait_ready(timeout)
                return self
            except _EarlyExit as e:
                if attempt == 2 or "timed out while" not in str(e):
                    raise RuntimeError(str(e)) from None
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,  # its own process group: ending it ends its kernels
        )
        log.close()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise _EarlyExit(f"{self.name} exited with {code}:\n{self.log_tail()}")
            try:
                httpx.get(f"{self.url}api/status", timeout=1)
                return
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
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        # Kernels may outlive the server process itself: end whatever is left of the group.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def remote_server(workdir: Path, port: int | None = None, extra: list[str] | None = None
                  ) -> Server:
    """A kernels-only Jupyverse: what the front talks to."""
    return Server(
        name="remote",
        port=port or free_port(),
        token=secrets.token_hex(16),
        workdir=workdir,
        args=[*disabled_except(REMOTE_PLUGINS), *(extra or [])],
    )


def front_server(workdir: Path, remote_url: str, remote_token: str, *, ui: bool = False,
                 port: int | None = None, extra: list[str] | None = None) -> Server:
    """A Jupyverse serving the kernels API from `remote_url`, with its own users and token.

    The remote token goes through the environment, as a user would pass it, not argv.
    """
    return Server(
        name="front",
        port=port or free_port(),
        token=secrets.token_hex(16),
        workdir=workdir,
        args=[
            *disabled_except(FRONT_UI_PLUGINS if ui else FRONT_API_PLUGINS),
            "--set", f"remote_kernels.url={remote_url}",
            *(extra or []),
        ],
        env={"REMOTE_KERNELS_TOKEN": remote_token},
    )
