"""The sandbox server: answers as MoEngage does, records what arrived, plays outages and faults."""

from __future__ import annotations

import asyncio
import random
import re
import time
from typing import Any

import orjson
from aiohttp import hdrs, web

from importer import moengage
from importer.moengage import request_schema
from importer.sandbox.answers import (
    Answer,
    cut_connection,
    failure,
    rate_limited,
    response,
    success,
)
from importer.sandbox.auth import auth_problem
from importer.sandbox.bodies import (
    UNPARSED,
    count_events,
    count_users,
    customer_ids,
    parse_body,
)
from importer.sandbox.profiles import ProfileStore
from importer.sandbox.recording import JsonLines, record_line, write_private
from importer.sandbox.rules import element_problem, short
from importer.sandbox.settings import (
    BULK,
    CUSTOMER,
    EVENT,
    FAIL_STATUSES,
    HOST,
    PROFILES_PATH,
    READ_LIMIT_BYTES,
    STATS_PATH,
    SandboxSettings,
)
from importer.sandbox.users_api import UsersApi, profiles_body
from importer.sandbox.window import RateWindow


class SandboxServer:
    """`async with SandboxServer(settings) as server:` serves on `server.url` in the block."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self._window = RateWindow(settings.rate, settings.period)
        self._event_window = RateWindow(settings.event_rate, settings.period)  # counted apart
        self._random = random.Random(settings.seed)
        self._reject = (
            re.compile(settings.reject_customer_ids) if settings.reject_customer_ids else None
        )
        self._fail_ids = (
            re.compile(settings.fail_customer_ids) if settings.fail_customer_ids else None
        )
        self._record = JsonLines(None)
        self._arrivals = JsonLines(None)
        self._violations = JsonLines(None)
        self.profiles = ProfileStore(delete_window_seconds=settings.delete_window)
        self.users_api = UsersApi(
            self.profiles,
            self._auth_problem,
            delete_window=RateWindow(settings.delete_rate, settings.period),
            export_window=RateWindow(settings.export_rate, settings.period),
            arrivals=lambda: self._arrivals,
            fail_deletes=settings.fail_deletes,
        )
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._port = settings.port
        self._first_request_at: float | None = None
        self._outage_timers: list[asyncio.TimerHandle] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters: dict[str, Any] = {
            "requests": 0,
            "users_accepted": 0,
            "events_accepted": 0,
            "users_dropped": 0,
            "resets": 0,
            "by_status": {},
        }

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._port}"

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            **self.users_api.counters,
            "unsets_applied": self.profiles.unsets_applied,
            "by_status": dict(self.counters["by_status"]),
        }

    async def __aenter__(self) -> SandboxServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application(client_max_size=READ_LIMIT_BYTES)
        app.router.add_post("/v1/transition/{workspace_id}", self._handle_bulk)
        app.router.add_post("/v1/customer/{workspace_id}", self._handle_customer)
        app.router.add_post("/v1/event/{workspace_id}", self._handle_event)
        app.router.add_get(STATS_PATH, self._handle_stats)
        app.router.add_get(PROFILES_PATH, self._handle_profiles)
        self.users_api.add_routes(app)
        self._record = JsonLines(self.settings.record)
        self._arrivals = JsonLines(self.settings.arrivals)
        self._violations = JsonLines(self.settings.schema_violations)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, HOST, self.settings.port)
        await self._site.start()
        self._port = self._runner.addresses[0][1]

    def _in_outage(self, now: float) -> bool:
        settings = self.settings
        if settings.outage_after is None:
            return False
        if self._first_request_at is None:
            self._first_request_at = now
            if settings.outage_mode == "refuse":
                self._schedule_refusal()
        start = self._first_request_at + settings.outage_after
        return start <= now < start + settings.outage_for

    def _schedule_refusal(self) -> None:
        """Close the port for the outage, so new connections are refused, then reopen it."""
        loop = asyncio.get_running_loop()
        after = self.settings.outage_after or 0.0

        def close_port() -> None:
            if self._site is not None:
                self._tasks.add(loop.create_task(self._site.stop()))

        def reopen_port() -> None:
            self._tasks.add(loop.create_task(self._reopen()))

        self._outage_timers = [
            loop.call_later(after, close_port),
            loop.call_later(after + self.settings.outage_for, reopen_port),
        ]

    async def _reopen(self) -> None:
        if self._runner is None:
            return
        self._site = web.TCPSite(self._runner, HOST, self._port, reuse_address=True)
        await self._site.start()

    async def close(self) -> None:
        for timer in self._outage_timers:
            timer.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._record.close()
        self._arrivals.close()
        self._violations.close()
        if self.settings.profiles is not None:
            write_private(self.settings.profiles, profiles_body(self.profiles))

    async def _handle_profiles(self, request: web.Request) -> web.Response:
        return web.Response(body=profiles_body(self.profiles), content_type="application/json")

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.stats()), content_type="application/json")

    async def _handle_bulk(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, BULK)

    async def _handle_customer(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, CUSTOMER)

    async def _handle_event(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, EVENT)

    async def _handle(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        try:
            body: bytes | None = await request.read()
        except web.HTTPRequestEntityTooLarge:
            body = None  # far over any limit; answered 413 below
        now = time.time()
        parsed = parse_body(body)
        users = count_users(parsed, endpoint)
        if self._in_outage(now):
            answer = (
                failure(503, "the API is down (sandbox outage)")
                if self.settings.outage_mode == "500"
                else Answer(0, {}, reset=True)
            )
        else:
            # Decided without awaiting, so the window check and update are atomic.
            answer = self._decide(request, endpoint, body, parsed, users, now)
            lost = self.settings.lost_answer_rate
            if lost and answer.accepted and self._random.random() < lost:
                answer.reset = True  # kept and recorded, but the client hears nothing
        if self.settings.latency_ms > 0:
            await asyncio.sleep(self.settings.latency_ms / 1000)
        self._account(request, endpoint, body, users, now, answer)
        if answer.reset:
            cut_connection(request)
        if self.settings.ratelimit_headers and endpoint != EVENT:
            answer.headers.update(self._window.headers(now))
        return response(answer, self.settings.success_body)

    def _decide(
        self,
        request: web.Request,
        endpoint: str,
        body: bytes | None,
        parsed: Any,
        users: int,
        now: float,
    ) -> Answer:
        settings = self.settings
        if settings.status_for_all is not None:
            return failure(settings.status_for_all, "the sandbox answers every request so")
        if settings.redirect is not None:
            answer = failure(settings.redirect, "moved (sandbox --redirect)")
            answer.headers = {hdrs.LOCATION: settings.redirect_to + request.path_qs}
            return answer
        refused = self._auth_problem(request, request.match_info["workspace_id"])
        if refused:
            return refused
        # From here the request reached the API: its users count in the window unless 429.
        if request.content_type != "application/json":
            self._add_to_windows(now, users, parsed)
            return failure(
                moengage.UNSUPPORTED_MEDIA_STATUS, "Content-Type must be application/json"
            )
        if body is None or len(body) > settings.max_body_bytes:
            self._add_to_windows(now, users, parsed)
            limit = settings.max_body_bytes
            return failure(moengage.TOO_LARGE_STATUS, f"request body is over {limit} bytes")
        wait = self._window.wait_seconds(now, users)
        event_wait = self._event_window.wait_seconds(now, count_events(parsed))
        if wait is not None or event_wait is not None:
            return rate_limited(now, max(wait or 0.0, event_wait or 0.0))
        self._add_to_windows(now, users, parsed)
        if settings.reset_rate and self._random.random() < settings.reset_rate:
            return Answer(0, {}, reset=True)
        if settings.fail_rate and self._random.random() < settings.fail_rate:
            return failure(self._random.choice(FAIL_STATUSES), "transient failure (sandbox)")
        if self._fail_ids is not None and any(
            isinstance(i, str) and self._fail_ids.search(i) for i in customer_ids(parsed)
        ):
            return failure(503, "this request fails whenever it is sent (sandbox)")
        if parsed is UNPARSED:
            return failure(moengage.BAD_PAYLOAD_STATUS, "body is not valid JSON")
        if endpoint == BULK:
            return self._check_bulk(parsed)
        return self._check_customer(parsed, endpoint)

    def _add_to_windows(self, now: float, users: int, parsed: Any) -> None:
        """Users and events are limited apart: each counts in its own window."""
        self._window.add(now, users)
        self._event_window.add(now, count_events(parsed))

    def _auth_problem(self, request: web.Request, path_workspace: str) -> Answer | None:
        return auth_problem(self.settings, request.headers.get(hdrs.AUTHORIZATION), path_workspace)

    def _schema_problem(self, element: Any, endpoint: str) -> str | None:
        """MoEngage's request schema applied to one element; a violation is also written to
        the --schema-violations file, so a test can fail on it whatever the answer was."""
        if not self.settings.check_schema:
            return None
        problem = request_schema.element_problem(element)
        if problem is not None:
            self._violations.write([{"endpoint": endpoint, "problem": problem, "element": element}])
        return problem

    def _check_customer(self, element: Any, endpoint: str = CUSTOMER) -> Answer:
        schema_problem = self._schema_problem(element, endpoint)
        kind = element.get("type") if isinstance(element, dict) else None
        wanted = moengage.EVENT_TYPE if endpoint == EVENT else moengage.CUSTOMER_TYPE
        wrong = f"type must be {wanted!r} at this endpoint" if kind != wanted else None
        problem = wrong or element_problem(element) or schema_problem or self._rejected(element)
        if problem:
            return failure(moengage.BAD_PAYLOAD_STATUS, problem)
        answer = success()
        answer.accepted = [element]
        return answer

    def _check_bulk(self, body: Any) -> Answer:
        if not isinstance(body, dict) or body.get("type") != moengage.BULK_TYPE:
            return failure(
                moengage.BAD_PAYLOAD_STATUS,
                f"body must be an object with type {moengage.BULK_TYPE!r}",
            )
        elements = body.get("elements")
        if not isinstance(elements, list) or not elements:
            return failure(moengage.BAD_PAYLOAD_STATUS, "elements must be a non-empty list")
        check = self.settings.check_schema
        envelope = request_schema.bulk_envelope_problem(body) if check else None
        if envelope:
            self._violations.write([{"endpoint": BULK, "problem": envelope, "element": None}])
            return failure(moengage.BAD_PAYLOAD_STATUS, envelope)
        schema_problems = [self._schema_problem(element, BULK) for element in elements]
        accepted: list[dict[str, Any]] = []
        problems: list[str] = []
        for index, element in enumerate(elements):
            rejected = self._rejected(element)
            if rejected:  # refused outright, however lenient the bulk endpoint is
                return failure(moengage.BAD_PAYLOAD_STATUS, f"element {index}: {rejected}")
            problem = element_problem(element) or schema_problems[index]
            if problem:
                problems.append(f"element {index}: {problem}")
            else:
                accepted.append(element)
        if problems and self.settings.strict_bulk:
            return failure(moengage.BAD_PAYLOAD_STATUS, "; ".join(problems[:5]))
        answer = success()
        answer.accepted = accepted
        answer.dropped = len(problems)  # MoEngage answers 200 and drops them later
        return answer

    def _rejected(self, element: Any) -> str | None:
        if self._reject is None or not isinstance(element, dict):
            return None
        customer_id = element.get("customer_id")
        if isinstance(customer_id, str) and self._reject.search(customer_id):
            return f"customer_id {short(customer_id)} is refused (sandbox --reject-customer-ids)"
        return None

    def _account(
        self,
        request: web.Request,
        endpoint: str,
        body: bytes | None,
        users: int,
        now: float,
        answer: Answer,
    ) -> None:
        """Counters, the arrivals line and the record lines for one answered request.

        An arrivals line is {t, path, users, bytes, status, dropped[, project_code]}; status
        is null for a cut connection. A record line is one accepted user.
        """
        counters = self.counters
        counters["requests"] += 1
        events = [e for e in answer.accepted if e.get("type") == moengage.EVENT_TYPE]
        counters["users_accepted"] += len(answer.accepted) - len(events)
        counters["events_accepted"] += count_events({"elements": events})
        counters["users_dropped"] += answer.dropped
        if answer.reset:
            counters["resets"] += 1
        else:
            by_status = counters["by_status"]
            by_status[str(answer.status)] = by_status.get(str(answer.status), 0) + 1
        arrival: dict[str, Any] = {
            "t": now,
            "path": request.path,
            "users": users,
            "events": count_events(parse_body(body)) if body and b'"actions"' in body else 0,
            "bytes": len(body) if body is not None else request.content_length,
            "status": None if answer.reset else answer.status,
            "dropped": answer.dropped,
        }
        if "project_code" in request.query:
            arrival["project_code"] = request.query["project_code"]
        self._arrivals.write([arrival])
        if self.settings.success_body != "moengage":
            return  # the portal answered: nothing reached MoEngage
        self._keep_profiles(answer.accepted, now)
        self._record.write([record_line(element, endpoint, now) for element in answer.accepted])

    def _keep_profiles(self, accepted: list[dict[str, Any]], now: float) -> None:
        for element in accepted:
            if element.get("type") == moengage.EVENT_TYPE:
                continue
            if not self.settings.unset_supported:  # no Early Access: unsets ignored
                element = {k: v for k, v in element.items() if k != moengage.UNSET_ATTRIBUTES_KEY}
            self.profiles.apply(element, now)
