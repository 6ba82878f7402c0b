"""The shared ledgers (local file, real Redis): one window promise for many limiters, leases,
first come first served, and a stop when the ledger is gone."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from importer.quota.base import QuotaMismatch, QuotaTerms, QuotaUnavailable, SharedLedger
from importer.quota.limiter import SharedWindowLimiter
from importer.quota.local import LocalLedger
from importer.quota.redis import RedisLedger, redacted
from tests.redis_proc import requires_redis, start_redis

LedgerFactory = Callable[[QuotaTerms], SharedLedger]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("SKIP_REDIS"):
        pytest.skip("SKIP_REDIS is set")
    with start_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(params=["local", pytest.param("redis", marks=requires_redis)])
def make_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerFactory:
    key = f"test-{random.getrandbits(48):x}"
    if request.param == "local":
        return lambda terms: LocalLedger(terms, key, tmp_path / "quota")
    url = request.getfixturevalue("redis_url")
    return lambda terms: RedisLedger(terms, url, key)


def max_in_window(events: list[tuple[float, int]], period: float) -> int:
    points = sorted(events)
    best = total = start = 0
    for t, n in points:
        total += n
        while points[start][0] <= t - period:
            total -= points[start][1]
            start += 1
        best = max(best, total)
    return best


def test_many_limiters_keep_one_window_promise_and_fill_it(make_ledger: LedgerFactory) -> None:
    updates, period, run_for = 300, 1.0, 3.5
    terms = QuotaTerms.for_limit(updates, period, timeout_seconds=1.0)
    arrivals: list[tuple[float, int]] = []

    async def worker(limiter: SharedWindowLimiter, rng: random.Random, end: float) -> None:
        while time.monotonic() < end:
            n = rng.randint(1, 30)
            permit = await limiter.acquire(n)
            # The request arrives some time after the grant and is answered after that.
            await asyncio.sleep(rng.uniform(0, 0.02))
            arrivals.append((time.monotonic(), n))
            await asyncio.sleep(rng.uniform(0, 0.02))
            permit.release()

    async def main() -> None:
        limiters = [
            SharedWindowLimiter(updates, period, ledger=make_ledger(terms)) for _ in range(3)
        ]
        end = time.monotonic() + run_for
        rng = random.Random(7)
        workers = [
            worker(lim, random.Random(rng.random()), end) for lim in limiters for _ in range(3)
        ]
        await asyncio.gather(*workers)
        for limiter in limiters:
            await limiter.aclose()

    asyncio.run(main())
    assert max_in_window(arrivals, period) <= updates
    first = min(t for t, _ in arrivals)
    steady = [(t, n) for t, n in arrivals if first + period <= t < first + run_for - 0.2]
    span = run_for - 0.2 - period
    rate = sum(n for _, n in steady) / span
    assert rate >= 0.9 * updates / period, f"{rate:.0f}/s for a limit of {updates / period:.0f}/s"


def test_an_unreleased_grant_frees_when_its_lease_ends(make_ledger: LedgerFactory) -> None:
    terms = QuotaTerms(10, 0.2, lease_seconds=0.6, pacer_interval=0.0, pacer_tolerance=1.0)

    async def main() -> None:
        dead, alive = make_ledger(terms), make_ledger(terms)
        assert (await dead.try_acquire("dead", 10, "g1")).grant_id is not None
        # The dead process never releases: its slots stay taken until the lease ends.
        assert await alive.occupied() == 10
        attempt = await alive.try_acquire("alive", 1, "g2")
        assert attempt.grant_id is None and attempt.wait > 0
        started = time.monotonic()
        while (await alive.try_acquire("alive", 1, "g2")).grant_id is None:
            await asyncio.sleep(0.02)
        assert 0.4 <= time.monotonic() - started <= 1.2
        await dead.aclose()
        await alive.aclose()

    asyncio.run(main())


def test_a_release_frees_after_hold_and_period(make_ledger: LedgerFactory) -> None:
    terms = QuotaTerms(10, 0.3, lease_seconds=30, pacer_interval=0.0, pacer_tolerance=1.0)

    async def main() -> None:
        ledger = make_ledger(terms)
        grant = (await ledger.try_acquire("a", 10, "g1")).grant_id
        assert grant is not None
        await ledger.release(grant, 0.2)
        assert await ledger.occupied() == 10
        await asyncio.sleep(0.35)
        assert await ledger.occupied() == 10  # hold 0.2 + period 0.3 not yet over
        await asyncio.sleep(0.25)
        assert await ledger.occupied() == 0
        await ledger.aclose()

    asyncio.run(main())


def test_first_come_first_served_across_processes(make_ledger: LedgerFactory) -> None:
    terms = QuotaTerms(10, 30, lease_seconds=60, pacer_interval=0.0, pacer_tolerance=1.0)

    async def main() -> None:
        ledger = make_ledger(terms)
        first = (await ledger.try_acquire("busy", 8, "g1")).grant_id
        assert first is not None
        # A big batch waits for room; a small one that came later must not overtake it.
        assert (await ledger.try_acquire("big", 5, "g2")).grant_id is None
        assert (await ledger.try_acquire("small", 1, "g3")).grant_id is None
        await ledger.leave("big")
        assert (await ledger.try_acquire("small", 1, "g3")).grant_id is not None
        await ledger.aclose()

    asyncio.run(main())


def test_a_different_limit_on_the_same_key_is_refused(make_ledger: LedgerFactory) -> None:
    async def main() -> None:
        ours = make_ledger(QuotaTerms.for_limit(100, 10, 5))
        theirs = make_ledger(QuotaTerms.for_limit(200, 10, 5))
        assert (await ours.try_acquire("a", 5, "g1")).grant_id is not None
        with pytest.raises(QuotaMismatch, match="100/10"):
            await theirs.try_acquire("b", 5, "g2")
        await ours.aclose()
        await theirs.aclose()

    asyncio.run(main())


def test_a_pause_holds_every_sharer(make_ledger: LedgerFactory) -> None:
    terms = QuotaTerms(100, 1, lease_seconds=10, pacer_interval=0.0, pacer_tolerance=1.0)

    async def main() -> None:
        one, other = make_ledger(terms), make_ledger(terms)
        await one.pause(0.3)
        attempt = await other.try_acquire("b", 1, "g1")
        assert attempt.grant_id is None and attempt.wait > 0
        await asyncio.sleep(0.35)
        assert (await other.try_acquire("b", 1, "g1")).grant_id is not None
        await one.aclose()
        await other.aclose()

    asyncio.run(main())


@requires_redis
def test_redis_down_or_stopped_is_unavailable(tmp_path: Path) -> None:
    terms = QuotaTerms.for_limit(100, 10, 5)

    async def ask(url: str, timeout: float) -> None:
        ledger = RedisLedger(terms, url, "k", timeout=timeout)
        try:
            await ledger.try_acquire("a", 1, "g1")
        finally:
            await ledger.aclose()

    with start_redis(tmp_path) as server:
        url = server.url
        os.kill(server.process.pid, signal.SIGSTOP)  # a server that no longer answers
        try:
            started = time.monotonic()
            with pytest.raises(QuotaUnavailable, match="no answer in time"):
                asyncio.run(ask(url, 0.5))
            assert time.monotonic() - started < 3
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
    with pytest.raises(QuotaUnavailable, match=re.escape("Redis at redis://127.0.0.1")):
        asyncio.run(ask(url, 0.5))  # nothing listens there any more


def test_a_redis_password_never_shows() -> None:
    assert redacted("redis://:s3cret@10.0.0.1:6379/0") == "redis://:***@10.0.0.1:6379/0"
    assert redacted("redis://user:s3cret@h/0") == "redis://user:***@h/0"
    assert redacted("redis://h:6379") == "redis://h:6379"


def test_a_waiting_big_batch_is_not_starved_by_a_busy_process(make_ledger: LedgerFactory) -> None:
    updates, period, run_for = 300, 1.0, 3.0
    terms = QuotaTerms.for_limit(updates, period, timeout_seconds=1.0)
    granted = {"busy": 0, "big": 0}

    async def worker(limiter: SharedWindowLimiter, name: str, n: int, end: float) -> None:
        while time.monotonic() < end:
            permit = await limiter.acquire(n)
            granted[name] += n
            await asyncio.sleep(0.005)
            permit.release()

    async def main() -> None:
        busy = SharedWindowLimiter(updates, period, ledger=make_ledger(terms))
        big = SharedWindowLimiter(updates, period, ledger=make_ledger(terms))
        end = time.monotonic() + run_for
        # Small batches always fit somewhere; a batch of half the limit needs room to free up.
        await asyncio.gather(
            *(worker(busy, "busy", 10, end) for _ in range(6)), worker(big, "big", 150, end)
        )
        await busy.aclose()
        await big.aclose()

    asyncio.run(main())
    share = granted["big"] / (granted["big"] + granted["busy"])
    # Served in turn, one grant each: the big batch gets most of the updates (about 70%
    # measured); without the queue the small batches take nearly all the room (about 27%).
    assert share >= 0.45, granted


def test_a_cancelled_waiter_leaves_the_queue(make_ledger: LedgerFactory) -> None:
    terms = QuotaTerms(1000, 30, lease_seconds=60, pacer_interval=0.0, pacer_tolerance=1.0)

    async def main() -> None:
        busy, later = make_ledger(terms), make_ledger(terms)
        assert (await busy.try_acquire("busy", 995, "g1")).grant_id is not None
        waiting = SharedWindowLimiter(1000, 30, ledger=make_ledger(terms))
        stuck = asyncio.create_task(waiting.acquire(10))  # no room for 30 s
        await asyncio.sleep(0.2)
        assert (await later.try_acquire("later", 1, "g2")).grant_id is None  # queued behind
        stuck.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stuck
        await asyncio.sleep(0.2)
        assert (await later.try_acquire("later", 1, "g2")).grant_id is not None
        for closing in (busy.aclose(), waiting.aclose(), later.aclose()):
            await closing

    asyncio.run(main())


def test_a_grant_never_handed_out_can_be_forgotten(make_ledger: LedgerFactory) -> None:
    terms = QuotaTerms(10, 30, lease_seconds=60, pacer_interval=0.0, pacer_tolerance=1.0)

    async def main() -> None:
        ledger = make_ledger(terms)
        assert (await ledger.try_acquire("a", 7, "g1")).grant_id is not None
        assert await ledger.occupied() == 7
        await ledger.forget("g1", 7)
        assert await ledger.occupied() == 0
        await ledger.aclose()

    asyncio.run(main())
