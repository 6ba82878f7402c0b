"""Delivery's pace on the virtual clock: Senders over the in-memory transport, a workspace
that counts its window as MoEngage does, and a latency: never over, windows full, 429s learnt.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from importer import moengage
from importer.config import ApiConfig, DeliveryConfig
from importer.quota.window import WindowLimiter
from importer.rows import Row
from importer.run.delivery import DeliveryStats, Sender, SendResult
from importer.run.transport import FakeTransport, NoAnswer, Request
from importer.sandbox.windows import max_in_window
from tests.support import ids_in
from tests.virtual_clock import Interval, VirtualTimeLoop, run_virtual, worst_window

Answer = tuple[int, Mapping[str, str], bytes]


class _NoRecords:
    """Rows here never reach the dead-letter file: no source record to rebuild."""

    def record(self, row: int) -> dict[str, Any]:
        raise AssertionError(f"row {row} was refused")


def users(count: int) -> list[Row]:
    source = _NoRecords()
    return [
        Row(
            "in.csv",
            i,
            f"u{i}",
            orjson.dumps(moengage.customer_element(f"u{i}", {}, False)),
            source,
        )
        for i in range(1, count + 1)
    ]


def success() -> Answer:
    return 200, {}, orjson.dumps({"status": "success", "message": moengage.SUCCESS_MESSAGE})


@dataclass
class Workspace:
    """The API side: `limit` user updates in any `period` (as the sandbox counts them), a
    latency split into the way there and the way back, every request recorded.

    A request over the limit is refused with 429 and a Retry-After in whole seconds.
    """

    limit: int
    period: float
    way_there: float
    way_back: float
    raised: tuple[float, int] | None = None  # (seconds after the first request, new limit)
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # accepted: (time, users)
    exchanges: list[Interval] = field(default_factory=list)  # (users, sent, answered)
    accepted: list[str] = field(default_factory=list)
    refused: int = 0
    lose_share: float = 0.0  # answers lost on the way back (NoAnswer), after arriving
    rng: random.Random = field(default_factory=random.Random)
    lost: int = 0
    _first: float | None = None
    _window: deque[tuple[float, int]] = field(default_factory=deque)
    _in_window: int = 0

    async def respond(self, request: Request) -> Answer:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        ids = ids_in(request)
        await asyncio.sleep(self.way_there)
        now = loop.time()
        wait = self._room_in(now, len(ids))
        if wait > 0:
            self.refused += 1
            answer: Answer = (
                429,
                {"Retry-After": str(max(1, math.ceil(wait)))},
                orjson.dumps(moengage.error_body("Error", "Rate limit exceeded", "r-429")),
            )
        else:
            self._window.append((now, len(ids)))
            self._in_window += len(ids)
            self.arrivals.append((now, len(ids)))
            self.accepted.extend(ids)
            answer = success()
        await asyncio.sleep(self.way_back)
        self.exchanges.append((len(ids), sent, loop.time()))
        if self.rng.random() < self.lose_share:
            self.lost += 1
            raise NoAnswer("connection reset")
        return answer

    def _room_in(self, now: float, n: int) -> float:
        """0 if `n` more fit in the window ending now; else the seconds until they do."""
        self._first = self._first if self._first is not None else now
        if self.raised is not None and now - self._first >= self.raised[0]:
            self.limit = self.raised[1]
        while self._window and self._window[0][0] <= now - self.period:
            self._in_window -= self._window.popleft()[1]
        excess = self._in_window + n - self.limit
        freed = 0
        for arrived, count in self._window:
            if excess <= 0:
                break
            freed += count
            if freed >= excess:
                return arrived + self.period - now
        return 0.0 if excess <= 0 else self.period


@dataclass
class Delivered:
    stats: DeliveryStats
    results: list[SendResult]
    limiter: WindowLimiter


def deliver(
    workspace: Workspace,
    rows: list[Row],
    *,
    updates: int,
    period: float,
    batch: int,
    workers: int = 8,
    timeout: float = 30.0,
    respond: Callable[[Request], Awaitable[Answer]] | None = None,
) -> Delivered:
    """`rows` in batches of `batch`, sent by `workers` concurrent sends (the pipeline's
    workers) through one Sender under a `updates`/`period` limiter, on the virtual clock."""

    async def main(loop: VirtualTimeLoop) -> Delivered:
        api = ApiConfig(workspace_id="WS1", api_key="key", base_url="http://127.0.0.1:9")
        settings = DeliveryConfig(concurrency=workers, timeout_seconds=timeout)
        limiter = WindowLimiter(updates, period, clock=loop.time)
        stats = DeliveryStats()
        sender = Sender(
            api,
            settings,
            limiter,
            FakeTransport(respond or workspace.respond),
            stats,
            random.Random(1),
        )
        batches = deque(rows[i : i + batch] for i in range(0, len(rows), batch))
        results: list[SendResult] = []

        async def worker() -> None:
            while batches:
                results.append(await sender.send(batches.popleft()))

        await asyncio.gather(*(worker() for _ in range(workers)))
        assert limiter.in_flight == 0
        return Delivered(stats, results, limiter)

    return run_virtual(main)


def pace(arrivals: list[tuple[float, int]]) -> float:
    """Users a second from the first arrival to the last (the first request's users not
    counted: they arrived at the start of the span)."""
    points = sorted(arrivals)
    return (sum(n for _, n in points) - points[0][1]) / (points[-1][0] - points[0][0])


@pytest.mark.parametrize(
    ("updates", "period", "latency", "batch"),
    [
        (600, 6.0, 0.02, 25),  # test_e2e_ratelimit's limit and sandbox latency
        (6000, 60.0, 0.5, 200),  # a minute's window, a slow API
        (3000, 10.0, 0.2, 100),
    ],
)
@pytest.mark.slow  # about half a second or more: not in make test-fast
def test_senders_never_exceed_the_window_and_keep_it_full(
    updates: int, period: float, latency: float, batch: int
) -> None:
    # Ten windows' worth, through a workspace that enforces the same limit.
    rows = users(10 * updates)
    workspace = Workspace(updates, period, way_there=latency / 2, way_back=latency / 2)
    done = deliver(workspace, rows, updates=updates, period=period, batch=batch)

    # Never over, wherever in its exchange each request really arrived; not one 429.
    assert max_in_window(workspace.arrivals, period) <= updates
    assert worst_window(workspace.exchanges, period) <= updates
    assert done.stats.http_429 == 0 and workspace.refused == 0
    # Every row accepted, once, and counted so.
    assert sorted(workspace.accepted) == sorted(row.customer_id or "" for row in rows)
    assert sum(len(r.accepted) for r in done.results) == len(rows)
    assert all(not r.refused for r in done.results)
    # The windows full: a slot is reused every period plus a latency, less the pacing.
    moved = pace(workspace.arrivals)
    assert moved >= 0.97 * updates / period, f"{moved:.1f}/s for {updates / period:.1f}/s"


def test_answers_lost_on_the_way_back_still_never_exceed_the_window() -> None:
    # One answer in ten is lost after the request arrived (a reset connection): the request
    # counted, the sender cannot know it and sends it again, holding the slot a timeout more.
    updates, period = 600, 6.0
    rows = users(5 * updates)
    workspace = Workspace(
        updates, period, way_there=0.01, way_back=0.01, lose_share=0.1, rng=random.Random(3)
    )
    done = deliver(workspace, rows, updates=updates, period=period, batch=25, timeout=2.0)

    assert workspace.lost > 10  # it did happen, often
    assert max_in_window(workspace.arrivals, period) <= updates
    assert worst_window(workspace.exchanges, period) <= updates
    assert workspace.refused == 0
    # Every row accepted at least once (a lost answer's rows twice), none refused.
    assert set(workspace.accepted) == {row.customer_id for row in rows}
    assert sum(len(r.accepted) for r in done.results) == len(rows)
    assert all(not r.refused for r in done.results)


@pytest.mark.parametrize("real", [900, 500, 250])
def test_a_workspace_below_the_configured_limit_is_learnt_from_its_429s(real: int) -> None:
    # Configured for 1,000 updates per 10 s; the workspace really takes `real`.
    updates, period = 1000, 10.0
    rows = users(12 * real)
    workspace = Workspace(real, period, way_there=0.01, way_back=0.01)
    done = deliver(workspace, rows, updates=updates, period=period, batch=20)

    # No row lost to the 429s, none accepted twice, none refused.
    assert sorted(workspace.accepted) == sorted(row.customer_id or "" for row in rows)
    assert sum(len(r.accepted) for r in done.results) == len(rows)
    assert all(not r.refused for r in done.results)
    stats = done.stats
    # One burst of 429s is one decrease: a handful in all (5 measured), not one a window.
    assert stats.http_429 <= 8 and done.limiter.adaptive.decreases <= stats.http_429
    # The ceiling settles at 95% of what the workspace took (GOODPUT_SHARE) and climbs 3%
    # a period from there: measured 94.9% (900, 500) and 93.1% (250) of the real limit.
    settled = stats.rate_settled_per_minute()
    assert settled is not None and 0.9 * real * 6 <= settled <= real * 6
    # The run as a whole moves at least 90% of what the workspace allows (91 to 95%
    # measured), however far below the configured limit that is.
    moved = pace(workspace.arrivals)
    assert moved >= 0.9 * real / period, f"{moved:.1f}/s for a real {real / period:.1f}/s"


@pytest.mark.slow
def test_the_ceiling_climbs_back_when_the_workspace_takes_more_again() -> None:
    # 1,000 a second configured; the workspace takes 500 for its first 10 s, then 1,000.
    updates, period = 1000, 1.0
    workspace = Workspace(500, period, way_there=0.005, way_back=0.005, raised=(10.0, updates))
    rows = users(60_000)
    done = deliver(workspace, rows, updates=updates, period=period, batch=20)

    assert sorted(workspace.accepted) == sorted(row.customer_id or "" for row in rows)
    assert all(not r.refused for r in done.results)
    assert done.stats.http_429 <= 8  # 3 measured, all in the first 10 s
    start = min(t for t, _ in workspace.arrivals)

    def pace_in(first: float, last: float) -> float:
        moved = sum(n for t, n in workspace.arrivals if first <= t - start < last)
        return moved / (last - first)

    tens = [pace_in(at, at + 10) for at in range(0, 60, 10)]
    # Linear climb (INCREASE_SHARE): 3% a period of where the decrease left it (about 475
    # a second), so about 140 a second more every 10 s (measured 138, 138, 122); slow
    # enough that overshooting a window, which costs a pause, is rare.
    for before, after in itertools.pairwise(tens[1:5]):
        assert 100 <= after - before <= 180, tens
    # Back at the configured limit: the last full 10 s move over 97% of it (99% measured).
    assert tens[5] >= 0.97 * updates / period, tens
    assert done.limiter.adaptive.rate() == updates / period


def test_once_an_outage_is_noticed_only_its_probes_are_sent() -> None:
    # 8 workers; the API answers 503 to everyone from 1 s to 4 s after the first request.
    updates, period, workers = 2400, 6.0, 8
    workspace = Workspace(updates, period, way_there=0.01, way_back=0.01)
    started: list[float] = []
    during: list[float] = []

    async def down_for_a_while(request: Request) -> Answer:
        now = asyncio.get_running_loop().time()
        if not started:
            started.append(now)
        if 1.0 <= now - started[0] < 4.0:
            during.append(now)
            await asyncio.sleep(0.02)
            body = moengage.error_body("Error", "Service Unavailable", "r-503")
            return 503, {}, orjson.dumps(body)
        return await workspace.respond(request)

    rows = users(3000)
    done = deliver(
        workspace, rows, updates=updates, period=period, batch=25, respond=down_for_a_while
    )

    assert sorted(workspace.accepted) == sorted(row.customer_id or "" for row in rows)
    assert all(not r.refused for r in done.results) and done.stats.outages == 1
    # The failures that tell an outage from bad luck (one a worker), then one probe at a
    # time at growing intervals: one fails (1 s in), the next (2 s later) finds the API
    # back. Requests the limiter admitted as the outage began wait in it instead of adding
    # to the flood (11 when they did not).
    assert len(during) == workers + 1, len(during)
    # Each request counted once as sent, and each failed one sent again once.
    assert done.stats.requests == len(workspace.exchanges) + len(during)
    assert done.stats.retries == len(during)


@dataclass
class HeaderWorkspace(Workspace):
    """A workspace that says its limit in MoEngage's rate-limit headers on every answer."""

    async def respond(self, request: Request) -> Answer:
        status, headers, body = await super().respond(request)
        said = {
            moengage.RATE_LIMIT_LIMIT_HEADER: str(self.limit),
            moengage.RATE_LIMIT_REMAINING_HEADER: str(max(0, self.limit - self._in_window)),
            moengage.RATE_LIMIT_RESET_HEADER: str(int(self.period)),
        }
        return status, {**headers, **said}, body


def test_a_lower_limit_in_the_headers_paces_the_run_before_any_429() -> None:
    # The job says 6,000 a minute; the workspace takes 1,200 and says so in its headers.
    workspace = HeaderWorkspace(1_200, 60.0, way_there=0.01, way_back=0.01)
    done = deliver(workspace, users(3_000), updates=6_000, period=60.0, batch=50)

    assert done.stats.rate_limit_learned == 1_200
    assert done.stats.http_429 == 0 and workspace.refused == 0
    assert max_in_window(workspace.arrivals, 60.0) <= 1_200
    assert len(workspace.accepted) == 3_000


def test_without_the_headers_the_same_workspace_teaches_by_429s() -> None:
    workspace = Workspace(1_200, 60.0, way_there=0.01, way_back=0.01)
    done = deliver(workspace, users(3_000), updates=6_000, period=60.0, batch=50)

    assert done.stats.rate_limit_learned is None
    assert done.stats.http_429 > 0  # what the headers spare the run
