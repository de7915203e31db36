"""SIGTERM stops a server that runs this plugin, however its parent left SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.servers import Server, front_server, remote_server

# A shell script's `cmd &` starts cmd with SIGINT ignored (POSIX), as container entrypoints
# and service wrappers do: the front must still stop on SIGTERM.
WRAPPER = 'trap "" INT; "$@" & echo $! > "$PIDFILE"; wait'


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def started_by_a_script(server: Server, tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    pidfile = tmp_path / "server.pid"
    log = server.log_path.open("wb")
    wrapper = subprocess.Popen(["bash", "-c", WRAPPER, "wrapper", *server.command()],
                               env={**server._environment(), "PIDFILE": str(pidfile)},
                               cwd=server.workdir, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "no pid written")
    except BaseException:
        os.killpg(wrapper.pid, signal.SIGKILL)
        raise
    pid = int(pidfile.read_text())

    def answers() -> bool:
        try:
            # Any answer: Jupyverse answers a token login with a redirect that sets its cookie.
            return httpx.get(f"{server.url}api/status", params={"token": server.token},
                             timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, 90, "the server never answered")
    except BaseException:
        os.killpg(wrapper.pid, signal.SIGKILL)  # the server is in the wrapper's group
        raise
    return wrapper, pid


@pytest.mark.parametrize("role", ["front", "kernel_host"])
def test_sigterm_stops_a_server_whose_sigint_is_ignored(remote: Server, tmp_path: Path,
                                                        role: str) -> None:
    """A front (or a kernel host with the plugin installed) started in the background of a
    shell script, SIGINT ignored, exits promptly on SIGTERM."""
    server = (front_server(tmp_path, remote.url, remote.token) if role == "front"
              else remote_server(tmp_path, with_plugin=True))
    wrapper, pid = started_by_a_script(server, tmp_path)
    try:
        with open(f"/proc/{pid}/status") as status:
            ignored = next(line for line in status if line.startswith("SigIgn:"))
        assert int(ignored.split()[1], 16) & (1 << (signal.SIGINT - 1)), "SIGINT not ignored"
        os.kill(pid, signal.SIGTERM)
        # Jupyverse's own stop timeout is 1 s; kernels and sockets close within it.
        wrapper.wait(timeout=20)
    finally:
        try:
            os.killpg(wrapper.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert wrapper.returncode is not None, server.log_tail()
