"""A virtual clock for pace tests: an event loop whose time moves only when every task waits.

A pace figure measured on the real clock depends on how busy the machine is: a test that
asserts "windows at least 97% full" flakes when the scheduler stalls the loop. On this loop
the clock jumps to the next timer whenever nothing is runnable, so a minute of sending
takes milliseconds, and the figures are exact and the same on every run: the pace
promises are asserted here, and the real-clock tests keep only margins that cannot flake.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


class _VirtualSelector:
    """Answers I/O as usual, but an idle wait advances virtual time instead of sleeping."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        events = self._real.select(0)
        if not events and timeout is not None:
            # At least a microsecond per turn, as on a real clock: a timer computed to fire
            # "now" after float rounding (aiolimiter's) would otherwise spin forever.
            self._loop.now += max(timeout, 1e-6)
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock only moves when every task is waiting on a timer."""

    def __init__(self) -> None:
        self.now = 1_000.0
        super().__init__(selector=_VirtualSelector(self))  # type: ignore[arg-type]

    def time(self) -> float:
        return self.now


def run_virtual(make: Callable[[VirtualTimeLoop], Awaitable[T]]) -> T:
    """Run `make(loop)` to completion on a fresh virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(make(loop))
    finally:
        loop.close()


Interval = tuple[int, float, float]  # (updates, granted_at, latest arrival: release + hold)


def worst_window(intervals: list[Interval], period: float) -> int:
    """The most updates any half-open window of `period` can see, each request's arrival put
    anywhere between its grant and its completion (so both the grant-time and the
    completion-time placements, and everything between, are covered)."""
    n = np.array([i[0] for i in intervals])
    granted = np.array([i[1] for i in intervals])
    released = np.array([i[2] for i in intervals])
    worst = 0
    # A window [a, a + period) can hold request i iff granted_i < a + period and released_i >= a;
    # the most is reached with `a` at some request's completion.
    for start in released:
        caught = (released >= start) & (granted < start + period)
        worst = max(worst, int(n[caught].sum()))
    return worst
