"""A pool member that restarts loses its kernels: the front's placement counts what each
member runs now, not what it remembers (two real Jupyverse members, one restarted)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import anyio
import httpx
import pytest

from tests.support.harness import logged_in
from tests.support.servers import Server, front_server, remote_server

pytestmark = pytest.mark.anyio


async def kernels_on(server: Server) -> set[str]:
    """The ids of the kernels a Jupyverse remote runs, asked directly."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        await client.get("/api/status", params={"token": server.token})
        response = await client.get("/api/kernels")
        assert response.status_code == 200, response.text
        return {k["id"] for k in response.json()}


async def start_one_after_another(api: httpx.AsyncClient, count: int) -> list[str]:
    """Start `count` kernels on the pool's spec, each after the previous one answered (as a
    script does), without listing kernels in between."""
    ids = []
    with anyio.fail_after(60 + 30 * count):
        for _ in range(count):
            response = await api.post("/api/kernels", json={"name": "python3"}, timeout=180)
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
    return ids


async def test_kernels_gone_with_a_restarted_member_do_not_steer_placement(
        tmp_path: Path) -> None:
    """After a member restarts (its kernels gone), /api/status counts none on it and new
    kernels fill it first: of six starts after two kernels on each member, four go to the
    restarted member, two to the other."""
    first = remote_server(tmp_path / "a").start()
    second = remote_server(tmp_path / "b").start()
    front = front_server(tmp_path / "front", first.url, first.token, extra=[
        "--set", "remote_kernels.remote_name=a", "--set", "remote_kernels.pool=gpu",
        "--set", "remote_kernels.remotes=" + json.dumps([
            {"name": "b", "url": second.url, "pool": "gpu", "token_env": "B_TOKEN"}]),
    ])
    front.env["B_TOKEN"] = second.token
    front.start()
    try:
        async with logged_in(front) as api:
            before = await start_one_after_another(api, 4)
            assert len(set(before) & await kernels_on(second)) == 2
            second.stop()
            second.start()  # same port and token, no kernels
            assert not await kernels_on(second)
            (pool,) = (await api.get("/api/status")).json()["pools"]
            assert {m["name"]: m["kernels"] for m in pool["members"]} == {"a": 2, "b": 0}
            after = await start_one_after_another(api, 6)
            on_second = await kernels_on(second)
            placed = Counter("b" if k in on_second else "a" for k in after)
            assert placed == {"b": 4, "a": 2}, placed
            status = (await api.get("/api/status")).json()
            (pool,) = status["pools"]
            assert {m["name"]: m["kernels"] for m in pool["members"]} == {"a": 4, "b": 4}
    finally:
        front.stop()
        second.stop()
        first.stop()
