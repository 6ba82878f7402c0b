"""A rate limit shared by several processes (`rate_limit.shared`): Redis or a local file.

`open_limiter(job)` gives the run its limiter: the in-process `WindowLimiter` when the job
shares nothing, else a `SharedWindowLimiter` over the configured ledger. Close it with
`close_limiter` so the last grants are released promptly for the other processes.
"""

from __future__ import annotations

from pathlib import Path

from importer.config import JobConfig
from importer.quota.base import QuotaMismatch, QuotaTerms, QuotaUnavailable, SharedLedger
from importer.quota.limiter import SharedWindowLimiter
from importer.quota.local import LocalLedger
from importer.quota.redis import RedisLedger
from importer.quota.window import WindowLimiter

__all__ = [
    "QuotaMismatch",
    "QuotaTerms",
    "QuotaUnavailable",
    "SharedLedger",
    "close_limiter",
    "ledger_for",
    "open_limiter",
]


def ledger_for(job: JobConfig) -> SharedLedger | None:
    """The job's shared ledger, or None when its limit is its own."""
    shared = job.rate_limit.shared
    if shared is None:
        return None
    terms = QuotaTerms.for_limit(
        job.rate_limit.updates, job.rate_limit.period_seconds, job.delivery.timeout_seconds
    )
    key = shared.key or job.api.workspace_id
    if shared.backend == "redis":
        assert shared.url is not None  # the config refuses redis without a url
        return RedisLedger(terms, shared.url, key, timeout=shared.timeout_seconds)
    directory = Path(shared.path) if shared.path else None
    return LocalLedger(terms, key, directory, timeout=shared.timeout_seconds)


def open_limiter(job: JobConfig) -> WindowLimiter:
    """The limiter for a run of `job` (call inside the event loop)."""
    ledger = ledger_for(job)
    updates, period = job.rate_limit.updates, job.rate_limit.period_seconds
    if ledger is None:
        return WindowLimiter(updates, period)
    return SharedWindowLimiter(updates, period, ledger=ledger)


async def close_limiter(limiter: WindowLimiter) -> None:
    """Release what the shared ledger still holds for this run; nothing for a local limiter."""
    if isinstance(limiter, SharedWindowLimiter):
        await limiter.aclose()
