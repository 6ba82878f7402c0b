"""The most updates any sliding window held, counted from (time, updates) pairs or arrivals."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def max_in_window(arrivals: Iterable[tuple[float, int]], period: float) -> int:
    """The most updates arriving within any half-open window `[t, t + period)`, however placed
    (`arrivals`: (time, updates) pairs)."""
    points = sorted(arrivals)
    best = total = start = 0
    for t, n in points:
        total += n
        while points[start][0] <= t - period:
            total -= points[start][1]
            start += 1
        best = max(best, total)
    return best


def max_in_any_window(
    arrivals: Iterable[dict[str, Any]], period: float, statuses: Iterable[int | None] | None = None
) -> int:
    """The most users that arrived within any `period` seconds, however the window is placed.

    A window is half-open, [t, t + period), as the sandbox counts it: a request exactly
    `period` seconds after another falls in the next window. With `statuses`, only arrivals
    answered with one of them count (None is a cut connection).
    """
    wanted = None if statuses is None else set(statuses)
    points = (
        (float(a["t"]), int(a["users"]))
        for a in arrivals
        if wanted is None or a.get("status") in wanted
    )
    return max_in_window(points, period)
