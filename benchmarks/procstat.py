"""CPU time and memory of server processes, read from /proc (Linux)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` so far (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (writing 5 to clear_refs); False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class Usage:
    cpu_s: float
    rss_start_mib: float
    rss_peak_mib: float
    rss_end_mib: float

    @property
    def rss_growth_mib(self) -> float:
        return self.rss_peak_mib - self.rss_start_mib


@dataclass
class Meter:
    """CPU seconds and peak RSS of a set of processes over a `with` block.

    Peak RSS comes from the kernel's own high-water mark (VmHWM, reset at the start) where it
    can be reset, and from sampling every 10 ms in any case: the larger of the two is kept.
    """

    pids: Callable[[], Iterable[int]]
    interval: float = 0.01
    _pids: list[int] = field(default_factory=list)
    _cpu0: float = 0.0
    _rss0: int = 0
    _peak: int = 0
    _hwm_ok: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    usage: Usage | None = None

    def _rss(self) -> int:
        total = 0
        for pid in self._pids:
            try:
                total += rss_bytes(pid)
            except OSError:
                pass
        return total

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._rss())

    def __enter__(self) -> Meter:
        self._pids = list(self.pids())
        self._hwm_ok = all(reset_peak_rss(pid) for pid in self._pids)
        self._rss0 = self._peak = self._rss()
        self._cpu0 = sum(cpu_seconds(pid) for pid in self._pids)
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(5)
        cpu = sum(cpu_seconds(pid) for pid in self._pids) - self._cpu0
        end = self._rss()
        peak = max(self._peak, end)
        if self._hwm_ok:
            try:
                peak = max(peak, sum(status_kib(pid, "VmHWM") * 1024 for pid in self._pids))
            except (OSError, KeyError):
                pass
        mib = 1024 * 1024
        self.usage = Usage(cpu, self._rss0 / mib, peak / mib, end / mib)


def wait_quiet(pids: Callable[[], Iterable[int]], seconds: float = 0.3,
               limit: float = 5.0) -> None:
    """Wait (bounded) until the processes stop using CPU, so one run does not bill the next."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(p) for p in pids())
        time.sleep(seconds)
        if sum(cpu_seconds(p) for p in pids()) - before < 0.02:
            return
