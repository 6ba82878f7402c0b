"""Sending one batch: attempts under the limiter, splitting and bisection, row outcomes.

What each answer means (2xx, 3xx, 401/403, 429, 5xx and no answer) is `importer.run.answers`;
the pause while the API answers no one is `importer.run.outages`. Here:

- 413: split. 400/422 on a bulk request: bisected to isolate the refused elements, unless
  the API says the request as a whole is wrong, or request after request is refused
  with none accepted: then the run stops, rows pending, with the API's message.
- 5xx (or any failure with an answer) that spent a request's attempts: bisected too, so
  only the rows that keep failing end in the dead-letter file (stage `delivery`). When
  nothing else was answered meanwhile the verdict is open (`Answer.undecided`): the halves
  go with one attempt each, and a lone row is put aside until the rest of its batch has
  been tried. If something was answered since, it gets a second chance with a full budget;
  if nothing was, every request failed: an outage, and the row waits in it (pending if the
  outage outlasts `max_outage_seconds`), never dead-lettered.
- Every row of a batch ends accepted or refused (dead-letter stage `rejected` or
  `delivery`), unless the run stops first: then it is pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from importer import redaction as secrets
from importer.config import ApiConfig, DeliveryConfig
from importer.errors import ApiAbort
from importer.quota.window import Permit, WindowLimiter
from importer.rows import Row
from importer.run import batching, retry
from importer.run.answers import MAX_REFUSALS_IN_A_ROW, Answer, Answers, Budget, HttpAnswer
from importer.run.lost_answers import LostAnswer, LostAnswers
from importer.run.outages import Outage, Stopped
from importer.run.results import DeliveryStats, Refusal, SendAborted, SendResult, Stage
from importer.run.transport import (
    CertificateFailure,
    NoAnswer,
    RequestFailure,
    Transport,
    check_plain_http,
    host_and_port,
    open_transport,
    request_url,
    with_project_code,
)
from importer.run.users_api import basic_auth

# Re-exported: the names callers of a send meet (the sender's results and its abort).
__all__ = [
    "MAX_REFUSALS_IN_A_ROW",
    "ApiAbort",
    "DeliveryStats",
    "Refusal",
    "SendAborted",
    "SendResult",
    "Sender",
    "open_transport",
    "request_url",
]

log = logging.getLogger("importer")


class _OutageBegan(Exception):
    """Admitted by the limiter just as an outage began: not sent, it waits in the outage."""


@dataclass
class _Batch:
    """One send: its number (the pieces it is bisected into fail as one batch, not many),
    and its lone rows put aside undecided, each with the answer count when it failed."""

    number: int
    aside: list[tuple[list[Row], int, str]] = field(default_factory=list)


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
        self.host = host_and_port(self.url)
        check_plain_http(self.url, api.allow_insecure_http)
        self._post_url = with_project_code(self.url, api.project_code)
        key = api.api_key.get_secret_value()
        self._headers: Mapping[str, str] = {
            "Content-Type": "application/json",
            "Authorization": basic_auth(api.workspace_id, key),
        }
        # A server (or proxy) that echoes the request must not put the key in our messages.
        self._scrub = secrets.for_credentials(api.workspace_id, key)
        self._abort: ApiAbort | None = None  # once set, nothing more is sent
        # How late a request that got no answer may still reach the server, after we gave up
        # on it: its limiter slot is held this much longer (see _post).
        self._in_transit_bound = delivery.timeout_seconds
        # Set by stop(): no new attempt starts, and waits between attempts end early.
        self._stopping = asyncio.Event()
        self._numbers = itertools.count(1)
        self.adaptive = limiter.adaptive
        self._outage = Outage(stats, delivery.max_outage_seconds, self._clock)
        self._lost = LostAnswers(delivery.on_lost_answer, stats, events=events)
        self._answers = Answers(
            delivery=delivery,
            endpoint=api.endpoint,
            url=self.url,
            limiter=limiter,
            stats=stats,
            outage=self._outage,
            scrub=self._scrub,
            backoff=self._backoff,
        )

    def stop(self) -> None:
        """A graceful stop: requests in flight finish, nothing new is tried (a wait on the
        limiter, a backoff or an outage pause is abandoned); rows whose request was not
        answered stay pending (neither accepted nor refused)."""
        self._stopping.set()
        self._outage.changed.notify()

    @property
    def outage(self) -> bool:
        return self._outage.active

    @property
    def answered(self) -> bool:
        """Whether the API has answered a request yet (accepted or refused it)."""
        return self._answers.count > 0

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

        - on an answer that stops the run it raises SendAborted (an ApiAbort) whose
          `partial` is `result`, holding what was settled before the abort;
        - if the task is cancelled, a caller that passed its own `result` still has what was
          settled; the rows of the request in flight are not in it.

        Rows of `rows` in neither `result.accepted` nor `result.refused` are pending: their
        fate is unknown and they must be sent again on resume.
        """
        result = SendResult() if result is None else result
        batch = _Batch(next(self._numbers))
        try:
            await self._deliver(rows, result, batch)
            await self._second_chances(batch, result)
        except ApiAbort as abort:
            self._abort = self._abort or abort
            raise SendAborted(abort, result) from None
        except Stopped:
            pass  # what is not in `result` stays pending
        return result

    async def _deliver(
        self,
        rows: list[Row],
        result: SendResult,
        batch: _Batch,
        allowed: int | None = None,
        second_chance: bool = False,
    ) -> None:
        if _weight(rows) > self._limiter.updates:  # one request may not exceed the window
            # A lone element of grouped events splits into its rows' own elements.
            await self._halves(rows if len(rows) > 1 else rows[0].split(), result, batch)
            return
        answer = await self._attempts(rows, batch, allowed, second_chance)
        if answer.ok:
            result.accepted.extend(rows)
        elif isinstance(answer, LostAnswer):  # events, on_lost_answer: dead_letter
            self._refuse(rows, "uncertain", answer, result)
        elif answer.undecided:
            await self._undecided(rows, answer, result, batch)
        elif answer.status is None:
            self._refuse(rows, "delivery", answer, result)
        elif len(rows) > 1 and (answer.exhausted or self._splittable(answer.status)):
            # A 5xx that spent its attempts while other requests passed is judged per row
            # too: the halves go on their own, and only rows that keep failing end here.
            await self._halves(rows, result, batch)
        elif answer.exhausted:
            self._refuse(rows, "delivery", answer, result)
        elif retry.refuses_request(answer.status):
            self._refuse(rows, "rejected", answer, result)
        else:  # an answer we do not understand: keep the rows for a replay
            self._refuse(rows, "delivery", answer, result)

    async def _undecided(
        self, rows: list[Row], answer: Answer, result: SendResult, batch: _Batch
    ) -> None:
        """Attempts spent while nothing else was answered: these rows' fault or the API's?
        The halves tell, one attempt each (the whole already had its full budget)."""
        if len(rows) > 1:
            await self._halves(rows, result, batch, allowed=1)
        else:
            batch.aside.append((rows, self._answers.count, answer.reason))

    async def _second_chances(self, batch: _Batch, result: SendResult) -> None:
        """The rows put aside, once the rest of their batch was tried: something answered
        since, they are sent again with a full budget and dead-lettered if they still fail;
        nothing answered, every request failed: an outage, which they wait in."""
        while batch.aside:
            rows, answers_then, reason = batch.aside.pop(0)
            if self._answers.count == answers_then:
                self._outage.start(reason)
            await self._deliver(rows, result, batch, second_chance=True)

    def _splittable(self, status: int) -> bool:
        # 413 and other refusals of a whole request split anywhere; 400/422 bisect a bulk
        # body to isolate the refused elements.
        if retry.is_data_refusal(status) and not retry.is_too_large(status):
            return self._endpoint == batching.BULK
        return retry.refuses_request(status)

    async def _halves(
        self, rows: list[Row], result: SendResult, batch: _Batch, allowed: int | None = None
    ) -> None:
        # One half after the other: bisection stays within the concurrency the caller chose.
        middle = len(rows) // 2
        await self._deliver(rows[:middle], result, batch, allowed)
        await self._deliver(rows[middle:], result, batch, allowed)

    @staticmethod
    def _refuse(rows: list[Row], stage: Stage, answer: Answer, result: SendResult) -> None:
        result.refused.extend(Refusal(row, stage, answer.status, answer.reason) for row in rows)

    async def _attempts(
        self, rows: list[Row], batch: _Batch, allowed: int | None, second_chance: bool
    ) -> Answer:
        """Send until an answer that is not transient, or the attempt budget is spent."""
        body = batching.request_body(rows, self._endpoint)
        budget = Budget(
            answers_at_start=self._answers.count,
            batch=batch.number,
            allowed=allowed,
            second_chance=second_chance,
        )
        while True:
            probing = False
            if self._outage.active:
                probing = await self._outage.turn(self._stopping)
                if not probing:
                    budget.failures = 0  # the outage was nobody's fault: a fresh budget
            if self._stopping.is_set():
                raise Stopped
            try:
                outcome = await self._attempt(body, _weight(rows), budget, probing)
            except _OutageBegan:
                continue  # nothing was sent: it waits in the outage with the others
            except BaseException:
                if probing:  # ended without a verdict: another request probes
                    self._outage.probe_abandoned()
                raise
            if isinstance(outcome, Answer):
                if probing and isinstance(outcome, LostAnswer):
                    self._outage.probe_failed(outcome.reason)  # another request probes next
                return self._lost.final(outcome, budget, sum(len(r.numbers) for r in rows))
            if probing and self._outage.active:
                self._outage.probe_failed(self._outage.reason)
            elif outcome > 0:
                await self._sleep(outcome)

    async def _attempt(
        self, body: bytes, users: int, budget: Budget, probing: bool
    ) -> Answer | float:
        """One attempt: the final answer for these rows, or the seconds to wait before the next."""
        try:
            answer = await self._post(body, users, budget, probing)
        except NoAnswer as failure:
            reason = self._scrub(failure.reason)
            self._stats.errors[reason] += 1
            after = self._answers.after_failure(None, reason, budget, None)
            return self._lost.after(failure, reason, budget) or after
        except (CertificateFailure, RequestFailure) as failure:
            raise ApiAbort(None, self._scrub(str(failure))) from None
        return self._answers.after_answer(answer, users, budget)

    async def _post(self, body: bytes, users: int, budget: Budget, probing: bool) -> HttpAnswer:
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
                raise Stopped
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
            return HttpAnswer(status, headers, payload, permit.granted_at)
        finally:
            permit.release(self._in_transit_bound if in_transit else 0.0)

    async def _admit(self, users: int) -> Permit:
        """A permit from the adaptive ceiling and the window limiter, or Stopped if the
        sender is stopped first: a wait for room is abandoned, never turned into a send."""
        if self._stopping.is_set():
            raise Stopped

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
            raise Stopped
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
