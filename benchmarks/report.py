"""The ratio table, as plain text for the terminal and as Markdown for RESULTS.md."""

from __future__ import annotations

import math
from typing import Any

TARGET_ORDER = ("direct", "plugin", "nginx")


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    value = float(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(value: Any) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _met(value: Any) -> str:
    return {True: "yes", False: "NO", None: ""}[value]


def _spread(values: Any) -> str:
    """The lowest and highest of a row's per-round ratios."""
    known = [v for v in values or () if v is not None]
    if len(known) < 2:
        return ""
    return f"{min(known):.2f}-{max(known):.2f}x"


def rows(results: dict[str, Any]) -> list[list[str]]:
    out = []
    for r in results["scenarios"].values():
        median = r["median"]
        out.append([
            r["title"], r["unit"], *(_num(median.get(t)) for t in TARGET_ORDER),
            _ratio(r["ratio"]["plugin/direct"]), _spread(r.get("round_ratios")),
            _ratio(r["ratio"]["plugin/nginx"]), r.get("target") or "", _met(r.get("met")),
        ])
    return out


HEADER = ["scenario", "unit", *TARGET_ORDER, "plugin/direct", "per round",
          "plugin/nginx", "target", "met"]


def table(results: dict[str, Any]) -> str:
    body = rows(results)
    widths = [max(len(line[i]) for line in [HEADER, *body]) for i in range(len(HEADER))]
    align_right = {2, 3, 4, 5, 6, 7}

    def fmt(line: list[str]) -> str:
        return "  ".join(cell.rjust(w) if i in align_right else cell.ljust(w)
                         for i, (cell, w) in enumerate(zip(line, widths, strict=True)))

    meta = results["meta"]
    m = meta["machine"]
    lines = [
        f"{meta['mode']} run, {meta['params']['rounds']} round(s), {meta['started']}, "
        f"{m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}, "
        f"load {m['loadavg_at_start']}",
        fmt(HEADER),
        fmt(["-" * w for w in widths]),
        *(fmt(line) for line in body),
    ]
    for scale in results["scenarios"].values():
        if not scale["key"].startswith("scale.p99_paced"):
            continue
        for key in ("p99_over_single_p99", "p99_over_single_median"):
            lines.append(f"{scale['title']}: {key}: " + ", ".join(
                f"{t} {_ratio(v)}" for t, v in scale[key].items()))
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    m = meta["machine"]
    p = meta["params"]
    lines = [
        "| " + " | ".join(HEADER) + " |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|---|",
    ]
    for line in rows(results):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |")
    extra = []
    for scale in results["scenarios"].values():
        if not scale["key"].startswith("scale.p99_paced"):
            continue
        for key, what in (("p99_over_single_p99", "1-socket p99"),
                          ("p99_over_single_median", "1-socket median")):
            extra.append(f"- {scale['title']}, over the {what}: "
                         + ", ".join(f"{t} {_ratio(v)}" for t, v in scale[key].items()))
    return "\n".join([
        f"Run: {meta['started']}, {meta['mode']}, {p['rounds']} rounds, "
        f"{meta['duration_s']} s; package at commit {meta['package'].get('commit', '?')}"
        f"{' (+ local changes)' if meta['package'].get('dirty') else ''}.",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}, "
        f"{m['platform']}; load average at start {m['loadavg_at_start']} (shared with other "
        "jobs: compare the ratios, not the absolute numbers).",
        "",
        *lines,
        "",
        *extra,
    ]) + "\n"


BEGIN = "<!-- latest run: written by `python -m benchmarks.bench --markdown` -->"
END = "<!-- end of latest run -->"


def with_latest_run(document: str, section: str) -> str:
    """`document` with the text between the markers replaced by `section` (or appended)."""
    block = f"{BEGIN}\n{section}{END}"
    if BEGIN in document and END in document:
        head, rest = document.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1]
    title = "" if document.strip() else "# Benchmark results\n\n"
    return f"{document}{title}{block}\n"
