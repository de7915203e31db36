"""The servers a benchmark run needs, and the three ways of reaching the same remote.

- `direct`: the remote Jupyverse itself (logged in with its token, using its cookie);
- `plugin`: a Jupyverse front with this plugin, pointed at the remote;
- `nginx`: Nginx in front of the remote.
The scale scenario has the same three in front of a fake remote (benchmarks/fake_remote.py).
Every server runs in its own process group and is stopped by `Stack.stop()`.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.servers import (
    Server,
    end_process_group,
    free_port,
    front_server,
    remote_server,
)

from .nginx import Nginx

TARGETS = ("direct", "plugin", "nginx")
COOKIE = "fastapiusersauth"


@dataclass
class Target:
    name: str
    base: str  # http://127.0.0.1:port/
    token: str  # the token of the server that authenticates (the front for `plugin`)
    pids: Callable[[], list[int]] = field(default=lambda: [])  # the proxy's processes
    login_path: str = "api/kernelspecs"  # an authenticated GET that honours ?token=
    noauth: bool = False
    http: httpx.AsyncClient | None = None
    cookie: str | None = None

    @property
    def ws(self) -> str:
        return "ws" + self.base[len("http") :]

    async def login(self) -> None:
        """Log in as a browser does (`?token=` sets the auth cookie), keeping the connection."""
        self.http = httpx.AsyncClient(base_url=self.base, timeout=60,
                                      limits=httpx.Limits(max_keepalive_connections=20))
        response = await self.http.get(self.login_path, params={"token": self.token})
        if response.status_code >= 400:
            # The body says why (e.g. the front's message naming an unreachable remote).
            raise RuntimeError(f"{self.name}: logging in to {self.base} answered "
                               f"{response.status_code}: {response.text[:500]}")
        value = self.http.cookies.get(COOKIE)
        if value:
            self.cookie = f"{COOKIE}={value}"
        elif not self.noauth:
            raise RuntimeError(f"{self.name}: logging in set no {COOKIE} cookie")

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()


class FakeRemoteProcess:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 20) -> FakeRemoteProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "fake-remote.log", "ab")
        root = Path(__file__).resolve().parent.parent
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fake_remote", "--port", str(self.port),
             "--token", self.token],
            cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the fake remote exited: see "
                                   f"{self.workdir / 'fake-remote.log'}")
            try:
                httpx.get(f"{self.url}api/status", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise TimeoutError(f"the fake remote did not start within {timeout} s")

    def stop(self, timeout: float = 10) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        end_process_group(process, signal.SIGTERM, timeout)


def _single(server: Server | FakeRemoteProcess) -> Callable[[], list[int]]:
    return lambda: [server.process.pid] if server.process is not None else []


class Stack:
    """Remote, front and Nginx (and, for the scale scenario, the same around a fake remote)."""

    def __init__(self, workdir: Path, *, real: bool = True, fake: bool = True,
                 nginx: bool = True, front_options: list[str] | None = None) -> None:
        self.workdir = workdir
        # `--set` options of both fronts (a lever to measure, e.g. remote_kernels.event_loop).
        self.front_extra = [arg for option in front_options or [] for arg in ("--set", option)]
        self.real = real
        self.fake = fake
        self.with_nginx = nginx
        self.remote: Server | None = None
        self.front: Server | None = None
        self.fake_remote: FakeRemoteProcess | None = None
        self.fake_front: Server | None = None
        self.nginx: Nginx | None = None
        self.targets: dict[str, Target] = {}
        self.fake_targets: dict[str, Target] = {}

    def start(self) -> Stack:
        routes: dict[int, int] = {}
        if self.real:
            self.remote = remote_server(self.workdir / "remote").start()
            self.front = front_server(self.workdir / "front", self.remote.url,
                                      self.remote.token, extra=self.front_extra).start()
            routes[free_port()] = self.remote.port
        if self.fake:
            self.fake_remote = FakeRemoteProcess(self.workdir / "fake").start()
            self.fake_front = front_server(self.workdir / "fake-front", self.fake_remote.url,
                                           self.fake_remote.token,
                                           extra=self.front_extra).start()
            routes[free_port()] = self.fake_remote.port
        if self.with_nginx:
            self.nginx = Nginx(self.workdir / "nginx", routes).start()
        ports = iter(routes)
        if self.remote is not None and self.front is not None:
            port = next(ports)
            self.targets = {
                "direct": Target("direct", self.remote.url, self.remote.token),
                "plugin": Target("plugin", self.front.url, self.front.token,
                                 _single(self.front)),
            }
            if self.nginx is not None:
                self.targets["nginx"] = Target("nginx", f"http://127.0.0.1:{port}/",
                                               self.remote.token, self.nginx.pids)
        if self.fake_remote is not None and self.fake_front is not None:
            port = next(ports)
            # The fake remote has no kernelspecs: it logs in with GET /api/status?token=.
            self.fake_targets = {
                "direct": Target("direct", self.fake_remote.url, self.fake_remote.token,
                                 login_path="api/status"),
                "plugin": Target("plugin", self.fake_front.url, self.fake_front.token,
                                 _single(self.fake_front), login_path="api/kernels"),
            }
            if self.nginx is not None:
                self.fake_targets["nginx"] = Target(
                    "nginx", f"http://127.0.0.1:{port}/", self.fake_remote.token,
                    self.nginx.pids, login_path="api/status")
        return self

    async def login(self) -> None:
        for target in [*self.targets.values(), *self.fake_targets.values()]:
            await target.login()

    async def aclose(self) -> None:
        for target in [*self.targets.values(), *self.fake_targets.values()]:
            await target.aclose()

    def stop(self) -> None:
        """Stop everything that was started, whatever failed before."""
        for stop in (
            self.nginx.stop if self.nginx else None,
            self.fake_front.stop if self.fake_front else None,
            self.front.stop if self.front else None,
            self.fake_remote.stop if self.fake_remote else None,
            self.remote.stop if self.remote else None,
        ):
            if stop is None:
                continue
            try:
                stop()
            except Exception as e:  # keep stopping the others
                print(f"warning: stopping a server failed: {e!r}", file=sys.stderr)
