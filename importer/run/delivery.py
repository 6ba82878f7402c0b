"""Sending requests: attempts under the limiter, 429 and outage pauses, splitting, row outcomes.

The rules, in the order an answer meets them (`Sender._after_answer`):

- 2xx: the rows are accepted.
- 3xx: never followed (a POST's body and key must go nowhere else): the run stops.
- 401, 403, 409 and 404, 405, 415: the run itself is refused: it stops.
- 429: the whole sender slows down (Retry-After pauses the limiter, the adaptive ceiling
  drops) and the request is sent again; no attempt budget is spent. Only
  `max_rate_limited_seconds` of nothing but 429s stops the run, rows pending.
- 5xx, timeouts, broken or refused connections: retried with backoff. A request spends its
  `max_attempts` (and ends in the dead-letter file, stage delivery) only while other
  requests get answers. When every request fails the API is down: the sender pauses,
  probes with one request at growing intervals, and resumes when it answers; an outage
  longer than `max_outage_seconds` stops the run, rows pending.
- 413: split. 400/422 on a bulk request: bisected to isolate the refused elements, unless
  the API says the request as a whole is wrong, or request after request is refused
  with none accepted: then the run stops, rows pending, with the API's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

import orjson

from importer import moengage
from importer import redaction as secrets
from importer.config import ApiConfig, DeliveryConfig
from importer.errors import RunAborted
from importer.quota.window import Permit, WindowLimiter
from importer.rows import Row
from importer.run import batching, retry
from importer.run.transport import (
    AiohttpTransport,
    CertificateFailure,
    NoAnswer,
    RequestFailure,
    Transport,
    check_plain_http,
)

log = logging.getLogger("importer")

Stage = Literal["rejected", "delivery"]

# Data refusals (400/422) in a row with no 2xx between them: the API refuses everything
# (a wrong workspace setting, a mapping every row breaks). Bisecting on would spend about
# two requests a row. A lone bad element costs about log2(batch) refusals in a row, and a
# run of k bad rows side by side (one customer's history, a bad day in an export) about
# 2k: 64 lets a run of some 30 bad rows be isolated, and still stops an export the API
# refuses whole after a few dozen requests, not 40,000.
MAX_REFUSALS_IN_A_ROW = 64
# Failed attempts in a row across all requests, no answer between them: the API is down.
# At least the requests in flight: when it goes down, all of them fail together.
MIN_FAILURES_FOR_OUTAGE = 3
# Probe intervals during an outage: the first, then doubling up to the cap.
FIRST_PROBE_SECONDS = 1.0
MAX_PROBE_SECONDS = 30.0


class ApiAbort(RunAborted):
    """The run cannot go on (credentials, account, URL, redirect, outage, 429s, refusals).

    `partial` holds what the interrupted send had settled before the abort (rows accepted by
    an earlier 2xx, rows refused); rows of the batch in neither list are pending.
    """

    def __init__(self, status: int | None, message: str, partial: SendResult | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.partial = partial if partial is not None else SendResult()

    def with_partial(self, partial: SendResult) -> ApiAbort:
        """The same abort, carrying what one send had settled."""
        return ApiAbort(self.status, self.message, partial)


@dataclass
class DeliveryStats:
    requests: int = 0  # HTTP attempts
    retries: int = 0  # attempts after the first for the same rows
    http_429: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # attempts without an answer
    users_sent: int = 0  # user updates attempted, retries included
    outages: int = 0
    outage_seconds: float = 0.0
    rate_limited_wait_seconds: float = 0.0  # every sender paused on a 429's Retry-After
    rate_limited_at: float | None = None  # the first 429 (clock time)
    accepted_since_429: int = 0  # users accepted after the first 429
    # The adaptive ceiling (updates a second) at the last 2xx after a 429: what the run
    # settled at, so about the workspace's real limit.
    settled_per_second: float | None = None

    def rate_settled_per_minute(self) -> float | None:
        """The pace 429s taught the run (None without 429s, or no 2xx after one)."""
        if self.settled_per_second is None:
            return None
        return round(self.settled_per_second * 60, 1)


@dataclass
class Refusal:
    row: Row
    stage: Stage
    status: int | None
    error: str


class _Stopped(Exception):
    """The sender was stopped before these rows' fate was known."""


class _OutageBegan(Exception):
    """Admitted by the limiter just as an outage began: not sent, it waits in the outage."""


@dataclass
class SendResult:
    accepted: list[Row] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)


@dataclass(frozen=True)
class _Answer:
    """How one request ended after its attempts: a status (None: no answer) and a reason."""

    status: int | None
    reason: str
    exhausted: bool = False  # retries used up: a delivery failure, not a refusal

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status <= 299


@dataclass
class _Budget:
    """Attempts spent on one set of rows; 429s count apart from failures."""

    attempts: int = 0
    failures: int = 0  # 5xx, timeouts, broken connections, outside an outage
    rate_limited: int = 0
    # The sender's answer count when these rows were first sent: any answer to another
    # request since then means the API is up, and a failure here is this request's own.
    answers_at_start: int = 0


class _Broadcast:
    """Wakes every waiter at once; each wait also ends after its timeout."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


class _Outage:
    """The API answering no one: requests wait here while one of them probes."""

    def __init__(
        self, stats: DeliveryStats, max_seconds: float, clock: Callable[[], float]
    ) -> None:
        self._stats = stats
        self._max_seconds = max_seconds
        self._clock = clock
        self.changed = _Broadcast()
        self.active = False
        self.started_at = 0.0
        self.reason = ""
        self._interval = FIRST_PROBE_SECONDS
        self._next_probe_at = 0.0
        self._probing = False

    def start(self, reason: str) -> None:
        if self.active:
            return
        now = self._clock()
        self.active, self.started_at, self.reason = True, now, reason
        self._interval = FIRST_PROBE_SECONDS
        self._next_probe_at = now + self._interval
        self._stats.outages += 1
        log.warning(
            "the API is not answering (%s): pausing, probing with one request at growing "
            "intervals; stopping after %s s",
            reason,
            f"{self._max_seconds:g}",
        )

    def end(self) -> None:
        if not self.active:
            return
        lasted = self._clock() - self.started_at
        self._stats.outage_seconds += lasted
        self.active = False
        self._probing = False
        log.warning("the API answers again after %.1f s: resuming", lasted)
        self.changed.notify()

    async def turn(self, stopping: asyncio.Event) -> bool:
        """Wait while the outage lasts: True when this caller is to send the probe, False
        when the outage is over. Raises ApiAbort once it has lasted `max_seconds`."""
        while True:
            if stopping.is_set():
                raise _Stopped
            if not self.active:
                return False
            now = self._clock()
            left = self.started_at + self._max_seconds - now
            if left <= 0:
                raise ApiAbort(None, self._too_long_message(now))
            if not self._probing and now >= self._next_probe_at:
                self._probing = True
                return True
            wait = left if self._probing else min(left, self._next_probe_at - now)
            await self.changed.wait(wait)

    def probe_failed(self, reason: str) -> None:
        self.reason = reason
        self._probing = False
        self._interval = min(self._interval * 2, MAX_PROBE_SECONDS)
        self._next_probe_at = self._clock() + self._interval
        self.changed.notify()

    def probe_abandoned(self) -> None:
        if self._probing:
            self._probing = False
            self.changed.notify()

    def _too_long_message(self, now: float) -> str:
        return (
            f"the API has not answered for {now - self.started_at:.0f} s (last: {self.reason}); "
            f"delivery.max_outage_seconds is {self._max_seconds:g}. The rows not yet "
            "accepted are pending: run the same command again once the API is back"
        )


@contextlib.asynccontextmanager
async def open_transport(api: ApiConfig, delivery: DeliveryConfig) -> AsyncIterator[Transport]:
    """The run's aiohttp transport, closed on exit. Call inside the loop."""
    transport = AiohttpTransport(
        timeout_seconds=delivery.timeout_seconds,
        concurrency=delivery.concurrency,
        ca_bundle=api.ca_bundle,
    )
    try:
        yield transport
    finally:
        await transport.close()


def request_url(api: ApiConfig, events: bool = False) -> str:
    if api.endpoint == batching.BULK:
        path = moengage.bulk_path(api.workspace_id)
    elif events:
        path = moengage.event_path(api.workspace_id)
    else:
        path = moengage.customer_path(api.workspace_id)
    return api.resolved_base_url() + path


def _with_project_code(url: str, project_code: str | None) -> str:
    if not project_code:
        return url
    return f"{url}?{urlencode({'project_code': project_code})}"


class Sender:
    """Sends one batch of rows and says what became of each row."""

    def __init__(
        self,
        api: ApiConfig,
        delivery: DeliveryConfig,
        limiter: WindowLimiter,
        transport: Transport,
        stats: DeliveryStats,
        rng: random.Random | None = None,
        *,
        events: bool = False,  # an events job: one element a request goes to /v1/event
    ) -> None:
        self._endpoint = api.endpoint
        self._delivery = delivery
        self._limiter = limiter
        self._clock = limiter.clock
        self._transport = transport
        self._stats = stats
        self._rng = rng or random.Random()
        self.url = request_url(api, events)
        check_plain_http(self.url, api.allow_insecure_http)
        self._post_url = _with_project_code(self.url, api.project_code)
        key = api.api_key.get_secret_value()
        self._headers: Mapping[str, str] = {
            "Content-Type": "application/json",
            "Authorization": _basic_auth(api.workspace_id, key),
        }
        # A server (or proxy) that echoes the request must not put the key in our messages.
        self._scrub = secrets.for_credentials(api.workspace_id, key)
        self._abort: ApiAbort | None = None  # once set, nothing more is sent
        # How late a request that got no answer may still reach the server, after we gave up
        # on it: its limiter slot is held this much longer (see _post).
        self._in_transit_bound = delivery.timeout_seconds
        # Set by stop(): no new attempt starts, and waits between attempts end early.
        self._stopping = asyncio.Event()
        self.adaptive = limiter.adaptive
        self._outage = _Outage(stats, delivery.max_outage_seconds, self._clock)
        self._outage_after = max(MIN_FAILURES_FOR_OUTAGE, delivery.concurrency)
        self._answers = 0  # HTTP answers that show the API working (all but 5xx)
        self._failures_in_a_row = 0  # attempts without a working answer, across requests
        self._refusals_in_a_row = 0
        self._rate_limited_since: float | None = None  # 429s and nothing else since then

    def stop(self) -> None:
        """A graceful stop: requests in flight finish, nothing new is tried (a wait on the
        limiter, a backoff or an outage pause is abandoned); rows whose request was not
        answered stay pending (neither accepted nor refused)."""
        self._stopping.set()
        self._outage.changed.notify()

    @property
    def outage(self) -> bool:
        return self._outage.active

    def waiting_on(self) -> str | None:
        """What holds the run back now, in words for a progress line (None: nothing)."""
        now = self._clock()
        if self._outage.active:
            return (
                f"the API is not answering ({self._outage.reason}): paused "
                f"{now - self._outage.started_at:.0f} s, probing"
            )
        if self._limiter.paused_until > now:
            return f"429: every request waits {self._limiter.paused_until - now:.0f} s more"
        if self.adaptive.throttled:
            return f"429s: slowed to {self.adaptive.rate() * 60:,.0f} updates/minute"
        return None

    async def send(self, rows: list[Row], result: SendResult | None = None) -> SendResult:
        """Deliver `rows`; every row ends accepted or refused, unless the send is cut short.

        Rows are appended to `result` (a new SendResult if None; it is also returned) as soon
        as their fate is known: a 2xx for the request holding them, or a refusal. While
        splitting, earlier halves are settled before later ones are sent, so:

        - on an answer that stops the run it raises ApiAbort whose `partial` is `result`,
          holding what was settled before the abort;
        - if the task is cancelled, a caller that passed its own `result` still has what was
          settled; the rows of the request in flight are not in it.

        Rows of `rows` in neither `result.accepted` nor `result.refused` are pending: their
        fate is unknown and they must be sent again on resume.
        """
        result = SendResult() if result is None else result
        try:
            await self._deliver(rows, result)
        except ApiAbort as abort:
            self._abort = self._abort or abort
            raise abort.with_partial(result) from None
        except _Stopped:
            pass  # what is not in `result` stays pending
        return result

    async def _deliver(self, rows: list[Row], result: SendResult) -> None:
        if _weight(rows) > self._limiter.updates:  # one request may not exceed the window
            # A lone element of grouped events splits into its rows' own elements.
            await self._halves(rows if len(rows) > 1 else rows[0].split(), result)
            return
        answer = await self._attempts(rows)
        if answer.ok:
            result.accepted.extend(rows)
        elif answer.exhausted or answer.status is None:
            self._refuse(rows, "delivery", answer, result)
        elif len(rows) > 1 and self._splittable(answer.status):
            await self._halves(rows, result)
        elif retry.is_data_refusal(answer.status):
            self._refuse(rows, "rejected", answer, result)
        else:  # an answer we do not understand: keep the rows for a replay
            self._refuse(rows, "delivery", answer, result)

    def _splittable(self, status: int) -> bool:
        # 413 splits anywhere; 400/422 bisect a bulk body to isolate the refused elements.
        return retry.is_too_large(status) or (
            self._endpoint == batching.BULK and retry.is_data_refusal(status)
        )

    async def _halves(self, rows: list[Row], result: SendResult) -> None:
        # One half after the other: bisection stays within the concurrency the caller chose.
        middle = len(rows) // 2
        await self._deliver(rows[:middle], result)
        await self._deliver(rows[middle:], result)

    @staticmethod
    def _refuse(rows: list[Row], stage: Stage, answer: _Answer, result: SendResult) -> None:
        result.refused.extend(Refusal(row, stage, answer.status, answer.reason) for row in rows)

    async def _attempts(self, rows: list[Row]) -> _Answer:
        """Send until an answer that is not transient, or the attempt budget is spent."""
        body = batching.request_body(rows, self._endpoint)
        budget = _Budget(answers_at_start=self._answers)
        while True:
            probing = False
            if self._outage.active:
                probing = await self._outage.turn(self._stopping)
                if not probing:
                    budget.failures = 0  # the outage was nobody's fault: a fresh budget
            if self._stopping.is_set():
                raise _Stopped
            try:
                outcome = await self._attempt(body, _weight(rows), budget, probing)
            except _OutageBegan:
                continue  # nothing was sent: it waits in the outage with the others
            except BaseException:
                if probing:  # ended without a verdict: another request probes
                    self._outage.probe_abandoned()
                raise
            if isinstance(outcome, _Answer):
                return outcome
            if probing and self._outage.active:
                self._outage.probe_failed(self._outage.reason)
            elif outcome > 0:
                await self._sleep(outcome)

    async def _attempt(
        self, body: bytes, users: int, budget: _Budget, probing: bool
    ) -> _Answer | float:
        """One attempt: the final answer for these rows, or the seconds to wait before the next."""
        try:
            status, headers, payload, granted_at = await self._post(body, users, budget, probing)
        except NoAnswer as failure:
            reason = self._scrub(failure.reason)
            self._stats.errors[reason] += 1
            return self._after_failure(None, reason, budget, None)
        except (CertificateFailure, RequestFailure) as failure:
            raise ApiAbort(None, self._scrub(str(failure))) from None
        return self._after_answer(status, headers, payload, granted_at, users, budget)

    def _after_answer(
        self,
        status: int,
        headers: Mapping[str, str],
        payload: bytes,
        granted_at: float,
        users: int,
        budget: _Budget,
    ) -> _Answer | float:
        self._stats.by_status[status] += 1
        if retry.is_transient(status):
            reason = self._scrub(_describe_answer(status, payload))
            wait = retry.retry_after_seconds(headers, time.time())
            return self._after_failure(status, reason, budget, wait)
        self._answered()
        if 200 <= status <= 299:
            self._accepted(users)
            return _Answer(status, "accepted")
        if retry.is_redirect(status):
            location = self._scrub(headers.get("Location", "") or "(no Location header)")
            raise ApiAbort(status, _redirect_message(status, location, self.url))
        reason = self._scrub(_describe_answer(status, payload))
        if retry.is_fatal(status):
            raise ApiAbort(status, _abort_message(status, reason, self.url))
        if retry.is_rate_limited(status):
            budget.rate_limited += 1
            return self._after_rate_limited(headers, granted_at, reason, budget)
        self._rate_limited_since = None
        if retry.is_data_refusal(status) and not retry.is_too_large(status):
            self._count_refusal(status, reason)
        return _Answer(status, f"{status} {reason}")

    def _accepted(self, users: int) -> None:
        self._refusals_in_a_row = 0
        self._rate_limited_since = None
        self.adaptive.accepted(users)
        if self._stats.rate_limited_at is not None:
            self._stats.accepted_since_429 += users
            self._stats.settled_per_second = self.adaptive.rate()

    def _answered(self) -> None:
        """Any answer but a 5xx: the API is up."""
        self._answers += 1
        self._failures_in_a_row = 0
        self._outage.end()

    def _after_failure(
        self, status: int | None, reason: str, budget: _Budget, wait: float | None
    ) -> _Answer | float:
        """A 5xx, timeout or broken connection: an outage, a retry, or the budget spent."""
        self._failures_in_a_row += 1
        if self._outage.active:
            self._outage.reason = reason
            return 0.0  # waits in the outage; spends nothing
        if self._failures_in_a_row >= self._outage_after:
            self._outage.start(reason)
            return 0.0
        budget.failures += 1
        if budget.failures < self._delivery.max_attempts:
            return wait if wait is not None else self._backoff(budget.failures)
        answered_since = self._answers > budget.answers_at_start
        # The API answered before, and no other request has failed since: the failures in a
        # row are all this one's (what a lone request, concurrency 1, can tell).
        alone = self._answers > 0 and self._failures_in_a_row == budget.failures
        if answered_since or alone:
            return _Answer(status, f"{reason} after {budget.failures} attempts", exhausted=True)
        # Nobody was answered since it was sent, and others fail too: the API is down.
        self._outage.start(reason)
        return 0.0

    def _after_rate_limited(
        self, headers: Mapping[str, str], granted_at: float, reason: str, budget: _Budget
    ) -> float:
        self._stats.http_429 += 1
        now = self._clock()
        if self._stats.rate_limited_at is None:
            self._stats.rate_limited_at = now
        if self._rate_limited_since is None:
            self._rate_limited_since = now
        elif now - self._rate_limited_since >= self._delivery.max_rate_limited_seconds:
            raise ApiAbort(429, self._rate_limited_too_long(now, reason))
        if self.adaptive.rate_limited(granted_at):
            log.info(
                "429 from the API: slowing to %s updates/minute",
                f"{self.adaptive.rate() * 60:,.0f}",
            )
        wait = retry.retry_after_seconds(headers, time.time())
        # Every sender waits, not only this one: the limit is the workspace's.
        pause = wait if wait is not None else self._backoff(budget.rate_limited)
        paused_until = self._limiter.paused_until
        self._stats.rate_limited_wait_seconds += max(0.0, now + pause - max(now, paused_until))
        self._limiter.pause_until(now + pause)
        return 0.0

    def _rate_limited_too_long(self, now: float, reason: str) -> str:
        settled = self._stats.rate_settled_per_minute()
        pace = f"; it accepted about {settled:,.0f} updates/minute" if settled else ""
        return (
            f"the API answered only 429 for {now - self._rate_limited_since:.0f} s "  # type: ignore[operator]
            f"(delivery.max_rate_limited_seconds is "
            f"{self._delivery.max_rate_limited_seconds:g}){pace}: {reason}. The rows not yet "
            "accepted are pending: lower rate_limit.updates or wait for the quota, then "
            "run the same command again"
        )

    def _count_refusal(self, status: int, reason: str) -> None:
        if self._endpoint == batching.BULK and retry.refuses_whole_request(reason):
            raise ApiAbort(
                status,
                f"the API refused a request as a whole ({status} {reason}): not something "
                "a row can fix, so nothing is bisected or dead-lettered; the rows are pending",
            )
        self._refusals_in_a_row += 1
        if self._refusals_in_a_row >= MAX_REFUSALS_IN_A_ROW:
            raise ApiAbort(
                status,
                f"the API refused {self._refusals_in_a_row} requests in a row and accepted "
                f"none ({status} {reason}); stopping rather than spending the quota on "
                "isolating every row. Check the mapping and the workspace; the rows not yet "
                "settled are pending",
            )

    async def _post(
        self, body: bytes, users: int, budget: _Budget, probing: bool
    ) -> tuple[int, Mapping[str, str], bytes, float]:
        """One HTTP attempt under a limiter permit, held until the answer is read.

        An answer (its status line) means the request reached the server before it: the
        permit is released plainly. Without one (a timeout, a broken connection, a
        cancellation) the request may still be in transit (a proxy, the kernel's send
        buffer after close) and reach the server after our release, so the slot is held
        `timeout_seconds` longer: the deadline we gave the whole exchange, given again to a
        request still on its way. This is an assumption about the network, not a proof;
        nothing on the client side can bound a proxy's buffering.
        """
        if self._abort is not None:
            raise self._abort
        permit = await self._admit(users)
        in_transit = False
        try:
            if self._abort is not None:  # another request aborted while we waited
                raise self._abort
            if self._stopping.is_set():  # stopped while the grant was on its way to us
                raise _Stopped
            if self._outage.active and not probing:
                # The outage began while this request waited for room: only the probe goes.
                raise _OutageBegan
            if budget.attempts:
                self._stats.retries += 1
            budget.attempts += 1
            self._stats.requests += 1
            self._stats.users_sent += users
            in_transit = True
            status, headers, payload = await self._transport.post(
                self._post_url, body, self._headers
            )
            in_transit = False  # answered: it arrived before this
            return status, headers, payload, permit.granted_at
        finally:
            permit.release(self._in_transit_bound if in_transit else 0.0)

    async def _admit(self, users: int) -> Permit:
        """A permit from the adaptive ceiling and the window limiter, or _Stopped if the
        sender is stopped first: a wait for room is abandoned, never turned into a send."""
        if self._stopping.is_set():
            raise _Stopped

        admission = asyncio.ensure_future(self._limiter.acquire(users))
        stopped = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({admission, stopped}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            _discard(admission)
            raise
        finally:
            stopped.cancel()
        if self._stopping.is_set() or not admission.done():
            _discard(admission)
            raise _Stopped
        return admission.result()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):  # a stop cuts the wait short
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def _backoff(self, attempt: int) -> float:
        return retry.backoff_delay(
            attempt,
            self._delivery.backoff_base_seconds,
            self._delivery.backoff_max_seconds,
            self._rng,
        )


def _weight(rows: list[Row]) -> int:
    """Updates these rows spend on the rate limit (an event element counts its actions)."""
    return sum(row.weight for row in rows)


def _discard(admission: asyncio.Future[Permit]) -> None:
    """Give back a permit nobody will use, whether the grant came already or comes later."""

    def release(done: asyncio.Future[Permit]) -> None:
        if not done.cancelled() and done.exception() is None:
            done.result().release()

    if admission.done():
        release(admission)
    else:
        admission.add_done_callback(release)
        admission.cancel()


def _basic_auth(login: str, password: str) -> str:
    """The Authorization header value (aiohttp 3.14 deprecates BasicAuth for this helper)."""
    import aiohttp

    encode = getattr(aiohttp, "encode_basic_auth", None)
    if encode is not None:
        return str(encode(login, password))
    return aiohttp.BasicAuth(login, password, "utf-8").encode()


def _describe_answer(status: int, payload: bytes) -> str:
    """`<type>: <message> (request_id X)` from an error body, whatever the server sent."""
    body: Any
    try:
        body = orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        body = payload[:300].decode("utf-8", "replace")
    message, request_id = moengage.parse_error(body)
    error_type = moengage.error_type(body)
    text = f"{error_type}: {message}" if error_type and error_type != message else message
    return f"{text} (request_id {request_id})" if request_id else text


def _abort_message(status: int, reason: str, url: str) -> str:
    meaning = moengage.STATUS_MEANINGS.get(status, "refused")
    where = f" at {url}" if status in moengage.CLIENT_BUG_STATUSES else ""
    return f"the API answered {status}{where}: {meaning}. {reason}"


def _redirect_message(status: int, location: str, url: str) -> str:
    return (
        f"the API answered {status} at {url}, redirecting to {location}. Redirects are never "
        "followed (the request body and the key must not go elsewhere): set api.base_url "
        "or api.data_center to the right host. Nothing was counted accepted; the rows are "
        "pending"
    )
