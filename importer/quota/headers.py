"""MoEngage's rate-limit headers (`x-ratelimit-limit`, `-remaining`, `-reset`), honoured when
an answer carries them: they only ever slow the run below `rate_limit`, before any 429.

`x-ratelimit-limit` is read as updates a minute (the workspace's limit); a lower one caps the
adaptive ceiling for the rest of the run. `-remaining: 0` with `-reset: S` (seconds, or a Unix
time) pauses every sender until the window resets, so the next request does not meet a 429.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from importer import moengage
from importer.quota.window import WindowLimiter

HEADER_PERIOD_SECONDS = 60.0
# A reset this large is a Unix time, not seconds from now.
EPOCH_THRESHOLD = 10**9


def learn_from_headers(limiter: WindowLimiter, headers: Mapping[str, str]) -> int | None:
    """Apply an answer's headers; returns the limit learnt (updates a minute) when it lowered
    the pace, else None."""
    learnt = None
    limit = _number(headers.get(moengage.RATE_LIMIT_LIMIT_HEADER))
    if limit is not None and limit > 0:
        per_second = limit / HEADER_PERIOD_SECONDS
        if limiter.adaptive.learn(per_second):
            learnt = int(limit)
    remaining = _number(headers.get(moengage.RATE_LIMIT_REMAINING_HEADER))
    reset = _number(headers.get(moengage.RATE_LIMIT_RESET_HEADER))
    if remaining is not None and remaining <= 0 and reset is not None:
        wait = reset - time.time() if reset >= EPOCH_THRESHOLD else reset
        if 0 < wait <= HEADER_PERIOD_SECONDS * 2:
            limiter.pause_until(limiter.clock() + wait)
    return learnt


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None
