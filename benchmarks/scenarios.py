"""The measured scenarios. Each runs its targets interleaved (blocks in a rotating order) so
that all three see the same machine load; every wait is bounded."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import anyio

from .procstat import Meter, rss_bytes, wait_quiet
from .stack import Target
from .wire import V1, Kernel

# A 1000-character line (999 + newline) printed `n` times: n kB of stdout. The kernel batches
# it into messages of its choosing (ipykernel: a few MB to 25 MB each).
STREAM_CODE = "_line = 'x' * 999\nfor _ in range({n}): print(_line)"
# The same, flushed every 100 lines: 100 kB messages, so that a proxy's read-ahead (not the size
# of one message) decides its memory while the client is slow.
FLOOD_CODE = ("import sys\n_line = 'x' * 999\nfor _i in range({n}):\n    print(_line)\n"
              "    if _i % 100 == 99: sys.stdout.flush()")


@dataclass
class Params:
    rounds: int = 3
    rest_requests: int = 200  # per endpoint, target and round
    rest_block: int = 20
    starts: int = 3  # kernel starts per target and round
    ws_opens: int = 40  # kernel WebSocket opens per target and round
    ws_open_block: int = 10
    executes: int = 300  # per protocol, target and round
    execute_block: int = 50
    stream_mb: int = 50
    flood_mb: int = 50
    flood_rate_mb_s: float = 5.0  # how fast the slow client reads
    fanout_sessions: int = 8
    fanout_executes: int = 50
    scale_sockets: int = 500
    scale_single: int = 500  # sequential executes on one socket
    scale_paced_seconds: float = 10.0
    # Executes per second per socket with all sockets open: light (500 notebooks, a cell
    # every 5 s each) and heavy (a cell a second each, near the front's capacity here).
    scale_paced_rates: tuple[float, ...] = (0.2, 1.0)
    scale_saturation_seconds: float = 5.0

    @classmethod
    def smoke(cls) -> Params:
        return cls(rounds=1, rest_requests=10, rest_block=5, starts=1, ws_opens=4,
                   ws_open_block=2, executes=10,
                   execute_block=5, stream_mb=2, flood_mb=2, flood_rate_mb_s=4.0,
                   fanout_sessions=2, fanout_executes=5, scale_sockets=20, scale_single=20,
                   scale_paced_seconds=1.0, scale_paced_rates=(1.0,),
                   scale_saturation_seconds=1.0)


Samples = dict[str, list[float]]


def rotation(names: list[str], index: int) -> list[str]:
    """The targets in a different order for each block, so none always goes first."""
    k = index % len(names)
    return names[k:] + names[:k]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


# ------------------------------------------------------------------------------------ REST

REST_PATHS = {
    "kernelspecs": "api/kernelspecs",
    "kernels": "api/kernels",
    "sessions": "api/sessions",
    # A route that only authenticates: the front's own auth check, measured alone.
    "auth": "auth/user/me",
}


async def rest(targets: dict[str, Target], p: Params, round_: int) -> dict[str, Samples]:
    """Sequential GETs, in blocks of `rest_block` per target; latency in ms."""
    samples: dict[str, Samples] = {key: {n: [] for n in targets} for key in REST_PATHS}
    block = 0
    for key, path in REST_PATHS.items():
        for _ in range(max(1, p.rest_requests // p.rest_block)):
            for name in rotation(list(targets), round_ + block):
                http = targets[name].http
                assert http is not None
                for _ in range(p.rest_block):
                    with anyio.fail_after(30):
                        start = time.perf_counter()
                        response = await http.get(path)
                        elapsed = time.perf_counter() - start
                    if response.status_code != 200:
                        raise RuntimeError(f"{name} GET /{path}: {response.status_code} "
                                           f"{response.text[:200]}")
                    samples[key][name].append(elapsed * 1000)
            block += 1
    return samples


# ------------------------------------------------------------------------------------ kernels


async def create_session(target: Target, path: str, timeout: float = 120) -> dict[str, Any]:
    assert target.http is not None
    with anyio.fail_after(timeout):
        response = await target.http.post("api/sessions", json={
            "path": path, "type": "notebook", "name": path, "kernel": {"name": "python3"},
        }, timeout=timeout)
    if response.status_code not in (200, 201):
        raise RuntimeError(f"{target.name} POST /api/sessions: {response.status_code} "
                           f"{response.text[:200]}")
    return dict(response.json())


async def delete_session(target: Target, session_id: str) -> None:
    assert target.http is not None
    with anyio.fail_after(60):
        await target.http.delete(f"api/sessions/{session_id}", timeout=60)


async def kernel_start(targets: dict[str, Target], p: Params, round_: int,
                       cleanup: Target) -> Samples:
    """POST /api/sessions, open the kernel WebSocket, until kernel_info_reply; seconds."""
    samples: Samples = {n: [] for n in targets}
    for i in range(p.starts):
        for name in rotation(list(targets), round_ + i):
            target = targets[name]
            start = time.perf_counter()
            session = await create_session(target, f"bench-start-{uuid.uuid4().hex}.ipynb")
            kernel = await Kernel.open(target.ws, session["kernel"]["id"], cookie=target.cookie)
            try:
                await kernel.kernel_info(timeout=120)
                samples[name].append(time.perf_counter() - start)
            finally:
                await kernel.close()
                await delete_session(cleanup, session["id"])
            await anyio.sleep(0.5)  # let the remote finish with the new kernel
    return samples


async def ws_open(targets: dict[str, Target], p: Params, round_: int, kernel_id: str
                  ) -> Samples:
    """Open the kernel WebSocket of a running kernel until kernel_info_reply (what a notebook
    reconnecting or a second tab pays); ms. Blocks of `ws_open_block` per target."""
    samples: Samples = {n: [] for n in targets}
    for b in range(max(1, p.ws_opens // p.ws_open_block)):
        for name in rotation(list(targets), round_ + b):
            target = targets[name]
            for _ in range(p.ws_open_block):
                start = time.perf_counter()
                kernel = await Kernel.open(target.ws, kernel_id, cookie=target.cookie)
                try:
                    await kernel.kernel_info(timeout=60)
                    samples[name].append((time.perf_counter() - start) * 1000)
                finally:
                    await kernel.close()
    return samples


async def open_kernel(target: Target, kernel_id: str, protocol: str | None = V1,
                      **kwargs: Any) -> Kernel:
    kernel = await Kernel.open(target.ws, kernel_id, cookie=target.cookie, protocol=protocol,
                               **kwargs)
    await kernel.kernel_info()
    return kernel


async def execute_rtt(targets: dict[str, Target], p: Params, round_: int, kernel_id: str,
                      protocol: str | None) -> Samples:
    """`1+1` until execute_reply and idle, sequentially; ms. One socket per block: a kernel
    broadcasts iopub to every socket, so only the measured one is open."""
    samples: Samples = {n: [] for n in targets}
    for b in range(max(1, p.executes // p.execute_block)):
        for name in rotation(list(targets), round_ + b):
            kernel = await open_kernel(targets[name], kernel_id, protocol)
            try:
                await kernel.execute("1+1")  # warm-up, not counted
                for _ in range(p.execute_block):
                    samples[name].append(await kernel.execute("1+1") * 1000)
            finally:
                await kernel.close()
    return samples


@dataclass
class StreamRun:
    mb_s: float
    wall_s: float
    relayed_bytes: int
    cpu_s: float | None
    rss_growth_mib: float | None


async def _stream_once(target: Target, kernel_id: str, mb: int, protocol: str | None,
                       rate_mb_s: float | None = None, code: str = STREAM_CODE) -> StreamRun:
    kernel = await open_kernel(target, kernel_id, protocol, max_queue=4)
    try:
        wait_quiet(target.pids)
        meter = Meter(target.pids)
        with meter:
            with anyio.fail_after(600):
                start = time.perf_counter()
                msg_id = await kernel.send_execute(code.format(n=mb * 1000))
                reply = idle = False
                size = 0
                while not (reply and idle):
                    received = await kernel.receive()
                    size += received.size
                    if rate_mb_s:
                        # A slow client: it takes its time over each message.
                        await anyio.sleep(received.size / (rate_mb_s * 1e6))
                    if received.parent_id != msg_id:
                        continue
                    if received.msg_type == "execute_reply":
                        reply = True
                    elif received.execution_state == "idle":
                        idle = True
                wall = time.perf_counter() - start
    finally:
        await kernel.close()
    usage = meter.usage if list(target.pids()) else None
    return StreamRun(mb / wall, wall, size, usage.cpu_s if usage else None,
                     usage.rss_growth_mib if usage else None)


async def stream(targets: dict[str, Target], p: Params, round_: int, kernel_id: str,
                 protocol: str | None) -> dict[str, list[StreamRun]]:
    """A cell printing `stream_mb` MB in 1000-character lines, read as fast as possible."""
    runs: dict[str, list[StreamRun]] = {n: [] for n in targets}
    for name in rotation(list(targets), round_):
        runs[name].append(await _stream_once(targets[name], kernel_id, p.stream_mb, protocol))
    return runs


async def flood(targets: dict[str, Target], p: Params, round_: int,
                kernel_id: str) -> dict[str, list[StreamRun]]:
    """The same output read by a slow client: the proxy's memory must stay bounded."""
    runs: dict[str, list[StreamRun]] = {}
    for name in rotation([n for n in targets if list(targets[n].pids())], round_):
        runs.setdefault(name, []).append(await _stream_once(
            targets[name], kernel_id, p.flood_mb, V1, rate_mb_s=p.flood_rate_mb_s,
            code=FLOOD_CODE))
    return runs


@dataclass
class FanoutRun:
    exec_s: float
    latencies_ms: list[float]


async def fanout(targets: dict[str, Target], p: Params, round_: int,
                 kernel_ids: list[str]) -> dict[str, list[FanoutRun]]:
    """`fanout_sessions` kernels, each executing `fanout_executes` times, all at once."""
    runs: dict[str, list[FanoutRun]] = {n: [] for n in targets}
    for name in rotation(list(targets), round_):
        kernels = [await open_kernel(targets[name], k) for k in kernel_ids]
        latencies: list[float] = []

        async def one(kernel: Kernel, into: list[float]) -> None:
            for _ in range(p.fanout_executes):
                into.append(await kernel.execute("1+1", timeout=120) * 1000)

        try:
            with anyio.fail_after(600):
                start = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for kernel in kernels:
                        tg.start_soon(one, kernel, latencies)
                wall = time.perf_counter() - start
        finally:
            for kernel in kernels:
                await kernel.close()
        runs[name].append(FanoutRun(len(latencies) / wall, latencies))
    return runs


# ------------------------------------------------------------------------------------ scale


@dataclass
class ScaleRun:
    single_ms: list[float]
    paced_ms: dict[float, list[float]]  # by executes per second per socket
    saturation_msgs_s: float
    rss_per_socket_kib: float | None
    open_s: float


async def _open_many(target: Target, count: int) -> list[Kernel]:
    kernels: list[Kernel] = []
    limiter = anyio.CapacityLimiter(32)

    async def one() -> None:
        async with limiter:
            kernels.append(await Kernel.open(target.ws, str(uuid.uuid4()),
                                             cookie=target.cookie, timeout=60))

    try:
        with anyio.fail_after(300):
            async with anyio.create_task_group() as tg:
                for _ in range(count):
                    tg.start_soon(one)
    except BaseException:
        await _close_many(kernels)
        raise
    return kernels


async def _close_many(kernels: list[Kernel]) -> None:
    with anyio.move_on_after(120):
        async with anyio.create_task_group() as tg:
            for kernel in kernels:
                tg.start_soon(kernel.close)


async def scale_once(target: Target, p: Params) -> ScaleRun:
    """One socket alone, then `scale_sockets` at once: paced load, then saturation."""
    single = await Kernel.open(target.ws, str(uuid.uuid4()), cookie=target.cookie)
    try:
        await single.execute("1+1")
        single_ms = [await single.execute("1+1") * 1000 for _ in range(p.scale_single)]
    finally:
        await single.close()

    pids = list(target.pids())
    rss_before = _rss_kib(pids)
    start = time.perf_counter()
    kernels = await _open_many(target, p.scale_sockets)
    open_s = time.perf_counter() - start
    try:
        await anyio.sleep(0.5)
        rss_after = _rss_kib(pids)
        rss_per_socket = ((rss_after - rss_before) / len(kernels)
                          if pids and rss_before is not None and rss_after is not None
                          else None)
        with anyio.fail_after(120):  # a first execute on each socket, not measured
            async with anyio.create_task_group() as tg:
                for kernel in kernels:
                    tg.start_soon(kernel.execute, "1+1")
        # Paced: each socket executes `rate` times a second, starts staggered.
        paced: dict[float, list[float]] = {}

        async def paced_one(kernel: Kernel, period: float, offset: float, deadline: float,
                            into: list[float]) -> None:
            await anyio.sleep(offset)
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                into.append(await kernel.execute("1+1", timeout=60) * 1000)
                await anyio.sleep(max(0.0, period - (time.perf_counter() - began)))

        for rate in p.scale_paced_rates:
            period = 1 / rate
            into = paced[rate] = []
            deadline = time.perf_counter() + max(p.scale_paced_seconds, period)
            with anyio.fail_after(p.scale_paced_seconds + period + 120):
                async with anyio.create_task_group() as tg:
                    for i, kernel in enumerate(kernels):
                        tg.start_soon(paced_one, kernel, period, period * i / len(kernels),
                                      deadline, into)
        # Saturation: every socket executes back to back; messages = request + 3 answers.
        count = 0

        async def saturate(kernel: Kernel, deadline: float) -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                await kernel.execute("1+1", timeout=60)
                count += 1

        start = time.perf_counter()
        with anyio.fail_after(p.scale_saturation_seconds + 120):
            async with anyio.create_task_group() as tg:
                for kernel in kernels:
                    tg.start_soon(saturate, kernel, start + p.scale_saturation_seconds)
        saturation = 4 * count / (time.perf_counter() - start)
    finally:
        await _close_many(kernels)
    return ScaleRun(single_ms, paced, saturation, rss_per_socket, open_s)


def _rss_kib(pids: list[int]) -> float | None:
    try:
        return sum(rss_bytes(pid) for pid in pids) / 1024 if pids else None
    except OSError:
        return None


async def scale(targets: dict[str, Target], p: Params, round_: int
                ) -> dict[str, list[ScaleRun]]:
    runs: dict[str, list[ScaleRun]] = {n: [] for n in targets}
    for name in rotation(list(targets), round_):
        runs[name].append(await scale_once(targets[name], p))
        await anyio.sleep(1)  # let closed sockets wind down
    return runs

