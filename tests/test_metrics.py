"""The front's Prometheus metrics: served on /metrics behind the front's login (unless
authenticate_prometheus=false), counting what operators watch: requests to each remote by
route and status with their latency, remote health, open kernel sockets, bytes relayed each
way, kernel starts and failures."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import cookie_header, ws_url
from tests.support.harness import logged_in
from tests.support.kernel_client import KernelConnection
from tests.support.servers import Server, free_port, front_server, jupyter_server_remote

pytestmark = pytest.mark.anyio

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def metered_front(remote: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = front_server(tmp_path_factory.mktemp("front-metrics"), remote.url,
                          remote.token).start()
    yield server
    server.stop()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, by (name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> dict:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_metrics_need_the_fronts_login(metered_front: Server) -> None:
    """Without the front's cookie or token /metrics is refused, as every other route."""
    async with httpx.AsyncClient(base_url=metered_front.url) as anonymous:
        response = await anonymous.get("/metrics")
    assert response.status_code in (401, 403)


async def test_a_kernels_life_is_counted(metered_front: Server, remote: Server) -> None:
    """A session started, executed on over its socket and deleted shows as one kernel start,
    requests by route template (no ids in labels) with latencies, the remote up, one open
    socket while it is open and none after, and bytes relayed both ways."""
    async with logged_in(metered_front) as client:
        response = await client.post("/api/sessions", json={
            "path": "m.ipynb", "type": "notebook", "name": "m.ipynb",
            "kernel": {"name": "python3"}})
        assert response.status_code == 201, response.text
        session = response.json()
        conn = await KernelConnection.open(ws_url(metered_front, session["kernel"]["id"]),
                                           cookie=cookie_header(client))
        try:
            assert (await conn.execute("print('x' * 1000)")).stdout == "x" * 1000 + "\n"
            during = await scrape(client)
        finally:
            await conn.close()
        assert (await client.delete(f"/api/sessions/{session['id']}")).status_code == 204

        async def socket_closed() -> dict:
            while True:
                after = await scrape(client)
                if value(after, "remote_kernels_kernel_sockets_open", remote="remote") == 0:
                    return after
                await anyio.sleep(0.1)

        with anyio.fail_after(10):
            after = await socket_closed()
        text = (await client.get("/metrics")).text

    assert value(during, "remote_kernels_kernel_sockets_open", remote="remote") == 1
    assert value(after, "remote_kernels_kernel_starts_total", remote="remote",
                 outcome="started") == 1
    assert value(after, "remote_kernels_remote_requests_total", remote="remote",
                 method="POST", route="api/sessions", status="201") == 1
    assert value(after, "remote_kernels_remote_requests_total", remote="remote",
                 method="GET", route="api/kernels/{kernel_id}/channels", status="101") == 1
    assert value(after, "remote_kernels_remote_request_duration_seconds_count",
                 remote="remote", method="POST", route="api/sessions") == 1
    assert value(after, "remote_kernels_remote_up", remote="remote") == 1
    assert value(after, "remote_kernels_relayed_bytes_total", remote="remote",
                 direction="from_kernel") > 1000
    assert value(after, "remote_kernels_relayed_bytes_total", remote="remote",
                 direction="to_kernel") > 0
    assert value(after, "remote_kernels_relayed_messages_total", remote="remote",
                 direction="to_kernel") >= 1
    assert not UUID.search(text), "ids in metric labels"
    assert remote.token not in text and metered_front.token not in text


async def test_an_unreachable_remote_shows_down(tmp_path: Path) -> None:
    """With the remote down, its requests count as status `error` and remote_up is 0; with
    authenticate_prometheus=false no login is needed."""
    front = front_server(tmp_path, f"http://127.0.0.1:{free_port()}/", "t", extra=[
        "--set", "remote_kernels.kind=jupyter_server",
        "--set", "remote_kernels.authenticate_prometheus=false"]).start()
    try:
        async with logged_in(front) as client:
            response = await client.post("/api/kernels", json={"name": "python3"})
            assert response.status_code in (502, 503), response.text
        async with httpx.AsyncClient(base_url=front.url) as anonymous:
            found = await scrape(anonymous)
    finally:
        front.stop()
    assert value(found, "remote_kernels_remote_up", remote="remote") == 0
    assert value(found, "remote_kernels_remote_requests_total", remote="remote",
                 method="GET", route="api/kernelspecs", status="error") >= 1


async def test_a_kernel_the_remote_cannot_start_counts_as_failed(tmp_path: Path) -> None:
    """A real jupyter_server whose kernelspec cannot run answers the start with an error: the
    front counts a failed kernel start (and no started one)."""
    remote = jupyter_server_remote(tmp_path / "js")
    broken = tmp_path / "js" / f"{remote.name}-data" / "kernels" / "broken"
    broken.mkdir(parents=True)
    (broken / "kernel.json").write_text(json.dumps({
        "argv": [str(tmp_path / "no-such-kernel"), "-f", "{connection_file}"],
        "display_name": "Broken", "language": "python"}))
    remote.start()
    front = front_server(tmp_path / "front", remote.url, remote.token).start()
    try:
        async with logged_in(front) as client:
            response = await client.post("/api/kernels", json={"name": "broken"})
            assert response.status_code >= 500, response.text
            found = await scrape(client)
    finally:
        front.stop()
        remote.stop()
    assert value(found, "remote_kernels_kernel_starts_total", remote="remote",
                 outcome="failed") == 1
    assert value(found, "remote_kernels_kernel_starts_total", remote="remote",
                 outcome="started") == 0
