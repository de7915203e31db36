"""The benchmark keeps working: its smoke mode runs to the end and writes its JSON results.

Timings are never checked here (CI machines are shared and noisy); only that every scenario
produced a row with medians and ratios.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

EXPECTED_ROWS = {
    "rest.kernelspecs", "rest.kernels", "rest.sessions", "rest.auth", "ws_open",
    "kernel_start", "execute.v1", "execute.legacy", "stream.v1", "stream.legacy",
    "cost.cpu_per_gb", "cost.rss_stream", "flood.rss_growth", "fanout.exec_s", "fanout.p99",
    "scale.single_rtt", "scale.p99_paced", "scale.msgs_s", "scale.rss_per_socket",
}


def test_benchmark_smoke_mode_completes_and_writes_its_json(tmp_path: Path) -> None:
    """`python -m benchmarks.bench --smoke` exits 0 and writes every scenario's row."""
    out = tmp_path / "smoke.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench", "--smoke", "--json", str(out),
         "--results-dir", str(tmp_path / "results")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the benchmark stop the servers it started (their own process groups).
        process.terminate()
        stdout, stderr = process.communicate(timeout=60)
        raise AssertionError("the smoke benchmark took over 240 s:\n" + stderr[-3000:]) from None
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    results = json.loads(out.read_text())
    assert {"meta", "scenarios", "samples"} <= results.keys()
    assert {"nproc", "cpu_model", "python"} <= results["meta"]["machine"].keys()
    assert EXPECTED_ROWS <= results["scenarios"].keys()
    for key, row in results["scenarios"].items():
        assert {"median", "ratio", "unit"} <= row.keys(), key
        assert {"plugin/direct", "plugin/nginx"} <= row["ratio"].keys(), key
        assert row["median"].get("plugin") is not None, key
    assert "plugin/direct" in stdout, "the ratio table is printed"
