"""Repeated measurements as a median with its range, so a reader sees the host's noise."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        ordered = sorted(values)
        if not ordered:
            raise ValueError("a spread needs at least one value")
        return cls(statistics.median(ordered), ordered[0], ordered[-1])

    def show(self, spec: str, unit: str = "") -> str:
        """'12,345 rows/s (11,000–13,000)': the median, then min–max."""
        median, low, high = (format(v, spec) for v in (self.median, self.low, self.high))
        if low == high:
            return f"{median}{unit}"
        return f"{median}{unit} ({low}–{high})"
