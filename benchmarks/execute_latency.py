"""Execute latency on a remote kernel through a front: the execute route (server-side execution,
measured until a room client sees the cell idle with its count) vs the kernel WebSocket
(execute_request until execute_reply and iopub idle). Interleaved runs; medians printed.

    .venv/bin/python -m benchmarks.execute_latency [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from tests.conftest import cookie_header, login, ws_url
from tests.support.collab import code, execute, new_notebook, room, start_kernel
from tests.support.kernel_client import KernelConnection
from tests.support.servers import front_server, remote_server


async def measure(runs: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        remote = remote_server(Path(tmp) / "remote").start()
        front = front_server(Path(tmp) / "front", remote.url, remote.token,
                             collaboration=True).start()
        try:
            api = await login(front)
            kernel_id = await start_kernel(api)
            doc = await new_notebook(api, "bench.ipynb", [code("1", "c1")])
            results: dict[str, list[float]] = {"route_answer": [], "route_idle": [],
                                               "websocket": []}
            conn = await KernelConnection.open(ws_url(front, kernel_id),
                                               cookie=cookie_header(api))
            async with room(front, api, doc) as view:
                for attempt in range(runs + 3):  # 3 warm-up runs
                    started = time.perf_counter()
                    await conn.execute("1")
                    ws = time.perf_counter() - started

                    before = view.content("c1")["execution_count"]
                    started = time.perf_counter()
                    response = await execute(api, kernel_id, doc, "c1")
                    answered = time.perf_counter() - started
                    assert response.status_code == 200, response.text
                    while not (view.state("c1") == "idle"
                               and view.content("c1")["execution_count"] not in (None, before)):
                        await anyio.sleep(0.0005)
                    idle = time.perf_counter() - started
                    if attempt >= 3:
                        results["websocket"].append(ws)
                        results["route_answer"].append(answered)
                        results["route_idle"].append(idle)
            await conn.close()
            await api.aclose()
            return results
        finally:
            front.stop()
            remote.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    results = anyio.run(measure, args.runs)
    for name, values in results.items():
        print(f"{name:>13}: median {1000 * statistics.median(values):7.2f} ms  "
              f"(min {1000 * min(values):.2f}, max {1000 * max(values):.2f}, n={len(values)})")


if __name__ == "__main__":
    main()
