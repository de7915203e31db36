"""The front's Prometheus figures without a front: route templates (route_of) and what the
Metrics registry exposes for what it was told (the scraped front is in test_metrics.py)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fps_remote_kernels.metrics import Metrics, route_of

pytestmark = pytest.mark.fast

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(metrics: Metrics) -> Samples:
    text = metrics.exposition().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


@pytest.mark.parametrize(("path", "route"), [
    ("api/kernels", "api/kernels"),
    ("/api/kernelspecs", "api/kernelspecs"),
    ("api/kernels/8c3f1f5e-1c4e-4b8a-9d2e-0123456789ab", "api/kernels/{kernel_id}"),
    ("api/kernels/8c3f/restart", "api/kernels/{kernel_id}/restart"),
    ("api/kernels/8c3f/channels?session_id=s", "api/kernels/{kernel_id}/channels"),
    ("api/sessions/abc", "api/sessions/{session_id}"),
    ("api/kernelspecs/python3", "api/kernelspecs/{kernel_name}"),
    ("kernelspecs/python3", "kernelspecs/{kernel_name}"),
    ("kernelspecs/python3/logo-64x64.png", "kernelspecs/{kernel_name}/{file}"),
    ("api/status?token=secret", "api/status"),
])
def test_request_paths_become_route_templates(path: str, route: str) -> None:
    """Ids, names and query strings never become label values: each path has its template."""
    assert route_of(path) == route


@pytest.mark.parametrize(("path", "route"), [
    ("API/Weird/123", "{other}/{other}/{other}"),
    ("a/b/c/d/e/f", "a/b/c/d"),
])
def test_unexpected_paths_are_bounded(path: str, route: str) -> None:
    """A segment that is not a fixed lower-case word is {other}; at most four segments."""
    assert route_of(path) == route


def test_requests_are_counted_by_remote_route_method_and_status() -> None:
    """Each request counts once under its template; no answer counts as status `error`."""
    metrics = Metrics(["a", "b"], lambda kernel_id: None)
    metrics.remote_request("a", "GET", "api/kernels/k1", 200, 0.01)
    metrics.remote_request("a", "GET", "api/kernels/k2", 200, 0.02)
    metrics.remote_request("b", "POST", "api/kernels", None, 0.5)
    found = samples(metrics)
    assert value(found, "remote_kernels_remote_requests_total", remote="a", method="GET",
                 route="api/kernels/{kernel_id}", status="200") == 2
    assert value(found, "remote_kernels_remote_requests_total", remote="b", method="POST",
                 route="api/kernels", status="error") == 1
    assert value(found, "remote_kernels_remote_request_duration_seconds_count", remote="a",
                 method="GET", route="api/kernels/{kernel_id}") == 2


def test_a_remote_is_up_until_a_request_fails_or_answers_5xx() -> None:
    """remote_up is absent before the first request, 1 after a 4xx, 0 after a 5xx or none."""
    metrics = Metrics(["a", "b", "c"], lambda kernel_id: None)
    assert value(samples(metrics), "remote_kernels_remote_up", remote="a") is None
    metrics.remote_request("a", "GET", "api/kernels/x", 404, 0.01)
    metrics.remote_request("b", "GET", "api/kernels", 502, 0.01)
    metrics.remote_request("c", "GET", "api/kernels", None, 0.01)
    found = samples(metrics)
    assert [value(found, "remote_kernels_remote_up", remote=r) for r in "abc"] == [1, 0, 0]


def test_sockets_and_relayed_traffic_are_summed_per_remote() -> None:
    """Sockets and relayed frames and bytes are summed per remote (`unknown` if none)."""
    metrics = Metrics(["a", "b"], {"k1": "a", "k2": "a"}.get)
    metrics.opened("k1", "s1")
    metrics.opened("k2", "s2")
    metrics.opened("stray", "s3")
    metrics.closed("k2", "s2")
    metrics.from_kernel("k1", b"12345")
    metrics.from_kernel("k2", b"123")
    metrics.to_kernel("k1", "abc")
    found = samples(metrics)
    sockets = "remote_kernels_kernel_sockets_open"
    assert value(found, sockets, remote="a") == 1
    assert value(found, sockets, remote="b") == 0
    assert value(found, sockets, remote="unknown") == 1
    assert value(found, "remote_kernels_relayed_messages_total", remote="a",
                 direction="from_kernel") == 2
    assert value(found, "remote_kernels_relayed_bytes_total", remote="a",
                 direction="from_kernel") == 8
    assert value(found, "remote_kernels_relayed_bytes_total", remote="a",
                 direction="to_kernel") == 3


def test_traffic_totals_keep_growing_across_scrapes() -> None:
    """What was relayed before a scrape is still in the next one (counters, not deltas)."""
    metrics = Metrics(["a"], lambda kernel_id: "a")
    metrics.from_kernel("k1", b"xx")
    samples(metrics)
    metrics.from_kernel("k1", b"yyy")
    assert value(samples(metrics), "remote_kernels_relayed_bytes_total", remote="a",
                 direction="from_kernel") == 5


def test_closing_more_sockets_than_opened_never_goes_negative() -> None:
    """A close without an open (a late event) leaves the count at zero."""
    metrics = Metrics(["a"], lambda kernel_id: "a")
    metrics.closed("k1", "s1")
    assert value(samples(metrics), "remote_kernels_kernel_sockets_open", remote="a") == 0


def test_kernel_starts_and_culls_are_counted_by_outcome() -> None:
    """Started and failed starts, and culled kernels, are counters per remote."""
    metrics = Metrics(["a"], lambda kernel_id: "a")
    metrics.kernel_started("a", True)
    metrics.kernel_started("a", False)
    metrics.kernel_started("a", True)
    metrics.kernel_culled("a")
    found = samples(metrics)
    assert value(found, "remote_kernels_kernel_starts_total", remote="a",
                 outcome="started") == 2
    assert value(found, "remote_kernels_kernel_starts_total", remote="a", outcome="failed") == 1
    assert value(found, "remote_kernels_kernels_culled_total", remote="a") == 1


def test_local_restarts_are_exposed_only_with_local_kernels() -> None:
    """remote_kernels_local_restarts appears once the local child's count is given."""
    metrics = Metrics(["local"], lambda kernel_id: "local")
    assert not any(name.startswith("remote_kernels_local_restarts")
                   for name, _ in samples(metrics))
    metrics.local_restarts = lambda: 3
    assert value(samples(metrics), "remote_kernels_local_restarts_total") == 3
