"""Where the front's memory per open kernel WebSocket goes (issue 9).

Starts the fake remote and a front as the scale scenario does, warms one socket up, then opens
`--sockets` sockets (32 at a time) and reports the front's RSS growth per socket. With
`--tracemalloc N` the front runs with a small sitecustomize that, on SIGUSR1, starts
tracemalloc (N frames) if it is not on yet and dumps a snapshot and container-object counts by
type, taken before and after the opens; the difference is printed per package or file, per
line and per traceback (innermost frame outside the standard library).
RSS with tracemalloc on is inflated by its own bookkeeping: compare RSS figures without it.

    PYTHONPATH=. .venv/bin/python -m benchmarks.socket_memory [--tracemalloc 25]
        [--front-set remote_kernels.server=uvicorn ...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from pathlib import Path

import anyio
import httpx

from tests.support.servers import front_server

from .procstat import rss_bytes
from .scenarios import _close_many, _open_many
from .stack import FakeRemoteProcess, Target
from .wire import Kernel

_SITECUSTOMIZE = '''
import gc, json, os, signal, tracemalloc
from collections import Counter

def _dump(signum, frame):
    where = os.environ["SOCKET_MEMORY_DUMP"]
    n = len([p for p in os.listdir(where) if p.endswith(".snapshot")])
    gc.collect()
    if not tracemalloc.is_tracing():  # from the first signal on: start-up stays fast
        tracemalloc.start(int(os.environ["SOCKET_MEMORY_FRAMES"]))
    tracemalloc.take_snapshot().dump(os.path.join(where, f"{n}.snapshot.tmp"))
    counts = Counter(f"{type(o).__dict__.get('__module__', '?')}.{type(o).__name__}"
                     for o in gc.get_objects())
    with open(os.path.join(where, f"{n}.types.json"), "w") as f:
        json.dump(counts, f)
    os.rename(os.path.join(where, f"{n}.snapshot.tmp"), os.path.join(where, f"{n}.snapshot"))

if os.environ.get("SOCKET_MEMORY_DUMP"):
    signal.signal(signal.SIGUSR1, _dump)
'''

def _package(filename: str) -> str:
    """`fastapi/routing.py` for a file of an installed package, else the file's name."""
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1]
    if "/fps_remote_kernels/" in filename:
        return "fps_remote_kernels/" + Path(filename).name
    return Path(filename).name


def _where(traceback: tracemalloc.Traceback) -> str:
    """The innermost frame outside the standard library, else the innermost one."""
    frames = list(traceback)  # oldest first: the innermost frame is the last
    for frame in reversed(frames):
        if "site-packages" in frame.filename or "/fps_remote_kernels/" in frame.filename:
            return f"{_package(frame.filename)}:{frame.lineno}"
    return f"{_package(frames[-1].filename)}:{frames[-1].lineno}" if frames else "?"


async def _dump(pid: int, where: Path, base: str, timeout: float = 120) -> int:
    n = len(list(where.glob("*.snapshot")))
    os.kill(pid, signal.SIGUSR1)
    async with httpx.AsyncClient() as http:
        with anyio.fail_after(timeout):
            while not (where / f"{n}.snapshot").exists():
                try:  # a request wakes a loop that sleeps in the poller
                    await http.get(f"{base}api/status", timeout=5)
                except httpx.TransportError:
                    pass
                await anyio.sleep(0.5)
    return n


def _report(where: Path, before: int, after: int, sockets: int, top: int) -> None:
    old = tracemalloc.Snapshot.load(str(where / f"{before}.snapshot"))
    new = tracemalloc.Snapshot.load(str(where / f"{after}.snapshot"))
    diff = new.compare_to(old, "traceback")
    total = sum(d.size_diff for d in diff)
    print(f"\ntraced Python allocations: {total / 1024 / sockets:.1f} KiB per socket")
    groups: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    for d in diff:
        key = _where(d.traceback)
        groups[key] += d.size_diff
        counts[key] += d.count_diff
        packages[key.split("/", 1)[0] if "fps_remote_kernels" not in key
                 else key.rsplit(":", 1)[0]] += d.size_diff
    print("\nper package/file (innermost frame outside the standard library), bytes per socket:")
    for name, size in packages.most_common(top):
        print(f"  {size / sockets:9.0f}  {name}")
    print("\nper line, bytes and blocks per socket:")
    for name, size in groups.most_common(top):
        print(f"  {size / sockets:9.0f}  {counts[name] / sockets:6.1f}  {name}")
    print("\nlargest tracebacks, bytes per socket:")
    for d in sorted(diff, key=lambda d: -d.size_diff)[:top]:
        print(f"  {d.size_diff / sockets:9.0f}  {d.count_diff / sockets:6.1f} blocks")
        for line in d.traceback.format(limit=8):
            print("      " + line)
    types_old = json.loads((where / f"{before}.types.json").read_text())
    types_new = json.loads((where / f"{after}.types.json").read_text())
    grown = Counter({k: v - types_old.get(k, 0) for k, v in types_new.items()})
    print("\ncontainer objects per socket, by type:")
    for name, n in grown.most_common(top):
        if n > 0:
            print(f"  {n / sockets:6.2f}  {name}")


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="socket-memory-"))
    dumps = workdir / "dumps"
    dumps.mkdir()
    remote = FakeRemoteProcess(workdir / "fake")
    front = None
    try:
        remote.start()
        extra = [arg for option in args.front_set for arg in ("--set", option)]
        front = front_server(workdir / "front", remote.url, remote.token, extra=extra)
        if args.tracemalloc:
            site = workdir / "site"
            site.mkdir()
            (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
            front.env.update({
                "SOCKET_MEMORY_FRAMES": str(args.tracemalloc),
                "SOCKET_MEMORY_DUMP": str(dumps),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(site),
                                                            os.environ.get("PYTHONPATH")])),
            })
        front.start()
        assert front.process is not None
        pid = front.process.pid
        target = Target("plugin", front.url, front.token, login_path="api/kernels")
        await target.login()
        try:
            single = await Kernel.open(target.ws, str(uuid.uuid4()), cookie=target.cookie)
            for _ in range(args.warm):
                await single.execute("1+1")
            await single.close()
            if args.tracemalloc:
                before = await _dump(pid, dumps, front.url)
            rss_before = rss_bytes(pid)
            start = time.perf_counter()
            kernels = await _open_many(target, args.sockets)
            opened = time.perf_counter() - start
            try:
                await anyio.sleep(0.5)
                rss_after = rss_bytes(pid)
                print(f"opened {len(kernels)} sockets in {opened:.1f} s; front RSS "
                      f"{rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB: "
                      f"{(rss_after - rss_before) / 1024 / len(kernels):.1f} KiB per socket")
                if args.tracemalloc:
                    after = await _dump(pid, dumps, front.url)
                    _report(dumps, before, after, len(kernels), args.top)
            finally:
                await _close_many(kernels)
        finally:
            await target.aclose()
    finally:
        if front is not None:
            front.stop()
        remote.stop()
        print(f"(logs in {workdir})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=500)
    parser.add_argument("--warm", type=int, default=500, help="executes on one socket first")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--front-set", action="append", default=[], metavar="KEY=VALUE")
    anyio.run(main, parser.parse_args())
