"""The front's own figures for Prometheus, in its text format (prometheus_client).

Served on `{base_url}metrics`, authenticated like the rest of the front unless
`authenticate_prometheus` is false (jupyter_server's option of the same name). What is counted:

- every request to each remote, by route template, method and status, with a latency
  histogram (the client reports them, see RemoteClient.request_observer);
- each remote's health as its last request found it, and when that was; whether it is
  healthy for listings and placement (remote/health.py);
- open kernel sockets and the frames and bytes relayed each way, per remote (an observer);
- kernel starts by outcome, replays and dropped replay buffers, culled kernels, restarts of
  the local kernels child.

The relay path must not pay for this: the observer adds two integers per frame into a dict
entry of the kernel, and everything is summed per remote only when Prometheus scrapes.
Frames are counted as the remote sent them; a text frame's size is its length in characters.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Response
from jupyverse_api import App, Router
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from .observers import Frame

if TYPE_CHECKING:
    from jupyverse_auth import Auth

    from .relay.replay import ReplayBuffers

PREFIX = "remote_kernels"
# REST to a remote is milliseconds; kernel starts on clusters take up to minutes.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Ids and names in request paths become placeholders: labels must stay few.
_PLACEHOLDERS = {("api", "kernels"): "{kernel_id}", ("api", "sessions"): "{session_id}",
                 ("api", "kernelspecs"): "{kernel_name}"}
_SAFE_SEGMENT = re.compile(r"^[a-z_]{1,32}$")
# Kernels whose remote is remembered for the per-remote sums (oldest dropped beyond this).
_MAX_KERNELS = 10_000


def route_of(path: str) -> str:
    """The route template of a request path the front sends to a remote:
    `api/kernels/{kernel_id}/restart`, `kernelspecs/{kernel_name}/{file}`, ..."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if parts[0] == "kernelspecs" and len(parts) > 1:
        return "kernelspecs/{kernel_name}" + ("/{file}" if len(parts) > 2 else "")
    placeholder = _PLACEHOLDERS.get((parts[0], parts[1])) if len(parts) > 2 else None
    if placeholder is not None:
        parts[2] = placeholder
    # Anything else the front asks is a fixed word (api, status, ...); a stray value is not.
    return "/".join(p if p.startswith("{") or _SAFE_SEGMENT.match(p) else "{other}"
                    for p in parts[:4])


class Metrics:
    """The registry of one front, fed by its clients, bridges, replay buffers and culling."""

    def __init__(self, remotes: list[str], remote_of: Callable[[str], str | None],
                 replay: ReplayBuffers | None = None) -> None:
        self.remotes = remotes
        self._remote_of = remote_of
        self._replay = replay
        self.registry = CollectorRegistry()
        self._requests = Counter(
            f"{PREFIX}_remote_requests", "Requests the front sent to a remote.",
            ["remote", "method", "route", "status"], registry=self.registry)
        self._latency = Histogram(
            f"{PREFIX}_remote_request_duration_seconds",
            "Time until a remote answered a request (or the request failed).",
            ["remote", "method", "route"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self._starts = Counter(
            f"{PREFIX}_kernel_starts", "Kernel starts the front asked of a remote, by outcome.",
            ["remote", "outcome"], registry=self.registry)
        self._culls = Counter(
            f"{PREFIX}_kernels_culled", "Kernels the front culled for inactivity.",
            ["remote"], registry=self.registry)
        self._health: dict[str, tuple[bool, float]] = {}
        self._sockets: dict[str, int] = {}
        # Per kernel since the last scrape: [frames from, bytes from, frames to, bytes to].
        self._traffic: dict[str, list[int]] = {}
        self._totals: dict[str, list[int]] = {}
        self._kernel_remote: dict[str, str] = {}
        # How many times the local kernels child was restarted (local/kernel_host.py), if
        # there is one.
        self.local_restarts: Callable[[], int] | None = None
        # Each remote's health for listings and placement (remote/health.py), if known.
        self.health: Callable[[], dict[str, bool]] | None = None
        self.registry.register(_Collector(self))

    # ---------------------------------------------------------------- fed by the front

    def remote_request(self, remote: str, method: str, path: str, status: int | None,
                       seconds: float) -> None:
        """One request to a remote; `status` None when no answer came (connection refused,
        reset, timed out)."""
        route = route_of(path)
        self._requests.labels(remote, method, route, str(status or "error")).inc()
        self._latency.labels(remote, method, route).observe(seconds)
        self._health[remote] = (status is not None and status < 500, time.time())

    def kernel_started(self, remote: str, ok: bool) -> None:
        self._starts.labels(remote, "started" if ok else "failed").inc()

    def kernel_culled(self, remote: str) -> None:
        self._culls.labels(remote).inc()

    # ---------------------------------------------------------------- ChannelsObserver

    def opened(self, kernel_id: str, session_id: str) -> None:
        remote = self._remember(kernel_id)
        self._sockets[remote] = self._sockets.get(remote, 0) + 1

    def closed(self, kernel_id: str, session_id: str) -> None:
        remote = self._remember(kernel_id)
        self._sockets[remote] = max(0, self._sockets.get(remote, 0) - 1)

    def from_kernel(self, kernel_id: str, frame: Frame) -> None:
        counts = self._traffic.get(kernel_id)
        if counts is None:
            counts = self._traffic[kernel_id] = [0, 0, 0, 0]
        counts[0] += 1
        counts[1] += len(frame)

    def to_kernel(self, kernel_id: str, frame: Frame) -> None:
        counts = self._traffic.get(kernel_id)
        if counts is None:
            counts = self._traffic[kernel_id] = [0, 0, 0, 0]
        counts[2] += 1
        counts[3] += len(frame)

    def _remember(self, kernel_id: str) -> str:
        remote = self._kernel_remote.get(kernel_id)
        if remote is None:
            remote = self._remote_of(kernel_id) or "unknown"
            if len(self._kernel_remote) >= _MAX_KERNELS:
                self._kernel_remote.pop(next(iter(self._kernel_remote)))
            self._kernel_remote[kernel_id] = remote
        return remote

    # ---------------------------------------------------------------- scraped

    def _traffic_totals(self) -> dict[str, list[int]]:
        traffic, self._traffic = self._traffic, {}
        for kernel_id, counts in traffic.items():
            totals = self._totals.setdefault(self._remember(kernel_id), [0, 0, 0, 0])
            for i, count in enumerate(counts):
                totals[i] += count
        return self._totals

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Collector:
    """What is kept as plain numbers (cheap to update), turned into metrics at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self.metrics
        up = GaugeMetricFamily(f"{PREFIX}_remote_up", "1 if the last request to the remote "
                               "got an answer below 500, 0 if it failed; absent before the "
                               "first request.", labels=["remote"])
        seen = GaugeMetricFamily(f"{PREFIX}_remote_last_contact_timestamp_seconds",
                                 "When the front last sent a request to the remote.",
                                 labels=["remote"])
        for remote, (healthy, when) in m._health.items():
            up.add_metric([remote], 1.0 if healthy else 0.0)
            seen.add_metric([remote], when)
        sockets = GaugeMetricFamily(f"{PREFIX}_kernel_sockets_open",
                                    "Client kernel WebSockets open through the front.",
                                    labels=["remote"])
        for remote in {*m.remotes, *m._sockets}:
            sockets.add_metric([remote], m._sockets.get(remote, 0))
        frames = CounterMetricFamily(f"{PREFIX}_relayed_messages",
                                     "Kernel WebSocket messages relayed, by direction.",
                                     labels=["remote", "direction"])
        sizes = CounterMetricFamily(f"{PREFIX}_relayed_bytes",
                                    "Kernel WebSocket payload relayed, by direction (text "
                                    "frames: characters).", labels=["remote", "direction"])
        for remote, counts in m._traffic_totals().items():
            frames.add_metric([remote, "from_kernel"], counts[0])
            sizes.add_metric([remote, "from_kernel"], counts[1])
            frames.add_metric([remote, "to_kernel"], counts[2])
            sizes.add_metric([remote, "to_kernel"], counts[3])
        yield from (up, seen, sockets, frames, sizes)
        if m.health is not None:
            gauge = GaugeMetricFamily(
                f"{PREFIX}_remote_healthy", "1 if the remote is healthy, 0 while it is sick: "
                "skipped by listings and placement, probed until it answers.",
                labels=["remote"])
            for remote, ok in m.health().items():
                gauge.add_metric([remote], 1.0 if ok else 0.0)
            yield gauge
        if m.local_restarts is not None:
            yield CounterMetricFamily(f"{PREFIX}_local_restarts",
                                      "Restarts of the local kernels child after it ended.",
                                      value=m.local_restarts())
        replay = m._replay
        if replay is not None:
            yield CounterMetricFamily(f"{PREFIX}_replayed_sessions",
                                      "Reconnected clients given what they missed.",
                                      value=replay.replayed_sessions)
            yield CounterMetricFamily(f"{PREFIX}_replayed_messages",
                                      "Messages replayed to reconnected clients.",
                                      value=replay.replayed_messages)
            drops = CounterMetricFamily(f"{PREFIX}_replay_buffers_dropped",
                                        "Replay buffers dropped, by cause.", labels=["cause"])
            for cause, count in sorted(replay.drops.items()):
                drops.add_metric([cause], count)
            yield drops
            yield GaugeMetricFamily(f"{PREFIX}_replay_buffered_bytes",
                                    "Bytes held for away clients now.",
                                    value=replay.total_bytes)


class MetricsRoutes(Router):
    """`GET {base_url}metrics`, as jupyter_server serves `/metrics`."""

    def __init__(self, app: App, auth: Auth, metrics: Metrics, authenticate: bool) -> None:
        super().__init__(app=app)
        router = APIRouter()
        dependencies: list[Any] = [Depends(auth.current_user())] if authenticate else []

        @router.get("/metrics", dependencies=dependencies, include_in_schema=False)
        async def prometheus_metrics() -> Response:
            return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

        self.include_router(router)
