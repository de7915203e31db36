"""Nginx as the peer to beat: a plain reverse proxy in front of the same remote.

The configuration is written to a temporary directory; Nginx runs in the foreground as the
current user, in its own process group, with its pid file, logs and temp paths in that
directory (nothing under /etc, /var or /run).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.servers import end_process_group

_CONFIG = """\
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # Upgrade requests get "Connection: upgrade"; others none, so upstream keepalive works.
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
{servers}
}}
"""

_SERVER = """\
    upstream {name} {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{name};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


class Nginx:
    """One Nginx master (and one worker) proxying each `listen port -> upstream port`."""

    def __init__(self, workdir: Path, routes: dict[int, int]) -> None:
        self.dir = workdir
        self.routes = routes
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        user = ""
        if os.geteuid() == 0:
            # As root, Nginx would switch its workers to `nobody`: keep the current user.
            user = (f"user {pwd.getpwuid(os.geteuid()).pw_name} "
                    f"{grp.getgrgid(os.getegid()).gr_name};\n")
        servers = "".join(
            _SERVER.format(name=f"upstream_{port}", port=port, upstream_port=upstream)
            for port, upstream in self.routes.items()
        )
        return _CONFIG.format(user=user, dir=self.dir, servers=servers)

    def start(self, timeout: float = 20) -> Nginx:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (benchmarks/run.sh installs it)")
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(self.config())
        log = open(self.dir / "nginx.out", "ab")
        # -e: the startup error log, before the configuration is read (not /var/log/nginx).
        self.process = subprocess.Popen(
            [binary, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        port = next(iter(self.routes))
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}:\n"
                                   + (self.dir / "error.log").read_text(errors="replace"))
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"nginx did not start within {timeout} s")

    def pids(self) -> list[int]:
        """The master and its workers: the cost of Nginx is theirs together."""
        if self.process is None:
            return []
        master = self.process.pid
        pids = [master]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                pids.append(int(entry.name))
        return pids

    def stop(self, timeout: float = 10) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        end_process_group(process, signal.SIGQUIT, timeout)  # nginx: graceful stop
