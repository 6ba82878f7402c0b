"""Settled rows as closed ranges of row numbers: building, merging and subtracting them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np


def to_ranges(rows: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged closed ranges covering `rows` (vectorised: a chunk's unchanged rows
    are tens of thousands of numbers a mark)."""
    numbers = np.unique(np.fromiter(rows, dtype=np.int64))
    if not len(numbers):
        return []
    breaks = np.flatnonzero(np.diff(numbers) != 1)
    firsts = np.concatenate([numbers[:1], numbers[breaks + 1]]).tolist()
    lasts = np.concatenate([numbers[breaks], numbers[-1:]]).tolist()
    return list(zip(firsts, lasts, strict=True))


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def subtract_ranges(
    ranges: list[tuple[int, int]], minus: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Merged `ranges` without the rows of merged `minus`."""
    result: list[tuple[int, int]] = []
    for first, last in ranges:
        for cut_first, cut_last in minus:
            if cut_last < first or cut_first > last:
                continue
            if cut_first > first:
                result.append((first, cut_first - 1))
            first = cut_last + 1
            if first > last:
                break
        if first <= last:
            result.append((first, last))
    return result


@dataclass(frozen=True)
class SettledRows:
    """What an earlier run settled in one source file (`dead` ranges: dead-lettered)."""

    ranges: list[tuple[int, int]]
    dead: list[tuple[int, int]] = field(default_factory=list)
    # Rows dead-lettered in delivery and not accepted since: a rerun sends them again.
    retry: list[tuple[int, int]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)

    @property
    def contiguous_through(self) -> int:
        """The last row of the unbroken settled run starting at row 1 (0 if none)."""
        if self.ranges and self.ranges[0][0] == 1:
            return self.ranges[0][1]
        return 0
