"""retry: which statuses and errors retry, the backoff, and reading Retry-After."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from importer.run import retry


@pytest.mark.parametrize("status", [401, 403, 409, 404, 405, 415])
def test_fatal_statuses(status: int) -> None:
    assert retry.is_fatal(status)
    assert not retry.is_transient(status) and not retry.is_data_refusal(status)


@pytest.mark.parametrize("status", [200, 400, 413, 422, 429, 500, 503])
def test_not_fatal(status: int) -> None:
    assert not retry.is_fatal(status)


def test_classes_of_status() -> None:
    assert retry.is_rate_limited(429) and not retry.is_rate_limited(503)
    assert all(retry.is_transient(s) for s in (500, 502, 503, 504, 599))
    assert not any(retry.is_transient(s) for s in (200, 400, 429, 600))
    assert all(retry.is_data_refusal(s) for s in (400, 413, 422))
    assert retry.is_too_large(413) and not retry.is_too_large(400)


def test_backoff_is_full_jitter_under_a_growing_capped_ceiling() -> None:
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (10, 30.0)]:
        delays = [retry.backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(500)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.9 * ceiling and min(delays) < 0.1 * ceiling


NOW = 1_700_000_000.0


def test_retry_after_seconds() -> None:
    assert retry.retry_after_seconds({"Retry-After": "7"}, NOW) == 7.0
    assert retry.retry_after_seconds({"Retry-After": " 1.5 "}, NOW) == 1.5


def test_retry_after_reads_headers_case_insensitively() -> None:
    from multidict import CIMultiDict

    assert retry.retry_after_seconds(CIMultiDict({"retry-after": "2"}), NOW) == 2.0
    assert retry.retry_after_seconds(CIMultiDict({"X-RateLimit-Reset": "3"}), NOW) == 3.0


def test_retry_after_http_date() -> None:
    headers = {"Retry-After": formatdate(NOW + 12, usegmt=True)}
    assert retry.retry_after_seconds(headers, NOW) == pytest.approx(12, abs=1)


def test_ratelimit_reset_seconds_or_epoch() -> None:
    assert retry.retry_after_seconds({"x-ratelimit-reset": "4"}, NOW) == 4.0
    epoch = {"x-ratelimit-reset": str(int(NOW + 9))}
    assert retry.retry_after_seconds(epoch, NOW) == pytest.approx(9)


def test_retry_after_wins_over_reset() -> None:
    headers = {"Retry-After": "1", "x-ratelimit-reset": "50"}
    assert retry.retry_after_seconds(headers, NOW) == 1.0


def test_retry_after_is_capped_and_never_negative() -> None:
    assert retry.retry_after_seconds({"Retry-After": "86400"}, NOW) == retry.MAX_RETRY_AFTER_SECONDS
    assert retry.retry_after_seconds({"Retry-After": "-5"}, NOW) == 0.0
    past = {"Retry-After": formatdate(NOW - 100, usegmt=True)}
    assert retry.retry_after_seconds(past, NOW) == 0.0


def test_missing_or_garbage_headers() -> None:
    assert retry.retry_after_seconds({}, NOW) is None
    assert retry.retry_after_seconds({"Retry-After": "soon"}, NOW) is None
    assert retry.retry_after_seconds({"x-ratelimit-reset": "later"}, NOW) is None


def test_redirects() -> None:
    assert all(retry.is_redirect(s) for s in (301, 302, 303, 307, 308))
    assert not any(retry.is_redirect(s) for s in (200, 400, 429))


@pytest.mark.parametrize(
    ("message", "whole"),
    [
        ("body is not valid JSON", True),
        ("elements must be a non-empty list", True),
        ("body must be an object with type 'transition'", True),
        ("element 3: customer_id is a placeholder", False),
        ("element 0: body must be ...", False),
        ("the sandbox answers every request so", False),
        ("attribute 'x' is longer than 512 characters", False),
    ],
)
def test_refuses_whole_request(message: str, whole: bool) -> None:
    assert retry.refuses_whole_request(message) is whole
