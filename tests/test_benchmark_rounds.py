"""The benchmark says how much a ratio moved between rounds, not only the pooled median."""

from __future__ import annotations

import pytest

from benchmarks import report
from benchmarks.bench import Collector, aggregate
from benchmarks.scenarios import Params

pytestmark = pytest.mark.fast


def _collector(rounds: list[tuple[list[float], list[float]]]) -> Collector:
    c = Collector()
    for direct, plugin in rounds:
        c.add("execute.v1", {"direct": direct, "plugin": plugin})
    return c


def test_each_round_gets_its_own_ratio_and_the_table_shows_their_range() -> None:
    """Two rounds at 1.10x and 1.40x: the row keeps both, the table prints 1.10-1.40x."""
    c = _collector([([1.0, 1.0, 1.0], [1.1, 1.1, 1.1]), ([2.0, 2.0, 2.0], [2.8, 2.8, 2.8])])
    (row,) = aggregate(c, Params())
    assert row["round_ratios"] == pytest.approx([1.1, 1.4])
    # The pooled median is over all six samples of each target, not a mean of the rounds.
    assert row["median"] == {"direct": 1.5, "plugin": 1.95}
    line = next(line for line in report.rows({"scenarios": {row["key"]: row}}))
    assert "1.10-1.40x" in line


def test_a_single_round_has_no_range() -> None:
    """One round (the smoke run): no per-round ratios, an empty cell."""
    (row,) = aggregate(_collector([([1.0], [1.2])]), Params())
    assert "round_ratios" not in row
    assert report.rows({"scenarios": {row["key"]: row}})[0][6] == ""
