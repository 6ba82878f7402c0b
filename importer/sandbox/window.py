"""The sandbox's own rate window: what it answers 429 to, as MoEngage counts."""

from __future__ import annotations

import math
from collections import deque

from importer import moengage


class RateWindow:
    """User updates counted over the last `period` seconds: a deque and a running sum."""

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self._entries: deque[tuple[float, int]] = deque()
        self._total = 0

    def _expire(self, now: float) -> None:
        horizon = now - self.period
        while self._entries and self._entries[0][0] <= horizon:
            self._total -= self._entries.popleft()[1]

    def wait_seconds(self, now: float, users: int) -> float | None:
        """None if `users` more fit now; else the seconds until enough of the window expires."""
        self._expire(now)
        excess = self._total + users - self.limit
        if excess <= 0:
            return None
        if users > self.limit:
            return self.period  # never fits; tell the client to come back a period later
        freed = 0
        for arrived, count in self._entries:  # only walked when refusing, and stops early
            freed += count
            if freed >= excess:
                return arrived + self.period - now
        return self.period

    def add(self, now: float, users: int) -> None:
        if users:
            self._entries.append((now, users))
            self._total += users

    def headers(self, now: float) -> dict[str, str]:
        """MoEngage's rate-limit headers for this window: limit, room left, seconds to reset."""
        self._expire(now)
        reset = self._entries[0][0] + self.period - now if self._entries else self.period
        return {
            moengage.RATE_LIMIT_LIMIT_HEADER: str(self.limit),
            moengage.RATE_LIMIT_REMAINING_HEADER: str(max(0, self.limit - self._total)),
            moengage.RATE_LIMIT_RESET_HEADER: str(max(1, math.ceil(reset))),
        }
