"""The window promise: never more than `updates` user updates in any `period_seconds` window.

Why not aiolimiter alone: a leaky bucket bounds the *average* rate, not every window. A fresh
``AsyncLimiter(max_rate, period)`` lets ``max_rate`` through at once and keeps leaking, so a
window that straddles the start sees nearly twice the limit (aiolimiter issues 90, 200, 298).

The hard guarantee is a ledger of grants. The server sees a request arrive at some moment
after our grant (before the request is written); we cannot observe which. When an HTTP answer
comes back, the request arrived before it, so before our release ``c``. Without an answer (a
timeout, a broken connection, a cancellation) the request may still be in transit when we
give up (a proxy, the kernel's send buffer after close), so the caller bounds how much later
it can arrive: ``release(extra_hold=h)``, ``h = 0`` after an answer. So a permit of ``n``
granted at ``g`` and released at ``c`` with hold ``h`` occupies ``n`` slots from ``g`` until
``c + h + period`` (forever while in flight), and a grant of ``n`` at time ``t`` is allowed
only if ``occupied(t) + n <= updates``.

Why this keeps the promise, for every half-open window ``[a, a + period)``: take the requests
arriving in it, and among them the one granted last, at ``g*``. Every other one, R, was
granted before ``g*`` and arrived at or after ``a``, and it arrives by ``c_R + h_R``, so
``c_R + h_R >= a`` (or it is still in flight); and ``g* < a + period <= c_R + h_R + period``.
So R still occupied its slots at ``g*``, and the grant at ``g*`` was allowed only because all
of them together, plus its own, fit in ``updates``. Hence no window sees more than
``updates`` arrivals, wherever in ``[g, c + h]`` each one really landed, retries included
(each attempt takes its own permit). The promise is as good as the holds: ``h`` must bound
how late an unanswered request can still arrive.

Throughput: a slot is reused every ``period + latency``, so a long run moves
``updates * period / (period + latency)``: over 99% for a 60 s period and 0.5 s latency.

Smoothness: the ledger alone would allow one burst per period. An aiolimiter leaky bucket
at ``updates / period`` (plus 5% headroom, so that in steady state the ledger binds and the
pacer adds no wait of its own) with a small bucket (about 2% of ``updates``) paces grants
before the ledger is asked, so traffic flows evenly. The pacer only shapes; the ledger
guarantees. With mixed batch sizes a waiting batch leaves some freed slots idle until enough
expire; measured, a long run still moves about 98.5% of the limit (6 s period, 20 ms latency).

A workspace whose real limit is below the configured one answers 429: then an adaptive
ceiling (``AdaptiveRate``, AIMD) paces callers under the turn before the pacer and the
ledger are asked. It can only delay a grant, never allow one the ledger refuses, so the
promise above holds whatever it learns.

Waiters are served first come, first served (a big batch is not starved by small ones): one
waiter at a time holds the turn, paces, then waits on the ledger, woken by a release or by
the next expiry (a computed sleep, not polling).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import math
import time
from collections.abc import Callable
from types import TracebackType

from aiolimiter import AsyncLimiter

# The pacer's bucket as a share of `updates`: the largest burst after an idle spell.
PACER_BURST_SHARE = 0.02
# The pacer runs this much faster than updates/period so the ledger, not the pacer, binds in
# steady state: pacing at exactly the limit would add its own wait to every slot's reuse.
PACER_HEADROOM = 1.05


class Permit:
    """Room for `n` updates in one request; release it when the request has finished."""

    __slots__ = ("_limiter", "extra_hold", "granted_at", "n", "released_at")

    def __init__(self, limiter: WindowLimiter, n: int, granted_at: float) -> None:
        self._limiter = limiter
        self.n = n
        self.granted_at = granted_at
        self.released_at: float | None = None
        self.extra_hold = 0.0

    def release(self, extra_hold: float = 0.0) -> None:
        """Mark the request finished (answered, failed or cancelled). Idempotent.

        The slots stay taken until release + `extra_hold` + period. `extra_hold` bounds how
        long after now the request may still reach the server: 0 after an HTTP answer (the
        request arrived before it); more when it ended without one (timeout, broken connection,
        cancellation), since it may still be in transit.
        """
        if not extra_hold >= 0:  # also refuses NaN
            raise ValueError(f"extra_hold must be >= 0, not {extra_hold}")
        if self.released_at is None:
            self.released_at = self._limiter.clock()
            self.extra_hold = extra_hold
            self._limiter._on_release(self)

    @property
    def expires_at(self) -> float | None:
        """When the slots come free (clock time); None while the request is in flight."""
        if self.released_at is None:
            return None
        return self.released_at + self.extra_hold + self._limiter.period_seconds

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # No hold: a caller that got no answer calls release(extra_hold) itself first.
        self.release()


class WindowLimiter:
    """At most `updates` user updates reach the API in any window of `period_seconds`."""

    def __init__(
        self,
        updates: int,
        period_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        burst: int | None = None,
    ) -> None:
        if updates < 1 or period_seconds <= 0:
            raise ValueError("updates must be >= 1 and period_seconds > 0")
        self.updates = updates
        self.period_seconds = period_seconds
        # Waits are computed on this clock and slept on the event loop's, so the two must run
        # at the same pace (asyncio's default loop clock is time.monotonic; the pacer uses it).
        self.clock = clock
        self.burst = burst or max(1, math.ceil(updates * PACER_BURST_SHARE))
        # aiolimiter's bucket holds `max_rate` (and refuses larger amounts): a small bucket,
        # leaking at updates/period plus headroom.
        rate = updates * PACER_HEADROOM / period_seconds
        self._pacer = AsyncLimiter(self.burst, self.burst / rate)
        self._turn = asyncio.Lock()  # FIFO: waiters are served in arrival order
        self._changed = asyncio.Event()  # set on release: there is a new expiry to wait for
        self._in_flight = 0
        # A heap of (release + hold + period, n): holds differ, so expiries come out of order.
        self._expiring: list[tuple[float, int]] = []
        self._expiring_total = 0
        self._paused_until = -math.inf
        self.granted_total = 0  # updates granted so far, every attempt counted
        # What 429s taught: it only ever lowers what is let through, paced under the turn.
        self.adaptive = AdaptiveRate(updates, period_seconds, clock)

    async def acquire(self, n: int) -> Permit:
        """Wait for room for `n` updates (first come, first served); returns the permit."""
        if not 1 <= n <= self.updates:
            raise ValueError(f"cannot acquire {n} updates: must be between 1 and {self.updates}")
        async with self._turn:
            await self._wait_pause()
            await self.adaptive.wait(n)
            await self._wait_pause()  # a 429 may have paused every sender meanwhile
            await self._pace(n)
            return await self._wait_ledger(n)

    def pause_until(self, deadline: float) -> None:
        """Grant nothing before `deadline` (clock time): a 429's Retry-After slows every sender."""
        self._paused_until = max(self._paused_until, deadline)

    def occupied(self) -> int:
        """Updates in flight, or released less than their hold plus a period ago."""
        self._expire(self.clock())
        return self._in_flight + self._expiring_total

    @property
    def in_flight(self) -> int:
        """Updates granted and not yet released."""
        return self._in_flight

    @property
    def paused_until(self) -> float:
        return self._paused_until

    async def _wait_pause(self) -> None:
        while (delay := self._paused_until - self.clock()) > 0:
            await asyncio.sleep(delay)

    async def _pace(self, n: int) -> None:
        # A batch larger than the bucket is paced in bucket-sized parts: same rate, no burst.
        remaining = n
        while remaining > 0:
            part = min(remaining, self.burst)
            await self._pacer.acquire(part)
            remaining -= part

    async def _wait_ledger(self, n: int) -> Permit:
        while True:
            now = self.clock()
            if now < self._paused_until:
                await self._wait_pause()
                continue
            self._expire(now)
            if self._in_flight + self._expiring_total + n <= self.updates:
                return self._grant(n, now)
            self._changed.clear()
            # Nothing in `_expiring` means the room is held by requests in flight: wait for one.
            timeout = self._expiring[0][0] - now if self._expiring else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    def _grant(self, n: int, now: float) -> Permit:
        self._in_flight += n
        self.granted_total += n
        return Permit(self, n, now)

    def _expire(self, now: float) -> None:
        while self._expiring and self._expiring[0][0] <= now:
            _, n = heapq.heappop(self._expiring)
            self._expiring_total -= n

    def _on_release(self, permit: Permit) -> None:
        expires_at = permit.expires_at
        assert expires_at is not None
        self._in_flight -= permit.n
        heapq.heappush(self._expiring, (expires_at, permit.n))
        self._expiring_total += permit.n
        self._changed.set()


# On a 429 the ceiling drops to this share of what the API accepted over the last period:
# a 429 means the workspace's window is full, so that is about its real limit (halving step
# by step from a limit 25 times too high would take many bursts of 429s)...
GOODPUT_SHARE = 0.95
# ...and by at least this factor (multiplicative decrease); by DECREASE_FACTOR when nothing
# was accepted lately to measure the API by.
GENTLE_DECREASE_FACTOR = 0.9
DECREASE_FACTOR = 0.5
# Each period without a 429 the ceiling climbs by this share of where the last decrease left
# it (additive increase): slow enough that overshooting the workspace's window, which costs
# a pause, is rare; a ceiling 25 times too low still doubles in about 33 periods.
INCREASE_SHARE = 0.03
# The ceiling never drops below this share of the limit (nor below one update a period).
FLOOR_SHARE = 0.001


class AdaptiveRate:
    """A ceiling below the configured limit, learnt from 429s (AIMD), paced before the ledger.

    The window limiter keeps the promise; this only ever lowers what it lets through, by
    making callers wait before they ask it. While the ceiling is at the limit it adds no wait
    at all. On a 429 for a request granted after the last decrease (so one burst of 429s is
    one decrease), the ceiling drops to 95% of the updates accepted over the last period, and
    by at least 10% (by half when nothing was accepted lately). It then climbs back
    linearly towards the limit.
    """

    def __init__(
        self, updates: int, period_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit_per_second = updates / period_seconds
        self.period_seconds = period_seconds
        self.clock = clock
        self._floor = max(self.limit_per_second * FLOOR_SHARE, 1 / period_seconds)
        self._rate = self.limit_per_second
        self._rate_at = clock()
        self._increase_per_second = 0.0
        self._last_decrease = -math.inf
        self._next_free = -math.inf
        self._accepted: collections.deque[tuple[float, int]] = collections.deque()
        self._first_accepted_at: float | None = None
        self._accepted_total = 0
        self.decreases = 0
        # What the API's own rate-limit headers said it takes, a second (never above the limit).
        self.learned_per_second = math.inf

    def rate(self) -> float:
        """The ceiling now, in updates per second."""
        now = self.clock()
        ceiling = min(self.limit_per_second, self.learned_per_second)
        if self._rate < ceiling:
            climbed = self._rate + self._increase_per_second * (now - self._rate_at)
            self._rate = min(ceiling, climbed)
        self._rate_at = now
        return min(self._rate, ceiling)

    def learn(self, per_second: float) -> bool:
        """The API said it takes `per_second` (its rate-limit headers): the ceiling never climbs
        above it again this run. Only ever lowers; True when it did."""
        if not per_second > 0 or per_second >= min(self.limit_per_second, self.learned_per_second):
            return False
        self.learned_per_second = per_second
        self._next_free = max(self._next_free, self.clock())
        return True

    @property
    def throttled(self) -> bool:
        return self.rate() < self.limit_per_second

    async def wait(self, n: int) -> None:
        """Wait for this request's turn at the ceiling (no wait while it is at the limit)."""
        rate = self.rate()
        if rate >= self.limit_per_second:
            return
        now = self.clock()
        start = max(now, self._next_free)
        self._next_free = start + n / rate
        if start > now:
            await asyncio.sleep(start - now)

    def accepted(self, n: int) -> None:
        now = self.clock()
        if self._first_accepted_at is None:
            self._first_accepted_at = now
        self._accepted.append((now, n))
        self._accepted_total += n
        self._forget(now)

    def rate_limited(self, granted_at: float) -> bool:
        """A 429 for a request granted at `granted_at`; True if it lowered the ceiling."""
        now = self.clock()
        self._forget(now)
        current = self.rate()
        capacity = self._capacity(now)
        if granted_at >= self._last_decrease:  # a new burst of 429s
            if capacity > 0:
                lowered = min(current * GENTLE_DECREASE_FACTOR, capacity)
            else:  # nothing accepted lately to measure the API by
                lowered = current * DECREASE_FACTOR
        elif 0 < capacity < current:
            # The same burst, but the answers since the decrease show what the API takes.
            lowered = capacity
        else:
            return False
        self._rate = max(self._floor, lowered)
        self._rate_at = now
        self._increase_per_second = self._rate * INCREASE_SHARE / self.period_seconds
        self._last_decrease = max(self._last_decrease, granted_at, now)
        self._next_free = max(self._next_free, now)
        self.decreases += 1
        return True

    def _capacity(self, now: float) -> float:
        """What the API accepted a second lately, times GOODPUT_SHARE (0: nothing to go by).

        Over the last period, or since the first acceptance if the run is younger: a run
        8 s into a 60 s period that had 100 accepted took 12.5 a second, not 1.7. At least
        over a second (or the period if shorter), so that the burst that opens a run is
        not taken for a rate.
        """
        if self._first_accepted_at is None:
            return 0.0
        span = min(self.period_seconds, max(now - self._first_accepted_at, 1.0))
        return self._accepted_total / span * GOODPUT_SHARE

    def _forget(self, now: float) -> None:
        horizon = now - self.period_seconds
        while self._accepted and self._accepted[0][0] <= horizon:
            self._accepted_total -= self._accepted.popleft()[1]
