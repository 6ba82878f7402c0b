"""What an answer means for the run: accepted, retried, paused on (429, outage), or final.

The rules, in the order an answer meets them (`Answers.after_answer`):

- 2xx with MoEngage's success body (`"status": "success"`): the rows are accepted. Any
  other 2xx (an HTML page, a fail body, an empty 200, 202, 204: a proxy or a portal, not
  the API) is a failure like a 5xx: retried, never counted accepted.
- 3xx: never followed (a POST's body and key must go nowhere else): the run stops.
- 401, 403, 409 and 404, 405, 415: the run itself is refused: it stops.
- 429: the whole sender slows down (Retry-After pauses the limiter, the adaptive ceiling
  drops) and the request is sent again; no attempt budget is spent. Only
  `max_rate_limited_seconds` of nothing but 429s stops the run, rows pending.
- 407 (a proxy wants credentials): the run stops. 408 and 425: retried like a 5xx.
- 5xx, timeouts, broken or refused connections: retried with backoff. A request that
  spends its `max_attempts` while other requests are answered failed on its own: it is
  bisected, and the rows that keep failing end in the dead-letter file (stage delivery).
  One that spends them while nothing else was answered is undecided (these rows, or the
  API?): its halves are tried once each, and a lone row is put aside until they have
  spoken (`importer.run.delivery`). Several batches failing together, undecided requests
  in a row, or requests that got no answer at all: the API is down, an `Outage` begins.
- Refusals of whole requests (400/422, 413 and any other 4xx) counted: request after
  request refused with none accepted stops the run, rows not yet isolated pending.

Error texts kept (dead-letter `error`, logs, the report) are cut to MAX_REASON_CHARS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from importer import moengage
from importer.config import DeliveryConfig
from importer.errors import ApiAbort
from importer.quota.headers import learn_from_headers
from importer.quota.window import WindowLimiter
from importer.run import batching, retry
from importer.run.outages import Outage
from importer.run.results import DeliveryStats
from importer.run.users_api import is_success_body

log = logging.getLogger("importer")

# Data refusals (400/422) in a row with no 2xx between them: the API refuses everything
# (a wrong workspace setting, a mapping every row breaks). Bisecting on would spend about
# two requests a row. A lone bad element costs about log2(batch) refusals in a row, and a
# run of k bad rows side by side (one customer's history, a bad day in an export) about
# 2k: 64 lets a run of some 30 bad rows be isolated, and still stops an export the API
# refuses whole after a few dozen requests, not 40,000.
MAX_REFUSALS_IN_A_ROW = 64
# Batches failing together, no answer between them: the API is down. At least the requests
# in flight: when it goes down, all of them fail together. Batches, not attempts: one batch's
# retries and the pieces it is bisected into fail for the same rows, whatever the API does.
MIN_FAILURES_FOR_OUTAGE = 3
# Undecided requests (their attempts spent while nothing was answered) in a row: the API is
# down. Bisecting a batch of k failing rows among n meets an answer after about log2(n) + 2k
# of them; a real outage costs this many single attempts before the pause.
MAX_UNDECIDED_IN_A_ROW = 64
# An error text is cut to this many characters where it is kept (a 500 KB 413 page copied
# into every dead-letter line would otherwise be 50 MB for 100 rows).
MAX_REASON_CHARS = 1000


@dataclass(frozen=True)
class Answer:
    """How one request ended after its attempts: a status (None: no answer) and a reason."""

    status: int | None
    reason: str
    exhausted: bool = False  # retries used up: a delivery failure, not a refusal
    # Retries used up while no other request was answered: the rows' fault or the API's?
    undecided: bool = False

    @property
    def ok(self) -> bool:
        # A 2xx without MoEngage's success body spends attempts like a 5xx: never ok.
        return not self.exhausted and self.status is not None and 200 <= self.status <= 299


@dataclass
class Budget:
    """Attempts spent on one set of rows; 429s count apart from failures."""

    attempts: int = 0
    failures: int = 0  # 5xx, timeouts, broken connections, outside an outage
    rate_limited: int = 0
    lost: int = 0  # attempts without an answer that may have reached the server
    # The sender's answer count when these rows were first sent: any answer to another
    # request since then means the API is up, and a failure here is this request's own.
    answers_at_start: int = 0
    batch: int = 0  # the send these rows belong to (its pieces share it)
    allowed: int | None = None  # failures allowed before it is spent (None: max_attempts)
    second_chance: bool = False  # a lone row put aside while undecided, sent again


@dataclass(frozen=True)
class HttpAnswer:
    """One HTTP answer as the transport gave it, with when its permit was granted."""

    status: int
    headers: Mapping[str, str]
    payload: bytes
    granted_at: float


class Answers:
    """Reads each attempt's answer against what other requests got: the counters behind
    outages, 429 pauses and refusals in a row are the whole sender's, not one request's."""

    def __init__(
        self,
        *,
        delivery: DeliveryConfig,
        endpoint: str,
        url: str,
        limiter: WindowLimiter,
        stats: DeliveryStats,
        outage: Outage,
        scrub: Callable[[str], str],
        backoff: Callable[[int], float],
    ) -> None:
        self._delivery = delivery
        self._endpoint = endpoint
        self._url = url
        self._limiter = limiter
        self._adaptive = limiter.adaptive
        self._clock = limiter.clock
        self._stats = stats
        self._outage = outage
        self._scrub = scrub
        self._backoff = backoff
        self._outage_after = max(MIN_FAILURES_FOR_OUTAGE, delivery.concurrency)
        self.count = 0  # HTTP answers that show the API working (all but 5xx)
        self._failures_in_a_row = 0  # attempts without a working answer, across requests
        self._failing_batches: set[int] = set()  # batches failing since a working answer
        self._spent = 0  # requests that spent their attempts since a working answer
        self._undecided = 0  # of them, those spent while nothing else was answered
        self._refusals_in_a_row = 0
        self._rate_limited_since: float | None = None  # 429s and nothing else since then
        self._odd_successes: set[str] = set()  # non-MoEngage 2xx kinds already logged

    def after_answer(self, answer: HttpAnswer, users: int, budget: Budget) -> Answer | float:
        """The final answer for these rows, or the seconds to wait before the next attempt."""
        status, headers = answer.status, answer.headers
        self._stats.by_status[status] += 1
        self._learn(headers)
        if retry.is_transient(status):
            reason = self._scrub(describe_answer(status, answer.payload))
            wait = retry.retry_after_seconds(headers, time.time())
            return self.after_failure(status, reason, budget, wait)
        if 200 <= status <= 299 and not success_payload(answer.payload):
            reason = self._scrub(not_moengage_success(status, answer.payload))
            if reason not in self._odd_successes:
                self._odd_successes.add(reason)
                log.warning("%s: retried, never counted accepted", reason)
            return self.after_failure(status, reason, budget, None)
        self._answered()
        if 200 <= status <= 299:
            self._accepted(users)
            return Answer(status, "accepted")
        if retry.is_redirect(status):
            location = self._scrub(headers.get("Location", "") or "(no Location header)")
            raise ApiAbort(status, redirect_message(status, location, self._url))
        reason = self._scrub(describe_answer(status, answer.payload))
        if retry.is_fatal(status):
            raise ApiAbort(status, abort_message(status, reason, self._url))
        if retry.is_rate_limited(status):
            budget.rate_limited += 1
            return self._after_rate_limited(headers, answer.granted_at, reason, budget)
        self._rate_limited_since = None
        if retry.refuses_request(status):
            self._count_refusal(status, reason)
        return Answer(status, f"{status} {reason}")

    def _learn(self, headers: Mapping[str, str]) -> None:
        """MoEngage's rate-limit headers, when present, only ever lower the pace (quota.headers)."""
        learnt = learn_from_headers(self._limiter, headers)
        if learnt is not None:
            self._stats.rate_limit_learned = learnt
            log.info(
                "the API's rate-limit headers say %s updates a minute: pacing under that", learnt
            )

    def after_failure(
        self, status: int | None, reason: str, budget: Budget, wait: float | None
    ) -> Answer | float:
        """A 5xx, timeout or broken connection: an outage, a retry, or the budget spent."""
        self._failures_in_a_row += 1
        self._failing_batches.add(budget.batch)
        if self._outage.active:
            self._outage.reason = reason
            return 0.0  # waits in the outage; spends nothing
        if len(self._failing_batches) >= self._outage_after:
            self._outage.start(reason)
            return 0.0
        budget.failures += 1
        allowed = budget.allowed or self._delivery.max_attempts
        if budget.failures < allowed:
            return wait if wait is not None else self._backoff(budget.failures)
        return self._spent_attempts(status, reason, budget)

    def _spent_attempts(self, status: int | None, reason: str, budget: Budget) -> Answer | float:
        """A request that spent its attempts: its own failure, undecided, or an outage."""
        plural = "" if budget.failures == 1 else "s"
        failed = f"{reason} after {budget.failures} attempt{plural}"
        answered_since = self.count > budget.answers_at_start
        # The API answered before, and since then only this request failed (what a lone
        # request, concurrency 1, can tell): the first to spend its attempts, or a row put
        # aside and sent again.
        alone = (
            self.count > 0
            and self._failures_in_a_row == budget.failures
            and (self._spent == 0 or budget.second_chance)
        )
        self._spent += 1
        if answered_since or alone:
            # Its failures were its own: they say nothing of the API to the next request.
            self._failures_in_a_row = max(0, self._failures_in_a_row - budget.failures)
            self._failing_batches.discard(budget.batch)
            return Answer(status, failed, exhausted=True)
        self._undecided += 1
        if status is None or self._undecided >= MAX_UNDECIDED_IN_A_ROW:
            # No answer at all is no row's doing; nor are this many undecided in a row.
            self._outage.start(reason)
            return 0.0
        return Answer(status, failed, exhausted=True, undecided=True)

    def _accepted(self, users: int) -> None:
        self._refusals_in_a_row = 0
        self._rate_limited_since = None
        self._adaptive.accepted(users)
        if self._stats.rate_limited_at is not None:
            self._stats.accepted_since_429 += users
            self._stats.settled_per_second = self._adaptive.rate()

    def _answered(self) -> None:
        """Any answer but a 5xx: the API is up."""
        self.count += 1
        self._failures_in_a_row = 0
        self._failing_batches.clear()
        self._spent = self._undecided = 0
        self._outage.end()

    def _after_rate_limited(
        self, headers: Mapping[str, str], granted_at: float, reason: str, budget: Budget
    ) -> float:
        self._stats.http_429 += 1
        now = self._clock()
        if self._stats.rate_limited_at is None:
            self._stats.rate_limited_at = now
        if self._rate_limited_since is None:
            self._rate_limited_since = now
        elif now - self._rate_limited_since >= self._delivery.max_rate_limited_seconds:
            raise ApiAbort(429, self._rate_limited_too_long(now - self._rate_limited_since, reason))
        if self._adaptive.rate_limited(granted_at):
            log.info(
                "429 from the API: slowing to %s updates/minute",
                f"{self._adaptive.rate() * 60:,.0f}",
            )
        wait = retry.retry_after_seconds(headers, time.time())
        # Every sender waits, not only this one: the limit is the workspace's.
        pause = wait if wait is not None else self._backoff(budget.rate_limited)
        paused_until = self._limiter.paused_until
        self._stats.rate_limited_wait_seconds += max(0.0, now + pause - max(now, paused_until))
        self._limiter.pause_until(now + pause)
        return 0.0

    def _rate_limited_too_long(self, lasted: float, reason: str) -> str:
        settled = self._stats.rate_settled_per_minute()
        pace = f"; it accepted about {settled:,.0f} updates/minute" if settled else ""
        return (
            f"the API answered only 429 for {lasted:.0f} s "
            f"(delivery.max_rate_limited_seconds is "
            f"{self._delivery.max_rate_limited_seconds:g}){pace}: {reason}. The rows not yet "
            "accepted are pending: lower rate_limit.updates or wait for the quota, then "
            "run the same command again"
        )

    def _count_refusal(self, status: int, reason: str) -> None:
        whole = retry.is_data_refusal(status) and not retry.is_too_large(status)
        if whole and self._endpoint == batching.BULK and retry.refuses_whole_request(reason):
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


def describe_answer(status: int, payload: bytes) -> str:
    """`<type>: <message> (request_id X)` from an error body, whatever the server sent, cut
    to MAX_REASON_CHARS."""
    body: Any
    try:
        body = orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        body = payload[:300].decode("utf-8", "replace")
    message, request_id = moengage.parse_error(body)
    error_type = moengage.error_type(body)
    text = f"{error_type}: {message}" if error_type and error_type != message else message
    text = f"{text} (request_id {request_id})" if request_id else text
    return truncate(text)


def truncate(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters not kept)"


def success_payload(payload: bytes) -> bool:
    """The body MoEngage answers an accepted request with (JSON, "status": "success")."""
    try:
        return is_success_body(orjson.loads(payload)) if payload else False
    except orjson.JSONDecodeError:
        return False


def not_moengage_success(status: int, payload: bytes) -> str:
    """Why a 2xx is not MoEngage's success, naming what came (never the body's values)."""
    if not payload:
        what = "an empty body"
    else:
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            head = payload[:200].lstrip().lower()
            what = "an HTML page" if head.startswith((b"<!doctype", b"<html")) else "not JSON"
        else:
            shown = body.get("status") if isinstance(body, dict) else None
            what = f'"status": {str(shown)[:40]!r}' if shown is not None else "no status"
    return f"{status} without MoEngage's success body ({what})"


def abort_message(status: int, reason: str, url: str) -> str:
    meaning = moengage.STATUS_MEANINGS.get(status) or (
        "a proxy on the way wants its own credentials (check HTTPS_PROXY / HTTP_PROXY)"
        if status == retry.PROXY_AUTH_STATUS
        else "refused"
    )
    where = f" at {url}" if status in moengage.CLIENT_BUG_STATUSES else ""
    return f"the API answered {status}{where}: {meaning}. {reason}"


def redirect_message(status: int, location: str, url: str) -> str:
    return (
        f"the API answered {status} at {url}, redirecting to {location}. Redirects are never "
        "followed (the request body and the key must not go elsewhere): set api.base_url "
        "or api.data_center to the right host. Nothing was counted accepted; the rows are "
        "pending"
    )
