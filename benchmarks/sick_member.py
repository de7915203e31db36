"""Listing and kernel start latency through a front whose pool has one hung member.

A pool of two kernels-only Jupyverse remotes behind one front, default timeouts
(connect_timeout 5 s, request_timeout 30 s), one front-kept session on each member; then the
second member's process group is SIGSTOPped (it accepts connections and answers nothing),
and the front is asked `GET /api/kernels` and `GET /api/sessions` ROUNDS times, `/api/status`
once, ROUNDS kernel starts, then SIGCONT and how long until `/api/status` says it is back.
Figures and statuses are printed one a line (benchmarks/RESULTS.md keeps them).

    ROUNDS=3 .venv/bin/python -m benchmarks.sick_member /tmp/sick-member
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

from tests.support.harness import logged_in
from tests.support.servers import front_server, remote_server

ROUNDS = int(os.environ.get("ROUNDS", "3"))


async def timed(api: httpx.AsyncClient, method: str, path: str, **kwargs: Any
                ) -> httpx.Response:
    started = time.perf_counter()
    response = await api.request(method, path, timeout=300, **kwargs)
    print(f"{method} {path}: {response.status_code} in {time.perf_counter() - started:.1f} s",
          flush=True)
    return response


async def main(root: Path) -> None:
    gpu1 = remote_server(root / "gpu1").start()
    gpu2 = remote_server(root / "gpu2").start()
    front = front_server(root / "front", gpu1.url, gpu1.token, extra=[
        "--set", "remote_kernels.remote_name=gpu1", "--set", "remote_kernels.pool=gpu",
        "--set", "remote_kernels.remotes=" + json.dumps([
            {"name": "gpu2", "url": gpu2.url, "pool": "gpu", "token_env": "GPU2_TOKEN"}])])
    front.env["GPU2_TOKEN"] = gpu2.token
    front.start()
    assert gpu2.process is not None
    try:
        async with logged_in(front) as api:
            for i in range(2):  # placement puts one on each member
                response = await api.post("/api/sessions", json={
                    "path": f"n{i}.ipynb", "type": "notebook", "name": "",
                    "kernel": {"name": "python3"}}, timeout=120)
                assert response.status_code == 201, response.text
            os.killpg(gpu2.process.pid, signal.SIGSTOP)
            print("gpu2 SIGSTOPped", flush=True)
            for _ in range(ROUNDS):
                await timed(api, "GET", "/api/kernels")
                await timed(api, "GET", "/api/sessions")
            await timed(api, "GET", "/api/status")
            for _ in range(ROUNDS):
                await timed(api, "POST", "/api/kernels", json={"name": "python3"})
            os.killpg(gpu2.process.pid, signal.SIGCONT)
            started = time.perf_counter()
            while True:
                remotes = (await api.get("/api/status", timeout=300)).json()["remotes"]
                gpu2_status = next(r for r in remotes if r["name"] == "gpu2")
                if gpu2_status.get("healthy", gpu2_status["reachable"]):
                    break
                await anyio.sleep(0.2)
            print(f"gpu2 back in /api/status {time.perf_counter() - started:.1f} s after "
                  "SIGCONT", flush=True)
    finally:
        os.killpg(gpu2.process.pid, signal.SIGCONT)
        front.stop()
        gpu2.stop()
        gpu1.stop()


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]))
