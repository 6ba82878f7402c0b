"""delivery: attempts, retries, 429 pauses, splitting and bisection against a scripted server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pandas as pd
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from importer import moengage
from importer.config import ApiConfig, DeliveryConfig
from importer.quota.window import WindowLimiter
from importer.rows import Chunk, Row
from importer.run.delivery import (
    MAX_REFUSALS_IN_A_ROW,
    ApiAbort,
    DeliveryStats,
    SendAborted,
    Sender,
    SendResult,
    open_transport,
)
from importer.run.transport import CertificateFailure, FakeTransport, NoAnswer, Request, Respond
from tests.support import ids_in

KEY = "s3cret-api-key-XYZ"
WORKSPACE = "WS123"
CHUNK = Chunk("in.csv", pd.DataFrame({"user_id": ["x"]}, index=[1]))


def make_rows(count: int, bad: frozenset[int] = frozenset(), pad: int = 0) -> list[Row]:
    rows = []
    for number in range(1, count + 1):
        customer_id = f"bad-{number}" if number in bad else f"u{number}"
        element = moengage.customer_element(customer_id, {"pad": "x" * pad}, False)
        rows.append(Row("in.csv", number, customer_id, orjson.dumps(element), CHUNK))
    return rows


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float

    def customer_ids(self) -> list[str]:
        parsed = orjson.loads(self.body)
        elements = parsed["elements"] if parsed.get("type") == "transition" else [parsed]
        return [element["customer_id"] for element in elements]


Handler = Callable[["FakeApi", web.Request, Seen], Awaitable[web.StreamResponse]]


@dataclass
class FakeApi:
    """A scripted stand-in for MoEngage: records every request, answers as the test says."""

    behave: Handler
    seen: list[Seen] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen = Seen(
            request.path, dict(request.query), dict(request.headers), body, time.monotonic()
        )
        self.seen.append(seen)
        response = await self.behave(self, request, seen)
        cut = request.transport is None or request.transport.is_closing()
        if response.status == 200 and not cut:
            self.accepted.extend(seen.customer_ids())
        return response


def ok() -> web.Response:
    return web.json_response({"status": "success", "message": moengage.SUCCESS_MESSAGE})


def fail(
    status: int, error_type: str, message: str, request_id: str, **headers: str
) -> web.Response:
    body = moengage.error_body(error_type, message, request_id)
    return web.json_response(body, status=status, headers=headers)


def config(base_url: str, **delivery: Any) -> tuple[ApiConfig, DeliveryConfig]:
    api_fields = {k: delivery.pop(k) for k in ("endpoint", "project_code") if k in delivery}
    api = ApiConfig(workspace_id=WORKSPACE, api_key=KEY, base_url=base_url, **api_fields)
    settings = {
        "max_attempts": 3,
        "timeout_seconds": 2,
        "backoff_base_seconds": 0.01,
        "backoff_max_seconds": 0.05,
        **delivery,
    }
    return api, DeliveryConfig(**settings)


Scenario = Callable[[Sender, FakeApi, DeliveryStats, WindowLimiter], Awaitable[Any]]


def run(
    behave: Handler,
    scenario: Scenario,
    updates: int = 10_000,
    period: float = 1.0,
    **delivery: Any,
) -> FakeApi:
    """Start the scripted server on loopback, build a Sender against it, play the scenario."""
    fake = FakeApi(behave)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", fake.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            api, settings = config(str(server.make_url("/")), **delivery)
            limiter = WindowLimiter(updates, period)
            stats = DeliveryStats()
            async with open_transport(api, settings) as transport:
                sender = Sender(api, settings, limiter, transport, stats)
                await scenario(sender, fake, stats, limiter)
            assert limiter.in_flight == 0  # every attempt gave its permit back
        finally:
            await server.close()

    asyncio.run(main())
    return fake


async def always_ok(fake: FakeApi, request: web.Request, seen: Seen) -> web.Response:
    return ok()


def test_accepted_request_is_well_formed() -> None:
    rows = make_rows(5)

    async def scenario(sender: Sender, fake: FakeApi, stats: DeliveryStats, _: Any) -> None:
        result = await sender.send(rows)
        assert result.accepted == rows and result.refused == []
        assert (stats.requests, stats.retries, stats.http_429) == (1, 0, 0)
        assert stats.users_sent == 5 and stats.by_status == {200: 1}

    fake = run(always_ok, scenario)
    (seen,) = fake.seen
    assert seen.path == f"/v1/transition/{WORKSPACE}"
    assert seen.query == {}
    assert seen.body == moengage.bulk_body([row.encoded for row in rows])
    assert seen.headers["Content-Type"] == "application/json"
    expected = base64.b64encode(f"{WORKSPACE}:{KEY}".encode()).decode()
    assert seen.headers["Authorization"] == f"Basic {expected}"


def test_project_code_and_customer_endpoint() -> None:
    rows = make_rows(1)

    async def scenario(sender: Sender, *_: Any) -> None:
        assert (await sender.send(rows)).accepted == rows

    fake = run(always_ok, scenario, endpoint="customer", project_code="PORT 1")
    (seen,) = fake.seen
    assert seen.path == f"/v1/customer/{WORKSPACE}"
    assert seen.query == {"project_code": "PORT 1"}
    assert seen.body == rows[0].encoded


def test_5xx_then_success_is_retried_and_counted() -> None:
    async def flaky(fake: FakeApi, request: web.Request, seen: Seen) -> web.Response:
        if len(fake.seen) <= 2:
            return fail(503, "ServiceUnavailable", "try later", f"r{len(fake.seen)}")
        return ok()

    rows = make_rows(4)

    async def scenario(sender: Sender, fake: FakeApi, stats: DeliveryStats, _: Any) -> None:
        result = await sender.send(rows)
        assert result.accepted == rows
        assert (stats.requests, stats.retries) == (3, 2)
        assert stats.by_status == {503: 2, 200: 1}
        assert stats.users_sent == 12

    run(flaky, scenario)


def test_retry_after_on_5xx_is_honoured() -> None:
    async def busy(fake: FakeApi, request: web.Request, seen: Seen) -> web.Response:
        if len(fake.seen) == 1:
            return fail(503, "Busy", "busy", "r1", **{"Retry-After": "0.3"})
        return ok()

    async def scenario(sender: Sender, *_: Any) -> None:
        assert len((await sender.send(make_rows(2))).accepted) == 2

    fake = run(busy, scenario)
    assert fake.seen[1].at - fake.seen[0].at >= 0.29


def cut_first(times: int) -> Handler:
    async def cut(fake: FakeApi, request: web.Request, seen: Seen) -> web.StreamResponse:
        if len(fake.seen) <= times:
            assert request.transport is not None
            request.transport.close()  # the connection drops with no answer
            return web.Response()
        return ok()

    return cut


def test_cut_connections_are_retried() -> None:
    rows = make_rows(3)

    async def scenario(sender: Sender, fake: FakeApi, stats: DeliveryStats, _: Any) -> None:
        result = await sender.send(rows)
        assert result.accepted == rows
        assert stats.requests == 3 and stats.retries == 2
        assert sum(stats.errors.values()) == 2

    fake = run(cut_first(2), scenario, max_attempts=3)
    assert fake.accepted == ["u1", "u2", "u3"]


@pytest.mark.slow  # about half a second or more: not in make test-fast
def test_429_pauses_every_sender_and_does_not_eat_failure_attempts() -> None:
    async def limited(fake: FakeApi, request: web.Request, seen: Seen) -> web.Response:
        if len(fake.seen) <= 3:
            return fail(
                429, "RateLimitError", "Rate limit exceeded", "rl", **{"Retry-After": "0.2"}
            )
        return ok()

    rows = make_rows(2)

    async def scenario(sender: Sender, fake: FakeApi, stats: DeliveryStats, lim: Any) -> None:
        first = asyncio.ensure_future(sender.send(rows))
        while not fake.seen:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        # Another batch arriving now waits for the pause too: the limit is the workspace's.
        other = await sender.send(make_rows(1))
        assert other.accepted
        assert (await first).accepted == rows
        assert stats.http_429 == 3
        assert stats.by_status[429] == 3

    # One failure attempt allowed: 429s use their own budget.
    fake = run(limited, scenario, max_attempts=1)
    first, *later = fake.seen
    assert len(later) == 4
    # Nothing was sent while paused: the retry and the other batch both waited out Retry-After.
    assert all(seen.at - first.at >= 0.19 for seen in later)
    assert min(seen.at for seen in later[2:]) - max(seen.at for seen in later[:2]) >= 0.15


def test_413_splits_until_requests_fit() -> None:
    limit = 700

    async def small_only(fake: FakeApi, request: web.Request, seen: Seen) -> web.Response:
        if len(seen.body) > limit:
            return fail(413, "PayloadTooLarge", "too large", "big")
        return ok()

    rows = make_rows(12, pad=60)
    rows.append(make_rows(13, pad=800)[-1])  # alone it is still too large

    async def scenario(sender: Sender, *_: Any) -> None:
        result = await sender.send(rows)
        assert result.accepted == rows[:12]
        (refusal,) = result.refused
        assert (refusal.row.row, refusal.stage, refusal.status) == (13, "rejected", 413)

    fake = run(small_only, scenario)
    assert sorted(fake.accepted) == sorted(f"u{n}" for n in range(1, 13))


def test_400_bisects_to_the_refused_elements() -> None:
    async def picky(fake: FakeApi, request: web.Request, seen: Seen) -> web.Response:
        if any(cid.startswith("bad-") for cid in seen.customer_ids()):
            return fail(400, "BadRequestError", "invalid element", f"rid-{len(fake.seen)}")
        return ok()

    rows = make_rows(40, bad=frozenset({3, 17, 18}))

    async def scenario(sender: Sender, fake: FakeApi, stats: DeliveryStats, _: Any) -> None:
        result = await sender.send(rows)
        assert sorted(r.row.row for r in result.refused) == [3, 17, 18]
        assert all(r.stage == "rejected" and r.status == 400 for r in result.refused)
        assert result.refused[0].error.startswith("400 BadRequestError: invalid element")
        assert "(request_id rid-" in result.refused[0].error
        assert sorted(r.row for r in result.accepted) == sorted(set(range(1, 41)) - {3, 17, 18})
        assert stats.retries == 0  # splitting is not retrying

    fake = run(picky, scenario)
    # Every good element reached the API exactly once; no bad one was accepted.
    assert sorted(fake.accepted) == sorted(f"u{n}" for n in set(range(1, 41)) - {3, 17, 18})


def test_400_on_the_customer_endpoint_is_rejected_at_once() -> None:
    async def refuse(fake: FakeApi, request: web.Request, seen: Seen) -> web.Response:
        return fail(400, "BadRequestError", "attribute name is blocked", "c1")

    async def scenario(sender: Sender, fake: FakeApi, *_: Any) -> None:
        result = await sender.send(make_rows(1))
        (refusal,) = result.refused
        assert (refusal.stage, refusal.status) == ("rejected", 400)
        assert refusal.error == "400 BadRequestError: attribute name is blocked (request_id c1)"

    fake = run(refuse, scenario, endpoint="customer")
    assert len(fake.seen) == 1


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (401, "bad credentials"),
        (403, "suspended or blocked"),
        (409, "does not match"),
        (404, "base_url"),
        (415, "base_url"),
    ],
)
def test_fatal_answers_abort_and_nothing_more_is_sent(status: int, words: str) -> None:
    async def refuse(fake: FakeApi, request: web.Request, seen: Seen) -> web.Response:
        auth = request.headers["Authorization"]  # a careless server echoing the request
        return fail(status, "Refused", f"refused {auth} {KEY}", "fatal-1")

    async def scenario(sender: Sender, fake: FakeApi, stats: DeliveryStats, _: Any) -> None:
        with pytest.raises(SendAborted) as caught:
            await sender.send(make_rows(5))
        error = caught.value
        assert error.status == status
        assert words in error.message and "fatal-1" in error.message
        assert error.partial == SendResult()  # nothing was settled before the abort
        with pytest.raises(ApiAbort):
            await sender.send(make_rows(2))
        assert len(fake.seen) == 1 and stats.requests == 1
        text = f"{error} {error!r} {error.message} {error.args}"
        assert KEY not in text
        assert base64.b64encode(f"{WORKSPACE}:{KEY}".encode()).decode() not in text

    run(refuse, scenario)


def test_key_never_in_refusal_text() -> None:
    async def echo(fake: FakeApi, request: web.Request, seen: Seen) -> web.Response:
        auth = request.headers["Authorization"]
        return fail(400, "Bad", f"you sent {auth} / {KEY}", "e1")

    async def scenario(sender: Sender, *_: Any) -> None:
        result = await sender.send(make_rows(1))
        (refusal,) = result.refused
        assert KEY not in refusal.error and "Basic ***" in refusal.error

    run(echo, scenario)


@pytest.mark.slow  # about half a second or more: not in make test-fast
def test_a_batch_larger_than_the_limit_is_split_to_fit() -> None:
    async def scenario(sender: Sender, fake: FakeApi, *_: Any) -> None:
        assert len((await sender.send(make_rows(10))).accepted) == 10

    fake = run(always_ok, scenario, updates=4, period=0.1)
    assert all(len(seen.customer_ids()) <= 4 for seen in fake.seen)
    assert sorted(fake.accepted) == sorted(f"u{n}" for n in range(1, 11))


def test_cancelled_send_releases_its_permit() -> None:
    started = asyncio.Event()

    async def hang(fake: FakeApi, request: web.Request, seen: Seen) -> web.Response:
        started.set()
        await asyncio.sleep(0.5)
        return ok()

    async def scenario(sender: Sender, fake: FakeApi, stats: DeliveryStats, lim: Any) -> None:
        task = asyncio.ensure_future(sender.send(make_rows(3)))
        await started.wait()
        assert lim.in_flight == 3
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert lim.in_flight == 0 and lim.occupied() == 3  # released, still in the window

    run(hang, scenario)


def settled_ids(result: SendResult) -> tuple[list[int], list[tuple[int, str, int | None]]]:
    accepted = [row.row for row in result.accepted]
    refused: list[tuple[int, str, int | None]] = [
        (r.row.row, r.stage, r.status) for r in result.refused
    ]
    return accepted, refused


def bisect_then(later: Handler) -> Handler:
    """400 while a bad element is in the body; a body holding u5 goes to `later`; else 200."""

    async def behave(fake: FakeApi, request: web.Request, seen: Seen) -> web.StreamResponse:
        ids = seen.customer_ids()
        if any(cid.startswith("bad-") for cid in ids):
            return fail(400, "BadRequestError", "invalid element", "b")
        if "u5" in ids:
            return await later(fake, request, seen)
        return ok()

    return behave


async def unauthorized(fake: FakeApi, request: web.Request, seen: Seen) -> web.Response:
    return fail(401, "AuthenticationError", "bad key", "auth-1")


# Rows 1-8 with row 2 bad: [1-8] 400, [1-4] 400, [1-2] 400, [1] ok, [2] refused, [3-4] ok,
# then [5-8] meets the scripted later answer.
SETTLED_FIRST = ([1, 3, 4], [(2, "rejected", 400)])


@pytest.mark.parametrize("own_result", [False, True])
def test_abort_on_a_later_half_carries_what_was_settled(own_result: bool) -> None:
    rows = make_rows(8, bad=frozenset({2}))

    async def scenario(sender: Sender, fake: FakeApi, *_: Any) -> None:
        mine = SendResult() if own_result else None
        with pytest.raises(SendAborted) as caught:
            await sender.send(rows, mine)
        abort = caught.value
        assert abort.status == 401
        assert settled_ids(abort.partial) == SETTLED_FIRST  # rows 5-8 stay pending
        if mine is not None:
            assert abort.partial is mine
        # Another batch after the abort sends nothing and settles nothing.
        with pytest.raises(SendAborted) as again:
            await sender.send(make_rows(2))
        assert again.value.partial == SendResult()

    fake = run(bisect_then(unauthorized), scenario)
    assert fake.accepted == ["u1", "u3", "u4"]
    assert len(fake.seen) == 7


def test_cancel_mid_split_keeps_what_was_settled() -> None:
    rows = make_rows(8, bad=frozenset({2}))
    hanging = asyncio.Event()

    async def hang(fake: FakeApi, request: web.Request, seen: Seen) -> web.Response:
        hanging.set()
        await asyncio.sleep(1.0)
        return ok()

    async def scenario(sender: Sender, fake: FakeApi, stats: DeliveryStats, lim: Any) -> None:
        result = SendResult()
        task = asyncio.ensure_future(sender.send(rows, result))
        await hanging.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert settled_ids(result) == SETTLED_FIRST  # the cancelled [5-8] stays pending
        # Past a period, the answered attempts' slots are free; the cancelled request's are
        # still held: it may yet reach the server.
        assert occupied_at(lim, lim.clock() + 0.4) == 4

    run(bisect_then(hang), scenario, period=0.3, timeout_seconds=2)


def occupied_at(limiter: WindowLimiter, when: float) -> int:
    """The slots the limiter holds at `when` (its clock), read without sleeping till then: a
    stalled test process cannot carry the reading past the moment asserted on."""
    limiter.clock = lambda: when
    return limiter.occupied()


async def too_slow(fake: FakeApi, request: web.Request, seen: Seen) -> web.Response:
    await asyncio.sleep(1.0)
    return ok()


@pytest.mark.parametrize(
    ("behave", "held"),
    [(always_ok, 0), (too_slow, 2), (cut_first(100), 2)],
    ids=["answered", "timeout", "cut"],
)
@pytest.mark.slow  # about half a second or more: not in make test-fast
def test_only_unanswered_attempts_hold_their_slots_longer(behave: Handler, held: int) -> None:
    # Period 0.3 s, timeout 0.4 s: an answered attempt frees its slots 0.3 s after it ends;
    # one without an answer holds them 0.4 s more, as it may still be on its way.
    async def scenario(sender: Sender, fake: FakeApi, stats: DeliveryStats, lim: Any) -> None:
        # Without an answer the lone request is an outage, stopped at once (0.01 s).
        with contextlib.suppress(ApiAbort):
            await sender.send(make_rows(2))
        assert stats.requests == 1
        ended = lim.clock()
        assert occupied_at(lim, ended + 0.4) == held
        assert occupied_at(lim, ended + 0.75) == 0

    run(
        behave,
        scenario,
        period=0.3,
        timeout_seconds=0.4,
        max_attempts=1,
        max_outage_seconds=0.01,
    )


# --- the rules, without sockets: a function from request to answer behind the transport seam


def answer(status: int, message: str = "", **headers: str) -> tuple[int, dict[str, str], bytes]:
    if 200 <= status <= 299:
        body = {"status": "success", "message": moengage.SUCCESS_MESSAGE}
    else:
        body = moengage.error_body("Error", message or f"status {status}", f"req-{status}")
    return status, headers, orjson.dumps(body)


FakeScenario = Callable[[Sender, FakeTransport, DeliveryStats, WindowLimiter], Awaitable[Any]]


def play(
    respond: Respond,
    scenario: FakeScenario,
    updates: int = 10_000,
    period: float = 1.0,
    burst: int | None = None,
    **delivery: Any,
) -> FakeTransport:
    """A Sender over a FakeTransport answering with `respond`; plays the scenario."""
    transport = FakeTransport(respond)

    async def main() -> None:
        api, settings = config("http://127.0.0.1:9", **delivery)
        limiter = WindowLimiter(updates, period, burst=burst)
        stats = DeliveryStats()
        sender = Sender(api, settings, limiter, transport, stats)
        await scenario(sender, transport, stats, limiter)
        assert limiter.in_flight == 0  # every attempt gave its permit back

    asyncio.run(main())
    return transport


@pytest.mark.slow
def test_every_request_failing_is_an_outage_that_stops_with_rows_pending() -> None:
    def down(request: Request) -> tuple[int, dict[str, str], bytes]:
        return answer(503, "down for maintenance")

    async def scenario(sender: Sender, fake: FakeTransport, stats: DeliveryStats, _: Any) -> None:
        result = SendResult()
        with pytest.raises(ApiAbort) as stopped:
            await sender.send(make_rows(3), result)
        assert result.accepted == [] and result.refused == []  # pending, not dead-lettered
        assert "max_outage_seconds" in stopped.value.message
        assert "down for maintenance" in stopped.value.message
        assert stats.outages == 1

    fake = play(down, scenario, max_attempts=2, max_outage_seconds=3.6)
    # max_attempts failures; the halves once each ([1], [2, 3], then [2] and [3]): nothing
    # succeeds anywhere, so an outage, whose single probes go after 1 s and 2 s more.
    gaps = [later - earlier for earlier, later in itertools.pairwise(fake.started_at)]
    sizes = [len(ids_in(request)) for request in fake.requests]
    assert sizes == [3, 3, 1, 2, 1, 1, 1, 1], gaps
    assert 0.9 <= gaps[-2] <= 1.3 and 1.9 <= gaps[-1] <= 2.3


@pytest.mark.slow
def test_an_outage_pauses_probes_with_one_request_and_resumes() -> None:
    loop_time: list[float] = []
    in_flight: list[int] = [0, 0]  # now, most while down

    async def down_for_a_while(request: Request) -> tuple[int, dict[str, str], bytes]:
        now = asyncio.get_running_loop().time()
        loop_time.append(now)
        in_flight[0] += 1
        try:
            await asyncio.sleep(0.01)
            if now - loop_time[0] < 1.5:
                in_flight[1] = max(in_flight[1], in_flight[0])
                raise NoAnswer("connection refused")
            return answer(200)
        finally:
            in_flight[0] -= 1

    async def scenario(sender: Sender, fake: FakeTransport, stats: DeliveryStats, _: Any) -> None:
        batches = [make_rows(2), make_rows(3), make_rows(4), make_rows(5)]
        results = await asyncio.gather(*(sender.send(rows) for rows in batches))
        assert [len(r.accepted) for r in results] == [2, 3, 4, 5]
        assert all(not r.refused for r in results)
        assert stats.outages == 1 and stats.outage_seconds > 0.5

    fake = play(down_for_a_while, scenario, max_attempts=2, concurrency=4)
    # The first failures came together; in the outage one probe at a time went out.
    outage_requests = [t for t in fake.started_at if t - fake.started_at[0] < 1.5]
    assert len(outage_requests) <= 4 + 2


def test_a_request_failing_on_its_own_spends_its_attempts_and_is_dead_lettered() -> None:
    def poisoned(request: Request) -> tuple[int, dict[str, str], bytes]:
        if "poison" in ids_in(request):
            return answer(500, "internal error for this one")
        return answer(200)

    async def scenario(sender: Sender, fake: FakeTransport, stats: DeliveryStats, _: Any) -> None:
        poison = [Row("in.csv", 1, "poison", orjson.dumps({"customer_id": "poison"}), CHUNK)]
        bad = asyncio.ensure_future(sender.send(poison))
        while not bad.done():  # others keep being answered meanwhile
            assert (await sender.send(make_rows(1))).accepted
        result = await bad
        assert [(r.stage, r.status) for r in result.refused] == [("delivery", 500)]
        assert "after 3 attempts" in result.refused[0].error
        assert stats.outages == 0

    play(poisoned, scenario, max_attempts=3, concurrency=4)


def test_a_timeout_on_its_own_is_retried_then_dead_lettered() -> None:
    async def slow_for_one(request: Request) -> tuple[int, dict[str, str], bytes]:
        if "slow" in ids_in(request):
            raise NoAnswer("timeout (0.2 s)")
        return answer(200)

    async def scenario(sender: Sender, fake: FakeTransport, stats: DeliveryStats, _: Any) -> None:
        slow = [Row("in.csv", 1, "slow", orjson.dumps({"customer_id": "slow"}), CHUNK)]
        task = asyncio.ensure_future(sender.send(slow))
        while not task.done():
            await sender.send(make_rows(1))
        refused = (await task).refused
        assert [(r.stage, r.status) for r in refused] == [("delivery", None)]
        assert refused[0].error == "timeout (0.2 s) after 2 attempts"

    play(slow_for_one, scenario, max_attempts=2, concurrency=4)


@pytest.mark.slow  # about half a second or more: not in make test-fast
def test_429s_never_dead_letter_and_stop_only_after_max_rate_limited_seconds() -> None:
    def limited(request: Request) -> tuple[int, dict[str, str], bytes]:
        return answer(429, "Rate limit exceeded", **{"Retry-After": "0.1"})

    async def scenario(sender: Sender, fake: FakeTransport, stats: DeliveryStats, _: Any) -> None:
        result = SendResult()
        started = asyncio.get_running_loop().time()
        with pytest.raises(ApiAbort) as stopped:
            await sender.send(make_rows(2), result)
        assert asyncio.get_running_loop().time() - started >= 0.5
        assert stopped.value.status == 429
        assert "max_rate_limited_seconds" in stopped.value.message
        assert result.refused == [] and result.accepted == []
        assert stats.http_429 >= 4

    play(limited, scenario, max_attempts=1, max_rate_limited_seconds=0.5)


def test_429_lowers_the_ceiling_and_success_lets_it_climb_back() -> None:
    calls = [0]

    def once_limited(request: Request) -> tuple[int, dict[str, str], bytes]:
        calls[0] += 1
        if calls[0] == 3:
            return answer(429, "Rate limit exceeded", **{"Retry-After": "0"})
        return answer(200)

    async def scenario(sender: Sender, fake: FakeTransport, stats: DeliveryStats, _: Any) -> None:
        for _ in range(2):
            await sender.send(make_rows(10))
        limit = sender.adaptive.limit_per_second
        assert (await sender.send(make_rows(10))).accepted
        lowered = sender.adaptive.rate()
        assert lowered <= limit * 0.55
        await asyncio.sleep(0.3)
        assert sender.adaptive.rate() > lowered  # additive increase, towards the limit
        assert stats.rate_limited_at is not None and stats.accepted_since_429 == 10

    play(once_limited, scenario, updates=1000, period=1.0)


def test_a_redirect_is_never_followed_and_stops_the_run() -> None:
    def moved(request: Request) -> tuple[int, dict[str, str], bytes]:
        return answer(307, "moved", Location="https://elsewhere.example/v1/transition/WS123")

    async def scenario(sender: Sender, fake: FakeTransport, stats: DeliveryStats, _: Any) -> None:
        result = SendResult()
        with pytest.raises(ApiAbort) as stopped:
            await sender.send(make_rows(4), result)
        assert stopped.value.status == 307
        assert "https://elsewhere.example/v1/transition/WS123" in stopped.value.message
        assert result.accepted == [] and result.refused == []
        with pytest.raises(ApiAbort):  # and nothing more is sent
            await sender.send(make_rows(1))

    fake = play(moved, scenario)
    assert len(fake.requests) == 1


def test_every_request_refused_stops_after_a_handful_not_two_per_row() -> None:
    def refuse_all(request: Request) -> tuple[int, dict[str, str], bytes]:
        return answer(400, "the sandbox answers every request so")

    async def scenario(sender: Sender, fake: FakeTransport, stats: DeliveryStats, _: Any) -> None:
        results = [SendResult() for _ in range(4)]
        outcomes = await asyncio.gather(
            *(sender.send(make_rows(200), result) for result in results),
            return_exceptions=True,
        )
        assert all(isinstance(outcome, ApiAbort) for outcome in outcomes)
        assert f"refused {MAX_REFUSALS_IN_A_ROW} requests in a row" in outcomes[0].message  # type: ignore[union-attr]
        assert "every request so" in outcomes[0].message  # type: ignore[union-attr]

    fake = play(refuse_all, scenario)
    assert len(fake.requests) <= MAX_REFUSALS_IN_A_ROW + 4


def test_a_bulk_400_about_the_whole_request_is_not_bisected() -> None:
    def bad_json(request: Request) -> tuple[int, dict[str, str], bytes]:
        return answer(400, "body is not valid JSON")

    async def scenario(sender: Sender, fake: FakeTransport, stats: DeliveryStats, _: Any) -> None:
        result = SendResult()
        with pytest.raises(ApiAbort) as stopped:
            await sender.send(make_rows(64), result)
        assert "as a whole" in stopped.value.message and "not valid JSON" in stopped.value.message
        assert result.refused == []

    fake = play(bad_json, scenario)
    assert len(fake.requests) == 1


def test_isolated_bad_elements_are_still_bisected_with_the_budget() -> None:
    def strict(request: Request) -> tuple[int, dict[str, str], bytes]:
        ids = ids_in(request)
        bad = [i for i, customer in enumerate(ids) if customer.startswith("bad")]
        if bad:
            return answer(400, f"element {bad[0]}: customer_id is a placeholder")
        return answer(200)

    async def scenario(sender: Sender, fake: FakeTransport, stats: DeliveryStats, _: Any) -> None:
        result = await sender.send(make_rows(512, bad=frozenset({1, 2, 3, 300})))
        assert sorted(r.row.row for r in result.refused) == [1, 2, 3, 300]
        assert len(result.accepted) == 508

    play(strict, scenario)


def test_stop_abandons_an_attempt_waiting_on_the_limiter_or_in_backoff() -> None:
    def flaky_then_ok(request: Request) -> tuple[int, dict[str, str], bytes]:
        if ids_in(request) == ["u1"]:
            return answer(503, "busy", **{"Retry-After": "5"})
        return answer(200)

    async def scenario(sender: Sender, fake: FakeTransport, stats: DeliveryStats, lim: Any) -> None:
        await sender.send(make_rows(5)[1:])  # fills the window (5 a minute) but for one slot
        in_backoff = asyncio.ensure_future(sender.send(make_rows(1)))  # 503, waits 5 s
        waiting = asyncio.ensure_future(sender.send(make_rows(3)))  # no room for 3
        await asyncio.sleep(0.2)
        sent = len(fake.requests)
        sender.stop()
        started = asyncio.get_running_loop().time()
        backed_off, held_back = await asyncio.gather(in_backoff, waiting)
        assert asyncio.get_running_loop().time() - started < 0.2
        assert backed_off.accepted == [] and backed_off.refused == []  # pending
        assert held_back.accepted == [] and held_back.refused == []
        assert len(fake.requests) == sent == 2

    play(flaky_then_ok, scenario, updates=5, period=60, burst=5, max_attempts=5)


def test_partial_echoes_of_the_key_never_reach_refusal_text() -> None:
    def echo(request: Request) -> tuple[int, dict[str, str], bytes]:
        return answer(400, f"bad key fragment {KEY[2:12].lower()} and {KEY.upper()}")

    async def scenario(sender: Sender, *_: Any) -> None:
        result = await sender.send(make_rows(1))
        error = result.refused[0].error
        assert KEY[2:12].lower() not in error.lower() and "***" in error

    play(echo, scenario)


def test_a_certificate_failure_stops_with_a_plain_message() -> None:
    def bad_certificate(request: Request) -> tuple[int, dict[str, str], bytes]:
        raise CertificateFailure("certificate verification failed for api-01.moengage.com")

    async def scenario(sender: Sender, *_: Any) -> None:
        with pytest.raises(ApiAbort) as stopped:
            await sender.send(make_rows(2))
        assert stopped.value.message.startswith("certificate verification failed for ")

    assert len(play(bad_certificate, scenario).requests) == 1


def test_waiting_on_names_what_holds_the_run_back() -> None:
    def limited_then_down(request: Request) -> tuple[int, dict[str, str], bytes]:
        if len(fake.requests) == 1:
            return answer(429, "Rate limit exceeded", **{"Retry-After": "5"})
        raise NoAnswer("connection reset")

    async def scenario(sender: Sender, fake: FakeTransport, stats: DeliveryStats, _: Any) -> None:
        assert sender.waiting_on() is None
        task = asyncio.ensure_future(sender.send(make_rows(2)))
        await asyncio.sleep(0.05)
        assert (sender.waiting_on() or "").startswith("429: every request waits")
        sender.stop()
        await task

    fake = FakeTransport(limited_then_down)

    async def main() -> None:
        api, settings = config("http://127.0.0.1:9")
        sender = Sender(api, settings, WindowLimiter(100, 1.0), fake, DeliveryStats())
        await scenario(sender, fake, DeliveryStats(), WindowLimiter(100, 1.0))

    asyncio.run(main())


def test_a_413_splits_until_each_request_fits_without_sockets() -> None:
    def small_only(request: Request) -> tuple[int, dict[str, str], bytes]:
        return answer(413, "too large") if len(ids_in(request)) > 3 else answer(200)

    async def scenario(sender: Sender, fake: FakeTransport, stats: DeliveryStats, _: Any) -> None:
        result = await sender.send(make_rows(10))
        assert [row.row for row in result.accepted] == list(range(1, 11))  # in order
        assert result.refused == []

    fake = play(small_only, scenario)
    assert [len(ids_in(r)) for r in fake.requests] == [10, 5, 2, 3, 5, 2, 3]
