"""Sending requests: one aiohttp session, attempts under the limiter, splitting, row outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from importer import batching, moengage, retry
from importer.config import ApiConfig, DeliveryConfig
from importer.ratelimit import WindowLimiter
from importer.rows import Row

Stage = Literal["rejected", "delivery"]


class ApiAbort(Exception):
    """The API refused the run itself (credentials, account, workspace, URL): stop sending.

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


@dataclass
class Refusal:
    row: Row
    stage: Stage
    status: int | None
    error: str


class _Stopped(Exception):
    """The sender was stopped before these rows' fate was known."""


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
    failures: int = 0  # 5xx, timeouts, broken connections
    rate_limited: int = 0


def make_session(delivery: DeliveryConfig) -> aiohttp.ClientSession:
    """One session for the run; the connector caps requests in flight. Call inside the loop."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=delivery.concurrency),
        timeout=aiohttp.ClientTimeout(total=delivery.timeout_seconds),
    )


def request_url(api: ApiConfig) -> str:
    path = (
        moengage.bulk_path(api.workspace_id)
        if api.endpoint == batching.BULK
        else moengage.customer_path(api.workspace_id)
    )
    return api.resolved_base_url() + path


class Sender:
    """Sends one batch of rows and says what became of each row."""

    def __init__(
        self,
        api: ApiConfig,
        delivery: DeliveryConfig,
        limiter: WindowLimiter,
        session: aiohttp.ClientSession,
        stats: DeliveryStats,
        rng: random.Random | None = None,
    ) -> None:
        self._endpoint = api.endpoint
        self._delivery = delivery
        self._limiter = limiter
        self._session = session
        self._stats = stats
        self._rng = rng or random.Random()
        self.url = request_url(api)
        self._params = {"project_code": api.project_code} if api.project_code else None
        authorization = _basic_auth(api.workspace_id, api.api_key.get_secret_value())
        self._headers = {
            aiohttp.hdrs.CONTENT_TYPE: "application/json",
            aiohttp.hdrs.AUTHORIZATION: authorization,
        }
        # A server (or proxy) that echoes the request must not put the key in our messages.
        self._secrets = [api.api_key.get_secret_value(), authorization.split(" ", 1)[1]]
        self._timeout = aiohttp.ClientTimeout(total=delivery.timeout_seconds)
        self._abort: ApiAbort | None = None  # once set, nothing more is sent
        # How late a request that got no answer may still reach the server, after we gave up
        # on it: its limiter slot is held this much longer (see _post).
        self._in_transit_bound = delivery.timeout_seconds
        # Set by stop(): no new attempt starts, and waits between attempts end early.
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """A graceful stop: requests in flight finish, nothing new is tried; rows whose
        request was not answered stay pending (neither accepted nor refused)."""
        self._stopping.set()

    async def send(self, rows: list[Row], result: SendResult | None = None) -> SendResult:
        """Deliver `rows`; every row ends accepted or refused, unless the send is cut short.

        Rows are appended to `result` (a new SendResult if None; it is also returned) as soon
        as their fate is known: a 2xx for the request holding them, or a refusal. While
        splitting, earlier halves are settled before later ones are sent, so:

        - on a fatal answer (401, 403, 409, 404, 415) it raises ApiAbort whose `partial` is
          `result`, holding what was settled before the abort;
        - if the task is cancelled, a caller that passed its own `result` still has what was
          settled; the rows of the request in flight are not in it.

        Rows of `rows` in neither `result.accepted` nor `result.refused` are pending: their
        fate is unknown and they must be sent again on resume.
        """
        result = SendResult() if result is None else result
        try:
            await self._deliver(rows, result)
        except ApiAbort as abort:
            raise abort.with_partial(result) from None
        except _Stopped:
            pass  # what is not in `result` stays pending
        return result

    async def _deliver(self, rows: list[Row], result: SendResult) -> None:
        if len(rows) > self._limiter.updates:  # one request may not exceed the whole window
            await self._halves(rows, result)
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
        """Send until an answer that is not transient, or the attempt budgets are spent."""
        body = batching.request_body(rows, self._endpoint)
        budget = _Budget()
        while True:
            if self._stopping.is_set():
                raise _Stopped
            if budget.attempts:
                self._stats.retries += 1
            budget.attempts += 1
            try:
                status, headers, payload = await self._post(body, len(rows))
            except Exception as exc:
                if not retry.is_retryable_exception(exc):
                    raise
                outcome = self._after_error(exc, budget)
            else:
                outcome = self._after_answer(status, headers, payload, budget)
            if isinstance(outcome, _Answer):
                return outcome
            with contextlib.suppress(TimeoutError):  # a stop cuts the wait short
                await asyncio.wait_for(self._stopping.wait(), timeout=outcome)

    def _after_error(self, exc: BaseException, budget: _Budget) -> _Answer | float:
        """A timeout or broken connection: the answer if the budget is spent, else the wait."""
        reason = self._scrub(_describe_exception(exc, self._delivery.timeout_seconds))
        self._stats.errors[reason] += 1
        budget.failures += 1
        if budget.failures >= self._delivery.max_attempts:
            return _Answer(None, f"{reason} after {budget.failures} attempts", exhausted=True)
        return self._backoff(budget.failures)

    def _after_answer(
        self, status: int, headers: CIMultiDictProxy[str], payload: bytes, budget: _Budget
    ) -> _Answer | float:
        """The final answer for these rows, or how long to wait before the next attempt."""
        self._stats.by_status[status] += 1
        if 200 <= status <= 299:
            return _Answer(status, "accepted")
        reason = self._scrub(_describe_answer(status, payload))
        if retry.is_fatal(status):
            self._abort = ApiAbort(status, _abort_message(status, reason, self.url))
            raise self._abort
        wait = retry.retry_after_seconds(headers, time.time())
        if retry.is_rate_limited(status):
            self._stats.http_429 += 1
            budget.rate_limited += 1
            if budget.rate_limited >= self._delivery.max_rate_limited_attempts:
                note = f"{status} after {budget.rate_limited} rate-limited attempts: {reason}"
                return _Answer(status, note, exhausted=True)
            # Every sender waits, not only this one: the limit is the workspace's.
            pause = wait if wait is not None else self._backoff(budget.rate_limited)
            self._limiter.pause_until(self._limiter.clock() + pause)
            return 0.0
        if retry.is_transient(status):
            budget.failures += 1
            if budget.failures >= self._delivery.max_attempts:
                note = f"{status} after {budget.failures} attempts: {reason}"
                return _Answer(status, note, exhausted=True)
            return wait if wait is not None else self._backoff(budget.failures)
        return _Answer(status, f"{status} {reason}")

    async def _post(self, body: bytes, users: int) -> tuple[int, CIMultiDictProxy[str], bytes]:
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
        permit = await self._limiter.acquire(users)
        in_transit = False
        try:
            if self._abort is not None:  # another request aborted while we waited
                raise self._abort
            self._stats.requests += 1
            self._stats.users_sent += users
            in_transit = True
            async with self._session.post(
                self.url,
                data=body,
                params=self._params,
                headers=self._headers,
                timeout=self._timeout,
            ) as response:
                in_transit = False  # answered: it arrived before this
                payload = await response.read()
                return response.status, response.headers, payload
        finally:
            permit.release(self._in_transit_bound if in_transit else 0.0)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def _backoff(self, attempt: int) -> float:
        return retry.backoff_delay(
            attempt,
            self._delivery.backoff_base_seconds,
            self._delivery.backoff_max_seconds,
            self._rng,
        )


def _basic_auth(login: str, password: str) -> str:
    """The Authorization header value (aiohttp 3.14 deprecates BasicAuth for this helper)."""
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


def _describe_exception(exc: BaseException, timeout_seconds: float) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"timeout ({timeout_seconds:g} s)"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, ConnectionResetError) or "reset" in str(exc).lower():
        return "connection reset"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "answer cut short"
    return f"connection error ({type(exc).__name__}: {exc})"


def _abort_message(status: int, reason: str, url: str) -> str:
    meaning = moengage.STATUS_MEANINGS.get(status, "refused")
    where = f" at {url}" if status in moengage.CLIENT_BUG_STATUSES else ""
    return f"the API answered {status}{where}: {meaning}. {reason}"
