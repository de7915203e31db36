"""Processes of the local kernel host: free loopback ports, the plugins of a kernels-only
Jupyverse, and the processes a server leaves behind (found through Linux's /proc).

The tests' and the demo's server harness (tests/support/servers.py) uses the same helpers.
"""

from __future__ import annotations

import os
import signal
import socket
from importlib.metadata import entry_points
from pathlib import Path

# Plugins of a kernels-only Jupyverse (the local kernel host, and a kernel host of the tests).
REMOTE_PLUGINS = {"app", "auth", "frontend", "kernels", "kernel_subprocess", "file_watcher"}


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


def start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def kill_survivors(noted: dict[int, str]) -> None:
    """SIGKILL the processes of `noted` (from `descendants`) that still run."""
    for pid, started in noted.items():
        if start_time(pid) == started:  # the same process, not a reused pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def descendants(pid: int) -> dict[int, str]:
    """The processes below `pid`, each with its start time (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    try:
        entries = [e for e in Path("/proc").iterdir() if e.name.isdigit()]
    except OSError:
        return {}
    for entry in entries:
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        started[int(entry.name)] = fields[19]
    found: dict[int, str] = {}
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found[child] = started[child]
                stack.append(child)
    return found
