"""Direct remote vs the plugin's front vs Nginx, interleaved, with the ratios that matter.

    .venv/bin/python -m benchmarks.bench            # full run (about 10 minutes)
    .venv/bin/python -m benchmarks.bench --smoke    # tiny sizes, under 2 minutes

Prints a table of medians and the ratios plugin/direct and plugin/nginx, writes the results
as JSON under benchmarks/results/ (and, with --markdown, benchmarks/RESULTS.md). Timings are
reported, never enforced: the "met" column compares with the targets of issue 4.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Any

import anyio

from . import report
from .nginx import nginx_binary
from .scenarios import (
    REST_PATHS,
    FanoutRun,
    Params,
    ScaleRun,
    StreamRun,
    create_session,
    execute_rtt,
    fanout,
    flood,
    kernel_start,
    open_kernel,
    percentile,
    rest,
    scale,
    stream,
    ws_open,
)
from .stack import Stack, Target
from .wire import V1

GROUPS = ("rest", "start", "wsopen", "execute", "stream", "flood", "fanout", "scale")
HERE = Path(__file__).resolve().parent


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _extend(into: dict[str, list[Any]], new: dict[str, list[Any]]) -> None:
    for name, values in new.items():
        into.setdefault(name, []).extend(values)


class Collector:
    """Raw samples per scenario and target, accumulated over the rounds; each `add` is one
    round of one scenario, kept apart too, so that a round's own ratios can be computed."""

    def __init__(self) -> None:
        self.samples: dict[str, dict[str, list[Any]]] = {}
        self.rounds: dict[str, list[dict[str, list[Any]]]] = {}

    def add(self, key: str, new: dict[str, list[Any]]) -> None:
        _extend(self.samples.setdefault(key, {}), new)
        self.rounds.setdefault(key, []).append(new)

    def get(self, key: str) -> dict[str, list[Any]]:
        return self.samples.get(key, {})

    def round_count(self) -> int:
        return max((len(parts) for parts in self.rounds.values()), default=0)

    def only_round(self, index: int) -> Collector:
        """The samples of one round alone."""
        one = Collector()
        for key, parts in self.rounds.items():
            if index < len(parts):
                one.add(key, parts[index])
        return one


async def prepare_kernels(direct: Target, count: int) -> list[str]:
    """Sessions created on the remote directly, outside any measurement; their kernel ids."""
    ids = []
    for i in range(count):
        session = await create_session(direct, f"bench-{i}-{uuid.uuid4().hex[:8]}.ipynb")
        ids.append(session["kernel"]["id"])
    for kernel_id in ids:
        kernel = await open_kernel(direct, kernel_id)
        await kernel.execute("1+1", timeout=120)
        await kernel.close()
    return ids


async def measure(stack: Stack, p: Params, groups: set[str], log: Any) -> Collector:
    await stack.login()
    c = Collector()
    targets = stack.targets
    try:
        if targets and groups - {"scale"}:
            direct = targets["direct"]
            n_kernels = 1 + (p.fanout_sessions if "fanout" in groups else 0)
            log(f"starting {n_kernels} kernels on the remote")
            kernel_ids = await prepare_kernels(direct, n_kernels)
            main_kernel, fanout_kernels = kernel_ids[0], kernel_ids[1:]
            for r in range(p.rounds):
                log(f"round {r + 1}/{p.rounds}")
                if "rest" in groups:
                    for key, samples in (await rest(targets, p, r)).items():
                        c.add(f"rest.{key}", samples)
                    log("  rest done")
                if "start" in groups:
                    c.add("kernel_start", await kernel_start(targets, p, r, direct))
                    log("  kernel start done")
                if "wsopen" in groups:
                    c.add("ws_open", await ws_open(targets, p, r, main_kernel))
                    log("  kernel WebSocket open done")
                if "execute" in groups:
                    c.add("execute.v1", await execute_rtt(targets, p, r, main_kernel, V1))
                    c.add("execute.legacy",
                          await execute_rtt(targets, p, r, main_kernel, None))
                    log("  execute done")
                if "stream" in groups:
                    c.add("stream.v1", await stream(targets, p, r, main_kernel, V1))
                    c.add("stream.legacy", await stream(targets, p, r, main_kernel, None))
                    log("  stream done")
                if "flood" in groups:
                    c.add("flood", await flood(targets, p, r, main_kernel))
                    log("  flood done")
                if "fanout" in groups:
                    c.add("fanout", await fanout(targets, p, r, fanout_kernels))
                    log("  fan-out done")
        if "scale" in groups and stack.fake_targets:
            for r in range(p.rounds):
                log(f"scale round {r + 1}/{p.rounds}")
                c.add("scale", await scale(stack.fake_targets, p, r))
    finally:
        await stack.aclose()
    return c


# ------------------------------------------------------------------------------- aggregation


def _ratios(medians: dict[str, float | None]) -> dict[str, float | None]:
    plugin = medians.get("plugin")

    def ratio(other: str) -> float | None:
        value = medians.get(other)
        if plugin is None or value is None or value == 0:
            return None
        return plugin / value

    return {"plugin/direct": ratio("direct"), "plugin/nginx": ratio("nginx")}


def row(key: str, title: str, unit: str, better: str, medians: dict[str, float | None],
        target: str | None = None, met: bool | None = None, **extra: Any) -> dict[str, Any]:
    return {"key": key, "title": title, "unit": unit, "better": better, "median": medians,
            "ratio": _ratios(medians), "target": target, "met": met, **extra}


def _ratio_met(r: dict[str, Any], limit: float) -> bool | None:
    value = r["ratio"]["plugin/direct"]
    if value is None:
        return None
    return value <= limit if r["better"] == "lower" else value >= limit


def aggregate(c: Collector, params: Params) -> list[dict[str, Any]]:
    """The rows (medians pooled over the rounds), each with its plugin/direct ratio in every
    round on its own (`round_ratios`): how much a ratio moved from round to round."""
    rows = _aggregate(c, params)
    if c.round_count() > 1:
        per_round = [{r["key"]: r["ratio"]["plugin/direct"] for r in _aggregate(
            c.only_round(i), params)} for i in range(c.round_count())]
        for r in rows:
            r["round_ratios"] = [one.get(r["key"]) for one in per_round]
    return rows


def _aggregate(c: Collector, params: Params) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def latency(key: str, title: str, unit: str, limit: float | None,
                scale_: float = 1.0) -> dict[str, Any] | None:
        samples = c.get(key)
        if not samples:
            return None
        medians = {n: (m * scale_ if (m := _median(v)) is not None else None)
                   for n, v in samples.items()}
        r = row(key, title, unit, "lower", medians,
                p99={n: percentile(v, 99) * scale_ for n, v in samples.items()},
                n={n: len(v) for n, v in samples.items()})
        if limit is not None:
            r["target"] = f"<= {limit:.2f}x direct"
            r["met"] = _ratio_met(r, limit)
        rows.append(r)
        return r

    rest_limits = {"kernelspecs": 1.0, "kernels": 1.3, "sessions": 1.3, "auth": None}  # issue 9
    for key in REST_PATHS:
        title = ("GET /auth/user/me (auth check only)" if key == "auth"
                 else f"GET /api/{key}")
        latency(f"rest.{key}", title, "ms", rest_limits[key])
    latency("kernel_start", "kernel start (POST /api/sessions -> kernel_info_reply)", "s",
            1.05)
    latency("ws_open", "kernel WebSocket open (handshake -> kernel_info_reply)", "ms", 1.5)
    latency("execute.v1", "execute 1+1 round trip, v1 protocol", "ms", 1.05)
    latency("execute.legacy", "execute 1+1 round trip, legacy protocol", "ms", 1.05)

    mb = params.stream_mb
    for key, label in (("stream.v1", "v1"), ("stream.legacy", "legacy")):
        runs: dict[str, list[StreamRun]] = c.get(key)
        if not runs:
            continue
        mb_s = {n: _median([x.mb_s for x in v]) for n, v in runs.items()}
        wall = {n: _median([x.wall_s for x in v]) for n, v in runs.items()}
        r = row(key, f"stream {mb} MB of output, {label}: throughput", "MB/s", "higher",
                mb_s, wall_s=wall, target=">= 0.95x direct")
        r["met"] = _ratio_met(r, 0.95)
        rows.append(r)
        rows.append(row(f"{key}.wall", f"stream, {label}: wall time", "s", "lower", wall))
    # Cost: the proxy's own processes while relaying the streams.
    cost_runs: dict[str, list[StreamRun]] = {}
    for key in ("stream.v1", "stream.legacy"):
        _extend(cost_runs, {n: [x for x in v if x.cpu_s is not None]
                            for n, v in c.get(key).items()})
    if cost_runs:
        per_gb = {n: (_median([x.cpu_s / (x.relayed_bytes / 1e9) for x in v])
                      if v else None) for n, v in cost_runs.items()}
        per_gb["direct"] = None
        r = row("cost.cpu_per_gb", "front CPU while relaying streams", "CPU-s/GB", "lower",
                per_gb, target="<= 3.0 CPU-s/GB")
        r["met"] = per_gb.get("plugin") is not None and per_gb["plugin"] <= 3.0
        rows.append(r)
        growth = {n: (max(x.rss_growth_mib or 0.0 for x in v) if v else None)
                  for n, v in cost_runs.items()}
        growth["direct"] = None
        rows.append(row("cost.rss_stream", "front peak RSS growth while relaying streams",
                        "MiB", "lower", growth))
    floods: dict[str, list[StreamRun]] = c.get("flood")
    if floods:
        growth = {n: max(x.rss_growth_mib or 0.0 for x in v) for n, v in floods.items()}
        growth["direct"] = None
        r = row("flood.rss_growth", f"front peak RSS growth, {params.flood_mb} MB flood "
                f"(100 kB messages) to a {params.flood_rate_mb_s:g} MB/s client",
                "MiB", "lower", growth, target="<= 50 MiB",
                read_rate_mb_s={n: _median([x.mb_s for x in v]) for n, v in floods.items()})
        r["met"] = growth.get("plugin") is not None and growth["plugin"] <= 50
        rows.append(r)

    fan: dict[str, list[FanoutRun]] = c.get("fanout")
    if fan:
        rate = {n: _median([x.exec_s for x in v]) for n, v in fan.items()}
        r = row("fanout.exec_s", f"fan-out {params.fanout_sessions} sessions x "
                f"{params.fanout_executes} executes: aggregate", "exec/s",
                "higher", rate, target=">=0.95x direct")
        r["met"] = _ratio_met(r, 0.95)
        rows.append(r)
        p99 = {n: percentile([ms for x in v for ms in x.latencies_ms], 99)
               for n, v in fan.items()}
        rows.append(row("fanout.p99", "fan-out: p99 execute latency", "ms", "lower", p99))

    sc: dict[str, list[ScaleRun]] = c.get("scale")
    if sc:
        single = {n: _median([ms for x in v for ms in x.single_ms]) for n, v in sc.items()}
        single_p99 = {n: percentile([ms for x in v for ms in x.single_ms], 99)
                      for n, v in sc.items()}
        rows.append(row("scale.single_rtt", "fake remote: 1 socket, execute RTT", "ms",
                        "lower", single, p99=single_p99))
        rows.append(row("scale.single_p99", "fake remote: 1 socket, execute RTT p99", "ms",
                        "lower", single_p99))
        for i, rate in enumerate(params.scale_paced_rates):
            paced_p99 = {n: percentile([ms for x in v for ms in x.paced_ms[rate]], 99)
                         for n, v in sc.items()}
            vs_single = {n: (paced_p99[n] / single_p99[n] if single_p99.get(n) else None)
                         for n in sc}
            vs_median = {n: (paced_p99[n] / single[n] if single.get(n) else None) for n in sc}
            key = "scale.p99_paced" if i == 0 else f"scale.p99_paced_{rate:g}"
            r = row(key, f"fake remote: {params.scale_sockets} sockets, "
                    f"{rate:g} exec/s each, p99", "ms", "lower", paced_p99,
                    p99_over_single_p99=vs_single, p99_over_single_median=vs_median,
                    target="<= 3x its 1-socket p99")
            r["met"] = vs_single.get("plugin") is not None and vs_single["plugin"] <= 3
            rows.append(r)
        r = row("scale.msgs_s", f"fake remote: {params.scale_sockets} sockets, saturated",
                "msg/s", "higher", {n: _median([x.saturation_msgs_s for x in v])
                                    for n, v in sc.items()}, target=">= 0.80x direct")
        r["met"] = _ratio_met(r, 0.8)
        rows.append(r)
        # The first round shows it best: later rounds reuse the memory the first one freed.
        per_socket = {n: max((x.rss_per_socket_kib for x in v
                              if x.rss_per_socket_kib is not None), default=None)
                      for n, v in sc.items()}
        per_socket["direct"] = None
        r = row("scale.rss_per_socket", "fake remote: proxy RSS per open socket", "KiB",
                "lower", per_socket, target="<= 42 KiB")
        r["met"] = per_socket.get("plugin") is not None and per_socket["plugin"] <= 42
        rows.append(r)
    return rows


def raw_samples(c: Collector) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if hasattr(value, "__dataclass_fields__"):
            return {k: getattr(value, k) for k in value.__dataclass_fields__}
        return value

    return {key: {n: [plain(x) for x in v] for n, v in by_target.items()}
            for key, by_target in c.samples.items()}


# ------------------------------------------------------------------------------------- main


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes and one round (checks that the benchmark works)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; smoke 1)")
    parser.add_argument("--only", default=",".join(GROUPS),
                        help=f"comma-separated scenario groups: {','.join(GROUPS)}")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results",
                        help="where each run's JSON is kept (default benchmarks/results/)")
    parser.add_argument("--markdown", action="store_true",
                        help="also write benchmarks/RESULTS.md from this run")
    parser.add_argument("--no-nginx", action="store_true", help="skip the Nginx target")
    parser.add_argument("--keep", action="store_true", help="keep the servers' work directory")
    parser.add_argument("--front-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a --set option of the plugin's fronts, e.g. "
                             "remote_kernels.event_loop=uvloop (repeatable)")
    args = parser.parse_args(argv)

    p = Params.smoke() if args.smoke else Params()
    if args.rounds:
        p.rounds = args.rounds
    groups = {g.strip() for g in args.only.split(",") if g.strip()}
    unknown = groups - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups: {', '.join(sorted(unknown))}")
    with_nginx = not args.no_nginx
    if with_nginx and nginx_binary() is None:
        print("warning: nginx is not installed; measuring without it "
              "(benchmarks/run.sh installs it)", file=sys.stderr)
        with_nginx = False

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="fps-rk-bench-"))
    stack = Stack(workdir, real=bool(groups - {"scale"}), fake="scale" in groups,
                  nginx=with_nginx, front_options=args.front_set)
    meta = {"front_options": args.front_set,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "mode": "smoke" if args.smoke else "full", "groups": sorted(groups),
            "params": vars(p), "machine": machine(),
            "package": _package_state()}
    began = time.monotonic()
    try:
        log(f"starting servers in {workdir}")
        stack.start()
        log("server pids (e.g. for py-spy record --gil -p PID): " + ", ".join(
            f"{name} {server.process.pid}" for name, server in (
                ("remote", stack.remote), ("front", stack.front),
                ("fake remote", stack.fake_remote), ("fake front", stack.fake_front),
                ("nginx", stack.nginx)) if server is not None and server.process is not None))
        collected = anyio.run(measure, stack, p, groups, log)
    except KeyboardInterrupt:
        log("interrupted: stopping the servers")
        return 130
    finally:
        stack.stop()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["duration_s"] = round(time.monotonic() - began, 1)
    results = {"meta": meta, "scenarios": {r["key"]: r for r in aggregate(collected, p)},
               "samples": raw_samples(collected)}
    text = json.dumps(results, indent=1, default=str)
    out_dir = args.results_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    paths = [out_dir / f"{stamp}-{meta['mode']}.json", out_dir / "latest.json"]
    if args.json:
        paths.append(args.json)
    for path in paths:
        path.write_text(text)
    print(report.table(results))
    log(f"results: {paths[0]}")
    if args.markdown:
        path = HERE / "RESULTS.md"
        path.write_text(report.with_latest_run(
            path.read_text() if path.exists() else "", report.markdown(results)))
        log(f"wrote the latest run into {path}")
    return 0


def _package_state() -> dict[str, Any]:
    """Which copy of the package the front ran, and at which commit (for comparing runs)."""
    import subprocess

    import fps_remote_kernels

    state: dict[str, Any] = {"path": str(Path(fps_remote_kernels.__file__).parent)}
    try:
        state["commit"] = subprocess.run(
            ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10).stdout.strip()
        state["dirty"] = bool(subprocess.run(
            ["git", "-C", str(HERE.parent), "status", "--porcelain", "fps_remote_kernels"],
            capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return state


if __name__ == "__main__":
    sys.exit(main())
