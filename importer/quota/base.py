"""The shared-quota seam: what a ledger shared by several processes must do, and its terms.

A shared ledger keeps the in-process ledger's semantics (see `importer.quota.window`) on one
clock for every process sharing a key: a grant of ``n`` at ``g`` occupies ``n`` slots until
``c + h + period`` once released at ``c`` with hold ``h``; a new grant is allowed only if
everything still occupied plus ``n`` fits in ``updates``. Grants are decided atomically, on
the ledger's own clock (Redis: the server's ``TIME``; local: the machine's monotonic
clock), so the window proof of `importer.quota.window` holds for all processes together.

What one process cannot promise for another is its release: a process may die with a
request in flight. So a grant is written with a lease, ``g + lease``, that bounds how long
its request can occupy slots when no release ever comes: the longest a request can be in
flight (``timeout_seconds``), plus how much later it may still arrive (the in-transit hold,
``timeout_seconds`` again), plus the period, plus a margin for a stalled event loop. A
release rewrites the grant's expiry to ``c + h + period``, which is never later than that.

Fairness: waiters queue across processes, first come, first served. Each process puts at
most one waiter (a ticket) in the queue at a time; only the head may take a grant, so a big
batch waiting for room is not overtaken by small ones from a busier process. A ticket not
renewed for `TICKET_STALE_SECONDS` (its process died or stalled) leaves the queue.

Smoothness: a shared pacer (GCRA, the leaky bucket as a virtual schedule) lets grants through
at ``updates / period`` plus headroom, with a burst of about 2% of ``updates``, so several
processes starting together do not take a whole period's room at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from importer.errors import ApiAbort
from importer.quota.window import PACER_BURST_SHARE, PACER_HEADROOM

# A stalled event loop (a GC pause, a busy mapping thread) may release a grant this much
# later than its request's deadline; the lease allows for it.
LEASE_MARGIN_SECONDS = 5.0
# A waiter asks the ledger again at least this often: sooner than this when the ledger knows
# when room comes free; never later, so its place in the queue stays fresh.
POLL_SECONDS = 0.02
# A queued ticket not renewed for this long belongs to a process that died or stalled.
TICKET_STALE_SECONDS = 2.0
# One call to the ledger (Redis round trip, file lock) taking longer than this stops the run.
DEFAULT_LEDGER_TIMEOUT_SECONDS = 5.0


class QuotaUnavailable(ApiAbort):
    """The shared ledger cannot be reached or answers too slowly: stop, rows stay pending.

    Sending unshared instead would break the promise made to the other processes.
    """

    def __init__(self, message: str) -> None:
        super().__init__(None, f"the shared rate limit is unavailable: {message}")


class QuotaMismatch(QuotaUnavailable):
    """Another process uses the same key with a different limit: one of them is misconfigured."""


def mismatch(theirs: str, ours: str) -> QuotaMismatch:
    """The refusal of a limit other than the one the key's live grants were made under: a
    process sharing the key now, or one that ended less than a period ago (its sends still
    count in the window, so its grants stay until they expire)."""
    return QuotaMismatch(
        f"another process shares this key with the limit {theirs} (updates/period_seconds),"
        f" not {ours}, or ended less than a period ago (its grants count until they expire)"
    )


@dataclass(frozen=True)
class QuotaTerms:
    """What every process sharing a key agrees on, and how this one waits."""

    updates: int
    period_seconds: float
    lease_seconds: float  # how long an unreleased grant occupies its slots
    pacer_interval: float  # seconds per update for the shared pacer
    pacer_tolerance: float  # how far ahead of schedule a grant may be: the burst

    @classmethod
    def for_limit(cls, updates: int, period_seconds: float, timeout_seconds: float) -> QuotaTerms:
        interval = period_seconds / (updates * PACER_HEADROOM)
        burst = max(1, math.ceil(updates * PACER_BURST_SHARE))
        return cls(
            updates=updates,
            period_seconds=period_seconds,
            lease_seconds=period_seconds + 2 * timeout_seconds + LEASE_MARGIN_SECONDS,
            pacer_interval=interval,
            pacer_tolerance=burst * interval,
        )

    @property
    def limit_label(self) -> str:
        """The limit as every sharer must state it: `updates/period`."""
        return f"{self.updates}/{self.period_seconds:g}"


@dataclass(frozen=True)
class Attempt:
    """A ledger's answer to one request for room: a grant, or how long to wait first."""

    grant_id: str | None
    wait: float = 0.0


class SharedLedger(Protocol):
    """A ledger of grants shared by every process using the same key."""

    terms: QuotaTerms

    def describe(self) -> str:
        """Where the ledger is, for messages (never a password)."""
        ...

    async def try_acquire(self, ticket: str, n: int, grant_id: str) -> Attempt:
        """Grant `n` updates as `grant_id` if `ticket` heads the queue and there is room."""
        ...

    async def release(self, grant_id: str, hold: float) -> None:
        """The grant's request finished: its slots free at now + hold + period."""
        ...

    async def forget(self, grant_id: str, n: int) -> None:
        """Drop a grant its waiter never received (cancelled while the ledger answered)."""
        ...

    async def pause(self, seconds: float) -> None:
        """Grant nothing to anyone for `seconds` (a 429's Retry-After)."""
        ...

    async def leave(self, ticket: str) -> None:
        """Take `ticket` out of the queue (its waiter gave up)."""
        ...

    async def occupied(self) -> int:
        """Updates granted and not yet expired, every process counted."""
        ...

    async def aclose(self) -> None: ...
