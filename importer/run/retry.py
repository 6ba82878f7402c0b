"""Which answers and errors are retried, how long to back off, and what Retry-After says."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

import aiohttp

from importer import moengage

# Never wait longer than this on a server's word: a bad header must not stall a run for hours.
MAX_RETRY_AFTER_SECONDS = 300.0
# x-ratelimit-reset above this is a unix epoch, not a number of seconds.
EPOCH_THRESHOLD = 1_000_000_000


# 407: a proxy on the way wants credentials of its own; no retry and no row can mend it.
PROXY_AUTH_STATUS = 407
# 408 (request timeout) and 425 (too early): the same request may well pass a moment later.
RETRIED_CLIENT_STATUSES = frozenset({408, 425})


def is_fatal(status: int) -> bool:
    """Credentials, account, workspace mismatch, a proxy's login, or a wrong URL: stop."""
    return (
        status in moengage.FATAL_STATUSES
        or status in moengage.CLIENT_BUG_STATUSES
        or status == PROXY_AUTH_STATUS
    )


def is_rate_limited(status: int) -> bool:
    return status == moengage.RATE_LIMITED_STATUS


def is_transient(status: int) -> bool:
    """A server-side failure (or 408, 425): the same request may succeed later."""
    return 500 <= status <= 599 or status in RETRIED_CLIENT_STATUSES


def refuses_request(status: int) -> bool:
    """A 4xx that refuses the request (400, 413, 422, and any 4xx not handled otherwise):
    split or bisected, and counted against the refusals in a row that stop a run."""
    return 400 <= status <= 499 and not (
        is_fatal(status) or is_rate_limited(status) or is_transient(status)
    )


def is_too_large(status: int) -> bool:
    """413: split the request and send the halves."""
    return status == moengage.TOO_LARGE_STATUS


def is_data_refusal(status: int) -> bool:
    """The API refused the data: bisect a bulk request (400, 422) or split it (413)."""
    return status in (moengage.BAD_PAYLOAD_STATUS, moengage.UNPROCESSABLE_STATUS) or is_too_large(
        status
    )


def is_redirect(status: int) -> bool:
    """3xx: never followed; a POST turned into a GET, or a body sent to another host, is
    worse than stopping."""
    return 300 <= status <= 399


# A bulk 400 whose message says this names the request as a whole, not an element in it:
# bisecting cannot isolate anything.
_WHOLE_REQUEST_WORDS = (
    "not valid json",
    "invalid json",
    "malformed json",
    "json parse",
    "could not parse",
    "unable to parse",
    "elements must",
    "elements is empty",
    "empty elements",
    "no elements",
    "body must",
    "request body",
    "'transition'",
)
_ELEMENT_MENTION = re.compile(r"\belement\s+\d+|\belements?\[\d+\]", re.IGNORECASE)


def refuses_whole_request(message: str) -> bool:
    """The API's message says the request as a whole is wrong (bad JSON, no elements, a
    wrong type), not one of its elements."""
    if _ELEMENT_MENTION.search(message):
        return False
    folded = message.casefold()
    return any(words in folded for words in _WHOLE_REQUEST_WORDS)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter after failed attempt number `attempt` (1-based)."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return (rng or random).uniform(0, ceiling)


def retry_after_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from Retry-After (seconds or HTTP date) or x-ratelimit-reset.

    `now` is wall-clock unix time, to read dates and epochs. None when neither header
    is present or readable; otherwise between 0 and MAX_RETRY_AFTER_SECONDS.
    """
    retry_after = headers.get(aiohttp.hdrs.RETRY_AFTER)
    if retry_after is not None:
        seconds = _seconds_or_date(retry_after.strip(), now)
        if seconds is not None:
            return _clamp(seconds)
    reset = headers.get(moengage.RATE_LIMIT_RESET_HEADER)
    if reset is not None:
        try:
            value = float(reset.strip())
        except ValueError:
            return None
        return _clamp(value - now if value > EPOCH_THRESHOLD else value)
    return None


def _seconds_or_date(value: str, now: float) -> float | None:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # HTTP dates are GMT; "-0000" parses as naive
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() - now


def _clamp(seconds: float) -> float:
    if seconds != seconds:  # NaN
        return 0.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
