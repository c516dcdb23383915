"""Latency statistics shared by rl-bot and the benchmarks, so every report computes its
percentiles the same way."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float, *, ordered: bool = False) -> float:
    """The nearest-rank ``q``-th percentile (``q`` in 0..100) of *values*.

    The smallest value such that at least ``q`` percent of the values are at or below it:
    of 100 samples, p99 is the 99th smallest and p100 the largest (an index of
    ``int(q/100 · n)`` would report the largest as p99). Pass ``ordered=True`` when
    *values* is already ascending to skip the sort. Raises ``ValueError`` when *values* is
    empty or ``q`` is outside 0..100.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q!r} outside 0..100")
    data = values if ordered else sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(data)))
    return data[min(rank, len(data)) - 1]
