"""A MoEngage-compatible Data API server on loopback, for the demo, tests and rehearsals."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hmac
import math
import queue
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any

import orjson
from aiohttp import BasicAuth, hdrs, web

from importer import moengage, request_schema

HOST = "127.0.0.1"
DEFAULT_PORT = 8377
DEFAULT_WORKSPACE_ID = "SANDBOX"
DEFAULT_API_KEY = "sandbox-key"
# The sandbox reads its key from here when --api-key is not given: a real key passed as an
# argument would sit in `ps` for anyone on the machine to read.
API_KEY_VARIABLE = "MOE_SANDBOX_API_KEY"
OUTAGE_MODES = ("500", "reset", "refuse")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
DEFAULT_REDIRECT_TO = "http://127.0.0.1:9/elsewhere"
FAIL_STATUSES = (500, 503)
STATS_PATH = "/_sandbox/stats"
# aiohttp refuses bodies over this on its own; ours (max_body_bytes) is checked below it.
READ_LIMIT_BYTES = 64 * 1024 * 1024
BULK = moengage.Endpoint.BULK
CUSTOMER = moengage.Endpoint.CUSTOMER
EVENT = "event"  # POST /v1/event: one event element
# How far ahead of the server's clock an event's current_time may be before it counts as
# future-dated (clocks drift).
EVENT_CLOCK_SKEW_SECONDS = 600
_UNPARSED = object()  # the body was not valid JSON


@dataclass(slots=True)
class SandboxSettings:
    port: int = DEFAULT_PORT
    workspace_id: str = DEFAULT_WORKSPACE_ID
    api_key: str = field(default=DEFAULT_API_KEY, repr=False)
    rate: int = moengage.DEFAULT_RATE_UPDATES
    period: float = moengage.DEFAULT_RATE_PERIOD_SECONDS
    event_rate: int = moengage.DEFAULT_EVENT_RATE_UPDATES  # events (actions) per period
    fail_rate: float = 0.0
    reset_rate: float = 0.0
    latency_ms: float = 0.0
    record: Path | None = None
    arrivals: Path | None = None
    max_body_bytes: int = moengage.MAX_REQUEST_BYTES
    strict_bulk: bool = False
    reject_customer_ids: str | None = None  # a regex, searched in each customer_id
    fail_customer_ids: str | None = None  # a regex: 503 for a request holding a match
    status_for_all: int | None = None
    seed: int | None = None
    schema_violations: Path | None = None  # elements MoEngage's request schema refuses
    # About 0.5 ms an element: a throughput benchmark may turn it off.
    check_schema: bool = True
    key_source: str = f"the default key ({DEFAULT_API_KEY})"  # said on start, never the key
    # A scheduled outage, timed from the first request: answered 500, connections cut, or
    # (refuse) the port closed.
    outage_after: float | None = None
    outage_for: float = 0.0
    outage_mode: str = "500"
    redirect: int | None = None  # answer every POST with this 3xx
    redirect_to: str = DEFAULT_REDIRECT_TO


# ---------------------------------------------------------------- element rules


def element_problem(element: Any) -> str | None:
    """Why MoEngage would refuse this user update (or event element), or None if acceptable."""
    if not isinstance(element, dict):
        return "element is not a JSON object"
    if element.get("type") == moengage.EVENT_TYPE:
        return event_problem(element)
    if element.get("type") != moengage.CUSTOMER_TYPE:
        return f"type must be {moengage.CUSTOMER_TYPE!r}"
    attributes = element.get("attributes")
    if not isinstance(attributes, dict):
        return "attributes must be a JSON object"
    problem = customer_id_problem(element.get("customer_id"), attributes)
    problem = problem or attributes_problem(attributes)
    if problem:
        return problem
    if not isinstance(element.get("update_existing_only", False), bool):
        return "update_existing_only must be true or false"
    return None


def event_problem(element: dict[str, Any]) -> str | None:
    """Why MoEngage would refuse this event element (type event), or None."""
    customer_id = element.get("customer_id")
    if customer_id is not None or not element.get("user_identifiers"):
        problem = customer_id_problem(customer_id, {})
        if problem:
            return problem
    actions = element.get(moengage.ACTIONS_KEY)
    if not isinstance(actions, list) or not actions:
        return "actions must be a non-empty list"
    for action in actions:
        problem = action_problem(action)
        if problem:
            return problem
    return None


def action_problem(action: Any) -> str | None:
    if not isinstance(action, dict):
        return "an action is not a JSON object"
    name = action.get("action")
    if not isinstance(name, str) or not name.strip():
        return "an action needs a non-empty action (event name)"
    if name.startswith(moengage.RESERVED_PREFIX):
        return f"event name {_short(name)} uses the reserved prefix {moengage.RESERVED_PREFIX!r}"
    if len(name) > moengage.MAX_EVENT_NAME_LENGTH:
        return f"event name {_short(name)} is longer than {moengage.MAX_EVENT_NAME_LENGTH}"
    attributes = action.get("attributes", {})
    if not isinstance(attributes, dict):
        return "event attributes must be a JSON object"
    if len(attributes) > moengage.MAX_EVENT_ATTRIBUTES:
        return f"an event has more than {moengage.MAX_EVENT_ATTRIBUTES} attributes"
    for key, value in attributes.items():
        if key.startswith(moengage.RESERVED_PREFIX):
            return f"event attribute {key!r} uses the reserved prefix {moengage.RESERVED_PREFIX!r}"
        problem = name_problem(key) or value_problem(key, value)
        if problem:
            return problem
    platform = action.get("platform")
    if platform is not None and platform not in moengage.EVENT_PLATFORMS:
        return f"platform {_short(platform)} is not one of {', '.join(moengage.EVENT_PLATFORMS)}"
    offset = action.get("user_timezone_offset")
    limit = moengage.MAX_TIMEZONE_OFFSET_SECONDS
    if offset is not None and (
        isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > limit
    ):
        return f"user_timezone_offset must be whole seconds within -{limit}..{limit}"
    return _current_time_problem(action.get("current_time"))


def _current_time_problem(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return f"current_time {_short(value)} is not an ISO 8601 time"
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        seconds = moment.timestamp()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        return "current_time must be an ISO 8601 time"
    if seconds > time.time() + EVENT_CLOCK_SKEW_SECONDS:
        return "current_time is in the future: MoEngage refuses future-dated events"
    return None


def customer_id_problem(customer_id: Any, attributes: dict[str, Any]) -> str | None:
    if customer_id is None:
        # Identity Resolution workspaces identify the user by one of its identifiers.
        if any(attributes.get(name) not in (None, "") for name in moengage.IDENTIFIER_ATTRIBUTES):
            return None
        names = ", ".join(sorted(moengage.IDENTIFIER_ATTRIBUTES))
        return f"customer_id is missing and the attributes carry no identifier ({names})"
    if not isinstance(customer_id, str):
        return "customer_id must be a string"
    if not customer_id.strip():
        return "customer_id is empty"
    if customer_id.strip().lower() in moengage.PLACEHOLDER_CUSTOMER_IDS:
        return f"customer_id {customer_id!r} is a placeholder value MoEngage refuses"
    return None


def attributes_problem(attributes: dict[str, Any]) -> str | None:
    array_ops = (moengage.ADD_TO_ARRAY_KEY, moengage.REMOVE_FROM_ARRAY_KEY)
    for name, value in attributes.items():
        if name == moengage.PLATFORMS_KEY:
            problem = platforms_problem(value)
        elif name in array_ops:
            problem = array_op_problem(name, value)
        else:
            problem = name_problem(name) or value_problem(name, value)
        if problem:
            return problem
    set_names = attributes.keys() - {moengage.PLATFORMS_KEY, *array_ops}
    for op in array_ops:
        both = sorted(set_names & attributes.get(op, {}).keys())
        if both:
            return f"attribute {both[0]!r} is both set and in {op}"
    return None


def name_problem(name: str) -> str | None:
    if name in moengage.BLOCKED_ATTRIBUTE_NAMES:
        return f"attribute name {name!r} is blocked"
    if len(name) > moengage.MAX_ATTRIBUTE_NAME_LENGTH:
        return f"attribute name {_short(name)} is longer than {moengage.MAX_ATTRIBUTE_NAME_LENGTH}"
    if name.startswith(moengage.RESERVED_PREFIX) and name not in moengage.SYSTEM_ATTRIBUTES:
        return f"attribute {name!r} uses the reserved prefix {moengage.RESERVED_PREFIX!r}"
    return None


def value_problem(name: str, value: Any) -> str | None:
    if value is None:
        return f"attribute {name!r} is null (omit a missing value instead)"
    if isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"attribute {name!r} is not a finite number"
    if isinstance(value, str):
        if len(value) > moengage.MAX_STRING_LENGTH:
            return f"attribute {name!r} is longer than {moengage.MAX_STRING_LENGTH} characters"
        return None
    if isinstance(value, list):
        return array_problem(name, value)
    if isinstance(value, dict):
        for key, item in value.items():
            problem = value_problem(f"{name}.{key}", item)
            if problem:
                return problem
        return None
    return f"attribute {name!r} has an unsupported type"


def array_problem(name: str, items: Any) -> str | None:
    if not isinstance(items, list):
        return f"attribute {name!r} must be an array"
    if len(items) > moengage.MAX_ARRAY_ITEMS:
        return f"attribute {name!r} has more than {moengage.MAX_ARRAY_ITEMS} items"
    kinds = {_item_kind(item) for item in items}
    if None in kinds:
        return f"attribute {name!r} holds items that are not strings, numbers or booleans"
    if len(kinds) > 1:
        named = sorted(kind for kind in kinds if kind is not None)
        return f"attribute {name!r} mixes item types ({', '.join(named)})"
    for item in items:
        if isinstance(item, float) and not math.isfinite(item):
            return f"attribute {name!r} holds a number that is not finite"
        if isinstance(item, str) and len(item) > moengage.MAX_ARRAY_ITEM_LENGTH:
            limit = moengage.MAX_ARRAY_ITEM_LENGTH
            return f"attribute {name!r} holds an item longer than {limit} characters"
    return None


def _item_kind(item: Any) -> str | None:
    if isinstance(item, bool):
        return "boolean"
    if isinstance(item, int | float):
        return "number"
    if isinstance(item, str):
        return "string"
    return None


def array_op_problem(op: str, value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"{op} must be an object of arrays"
    for name, items in value.items():
        problem = name_problem(name) or array_problem(f"{op}.{name}", items)
        if problem:
            return problem
    return None


def platforms_problem(value: Any) -> str | None:
    allowed = f"[{{'platform': {' | '.join(moengage.PLATFORM_NAMES)}, 'active': 'true'}}]"
    if not isinstance(value, list):
        return f"platforms must be a list like {allowed}"
    for item in value:
        if (
            not isinstance(item, dict)
            or item.keys() != {"platform", "active"}
            or item["platform"] not in moengage.PLATFORM_NAMES
            or item["active"] not in moengage.PLATFORM_ACTIVE_VALUES
        ):
            return f"platforms item {_short(item)} is not like {allowed}"
    return None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- rate window


class RateWindow:
    """User updates counted over the last `period` seconds: a deque and a running sum."""

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self._entries: deque[tuple[float, int]] = deque()
        self._total = 0

    def _expire(self, now: float) -> None:
        horizon = now - self.period
        while self._entries and self._entries[0][0] <= horizon:
            self._total -= self._entries.popleft()[1]

    def wait_seconds(self, now: float, users: int) -> float | None:
        """None if `users` more fit now; else the seconds until enough of the window expires."""
        self._expire(now)
        excess = self._total + users - self.limit
        if excess <= 0:
            return None
        if users > self.limit:
            return self.period  # never fits; tell the client to come back a period later
        freed = 0
        for arrived, count in self._entries:  # only walked when refusing, and stops early
            freed += count
            if freed >= excess:
                return arrived + self.period - now
        return self.period

    def add(self, now: float, users: int) -> None:
        if users:
            self._entries.append((now, users))
            self._total += users


# ---------------------------------------------------------------- the server


@dataclass(slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    reset: bool = False


def success() -> Answer:
    return Answer(200, {"status": "success", "message": moengage.SUCCESS_MESSAGE})


def failure(status: int, message: str, error_type: str | None = None) -> Answer:
    error_type = error_type or HTTPStatus(status).phrase
    return Answer(status, moengage.error_body(error_type, message, uuid.uuid4().hex))


class _JsonLines:
    """An append-only JSON-lines file, flushed after each write so readers see it at once."""

    def __init__(self, path: Path | None) -> None:
        self._file: IO[bytes] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("ab")

    def write(self, items: list[dict[str, Any]]) -> None:
        if self._file is None or not items:
            return
        self._file.write(b"".join(orjson.dumps(item) + b"\n" for item in items))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


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
        self._record = _JsonLines(None)
        self._arrivals = _JsonLines(None)
        self._violations = _JsonLines(None)
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
        return {**self.counters, "by_status": dict(self.counters["by_status"])}

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
        self._record = _JsonLines(self.settings.record)
        self._arrivals = _JsonLines(self.settings.arrivals)
        self._violations = _JsonLines(self.settings.schema_violations)
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
        parsed = _parse(body)
        users = _count_users(parsed, endpoint)
        if self._in_outage(now):
            answer = (
                failure(503, "the API is down (sandbox outage)")
                if self.settings.outage_mode == "500"
                else Answer(0, {}, reset=True)
            )
        else:
            # Decided without awaiting, so the window check and update are atomic.
            answer = self._decide(request, endpoint, body, parsed, users, now)
        if self.settings.latency_ms > 0:
            await asyncio.sleep(self.settings.latency_ms / 1000)
        self._account(request, endpoint, body, users, now, answer)
        if answer.reset:
            _cut_connection(request)
        return web.Response(
            status=answer.status,
            body=orjson.dumps(answer.body),
            headers=answer.headers,
            content_type="application/json",
        )

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
        refused = self._auth_problem(request)
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
        event_wait = self._event_window.wait_seconds(now, _count_events(parsed))
        if wait is not None or event_wait is not None:
            return self._rate_limited(now, max(wait or 0.0, event_wait or 0.0))
        self._add_to_windows(now, users, parsed)
        if settings.reset_rate and self._random.random() < settings.reset_rate:
            return Answer(0, {}, reset=True)
        if settings.fail_rate and self._random.random() < settings.fail_rate:
            return failure(self._random.choice(FAIL_STATUSES), "transient failure (sandbox)")
        if self._fail_ids is not None and any(
            isinstance(i, str) and self._fail_ids.search(i) for i in _customer_ids(parsed)
        ):
            return failure(503, "this request fails whenever it is sent (sandbox)")
        if parsed is _UNPARSED:
            return failure(moengage.BAD_PAYLOAD_STATUS, "body is not valid JSON")
        if endpoint == BULK:
            return self._check_bulk(parsed)
        return self._check_customer(parsed, endpoint)

    def _add_to_windows(self, now: float, users: int, parsed: Any) -> None:
        """Users and events are limited apart: each counts in its own window."""
        self._window.add(now, users)
        self._event_window.add(now, _count_events(parsed))

    def _auth_problem(self, request: web.Request) -> Answer | None:
        settings = self.settings
        path_workspace = request.match_info["workspace_id"]
        expects = (
            f"this sandbox expects HTTP Basic with username {settings.workspace_id!r} "
            f"(the workspace ID, also in the path) and as password {settings.key_source}"
        )
        header = request.headers.get(hdrs.AUTHORIZATION)
        if not header:
            return failure(401, f"authentication required: {expects}")
        try:
            credentials = BasicAuth.decode(header)
        except ValueError:
            return failure(401, f"malformed Authorization header: {expects}")
        if credentials.login != path_workspace:
            return failure(409, "the workspace ID in the path does not match the credentials")
        if path_workspace != settings.workspace_id:
            return failure(401, f"unknown workspace ID {_short(path_workspace)}: {expects}")
        password = credentials.password
        if not hmac.compare_digest(password.encode(), settings.api_key.encode()):
            hint = ""
            if password != password.strip() and hmac.compare_digest(
                password.strip().encode(), settings.api_key.encode()
            ):
                hint = " (the key sent has surrounding whitespace: a newline from a file?)"
            return failure(401, f"invalid Data API key for this workspace{hint}: {expects}")
        return None

    def _rate_limited(self, now: float, wait: float) -> Answer:
        answer = failure(
            moengage.RATE_LIMITED_STATUS,
            moengage.RATE_LIMIT_MESSAGE,
            moengage.RATE_LIMIT_ERROR_TYPE,
        )
        # Retry-After in whole seconds; x-ratelimit-reset as the Unix time the room is back.
        answer.headers = {
            hdrs.RETRY_AFTER: str(max(1, math.ceil(wait))),
            moengage.RATE_LIMIT_RESET_HEADER: str(math.ceil(now + wait)),
        }
        return answer

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
            return f"customer_id {_short(customer_id)} is refused (sandbox --reject-customer-ids)"
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
        counters["events_accepted"] += _count_events({"elements": events})
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
            "events": _count_events(_parse(body)) if body and b'"actions"' in body else 0,
            "bytes": len(body) if body is not None else request.content_length,
            "status": None if answer.reset else answer.status,
            "dropped": answer.dropped,
        }
        if "project_code" in request.query:
            arrival["project_code"] = request.query["project_code"]
        self._arrivals.write([arrival])
        self._record.write([_record_line(element, endpoint, now) for element in answer.accepted])


def _parse(body: bytes | None) -> Any:
    if body is None:
        return _UNPARSED
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _UNPARSED


def _customer_ids(parsed: Any) -> list[Any]:
    if not isinstance(parsed, dict):
        return []
    elements = parsed.get("elements") if parsed.get("type") == moengage.BULK_TYPE else [parsed]
    if not isinstance(elements, list):
        return []
    return [e.get("customer_id") for e in elements if isinstance(e, dict)]


def _count_users(parsed: Any, endpoint: str) -> int:
    if endpoint == CUSTOMER:
        return 1
    if endpoint == EVENT:
        return 0
    elements = parsed.get("elements") if isinstance(parsed, dict) else None
    if not isinstance(elements, list):
        return 0
    return sum(not _is_event_element(e) for e in elements)


def _is_event_element(element: Any) -> bool:
    return isinstance(element, dict) and element.get("type") == moengage.EVENT_TYPE


def _count_events(parsed: Any) -> int:
    """Actions in the body's event elements (a bulk body, or one element)."""
    if not isinstance(parsed, dict):
        return 0
    elements = parsed.get("elements") if "elements" in parsed else [parsed]
    if not isinstance(elements, list):
        return 0
    total = 0
    for element in elements:
        actions = element.get(moengage.ACTIONS_KEY) if _is_event_element(element) else None
        total += len(actions) if isinstance(actions, list) else 0
    return total


def _record_line(element: dict[str, Any], endpoint: str, now: float) -> dict[str, Any]:
    if _is_event_element(element):  # one line per event element, its actions in order
        return {
            "received_at": now,
            "endpoint": endpoint,
            "type": moengage.EVENT_TYPE,
            "customer_id": element.get("customer_id"),
            "actions": element[moengage.ACTIONS_KEY],
        }
    return {
        "received_at": now,
        "endpoint": endpoint,
        "customer_id": element.get("customer_id"),
        "attributes": element["attributes"],
        "update_existing_only": element.get("update_existing_only", False),
    }


def _cut_connection(request: web.Request) -> None:
    """Drop the connection with a TCP reset, so the client sees it broken, not answered."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0: close() sends RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # The handler still returns a response; aiohttp finds the transport closed and drops it.


# ---------------------------------------------------------------- command line


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"bad regular expression {text!r}: {exc}") from exc
    return text


def _status(text: str) -> int:
    value = int(text)
    if not 100 <= value <= 599:
        raise argparse.ArgumentTypeError(f"{text} is not an HTTP status code")
    return value


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0 to 65535)")
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `sandbox` command's options."""
    add = parser.add_argument
    add("--port", type=_port, default=DEFAULT_PORT, help="0 = any free port (default %(default)s)")
    add("--workspace-id", default=DEFAULT_WORKSPACE_ID, help="(default %(default)s)")
    add(
        "--api-key",
        help=f"the Data API key clients must send; visible in `ps`, so prefer "
        f"${API_KEY_VARIABLE} (default: ${API_KEY_VARIABLE} if set, else {DEFAULT_API_KEY!r})",
    )
    add(
        "--api-key-env",
        metavar="NAME",
        default=API_KEY_VARIABLE,
        help="the environment variable holding the key (default %(default)s)",
    )
    add(
        "--rate",
        type=int,
        default=moengage.DEFAULT_RATE_UPDATES,
        help="user updates per period (default %(default)s)",
    )
    add(
        "--period",
        type=_positive,
        default=moengage.DEFAULT_RATE_PERIOD_SECONDS,
        help="seconds (default %(default)s)",
    )
    add(
        "--event-rate",
        type=int,
        default=moengage.DEFAULT_EVENT_RATE_UPDATES,
        help="events (actions) per period, limited apart from users (default %(default)s)",
    )
    add("--fail-rate", type=_fraction, default=0.0, help="fraction answered 500/503 (default 0)")
    add(
        "--reset-rate",
        type=_fraction,
        default=0.0,
        help="fraction whose connection is cut (default 0)",
    )
    add("--latency-ms", type=float, default=0.0, help="delay before each answer (default 0)")
    add(
        "--record",
        type=Path,
        help="append accepted users (and event elements) here as JSON lines (default: none)",
    )
    add("--arrivals", type=Path, help="append every request here as a JSON line (default: none)")
    add(
        "--max-body-bytes",
        type=int,
        default=moengage.MAX_REQUEST_BYTES,
        help="larger: 413 (default %(default)s)",
    )
    add(
        "--strict-bulk",
        action="store_true",
        help="bulk: 400 for an invalid element, not drop (default: drop, as MoEngage does)",
    )
    add(
        "--reject-customer-ids",
        type=_regex,
        metavar="REGEX",
        help="400 for a request holding a matching id (default: none)",
    )
    add(
        "--fail-customer-ids",
        type=_regex,
        metavar="REGEX",
        help="503 for every request holding a matching id, a request failing on its own "
        "(default: none)",
    )
    add(
        "--status-for-all",
        type=_status,
        metavar="CODE",
        help="answer every request so (default: none)",
    )
    add(
        "--outage-after",
        type=_non_negative,
        metavar="S",
        help="an outage starting S seconds after the first request (default: none)",
    )
    add("--outage-for", type=_non_negative, default=0.0, metavar="S", help="its length (default 0)")
    add(
        "--outage-mode",
        choices=OUTAGE_MODES,
        default="500",
        help="503 answers, cut connections, or the port closed (default %(default)s)",
    )
    add(
        "--redirect",
        type=int,
        choices=REDIRECT_STATUSES,
        metavar="CODE",
        help="answer every request with this redirect: 301, 302, 303, 307, 308 (default: none)",
    )
    add("--redirect-to", default=DEFAULT_REDIRECT_TO, help="its Location (default %(default)s)")
    add("--seed", type=int, help="seed for the fault injection (default: random)")
    add(
        "--schema-violations",
        type=Path,
        help="append elements the request schema refuses here (default: none)",
    )
    add(
        "--no-schema-check",
        dest="check_schema",
        action="store_false",
        help="skip the request schema check, for throughput benchmarks (default: check)",
    )


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds >= 0")
    return value


def api_key_from(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, str]:
    """The key and where it came from, in words that never hold the key."""
    if args.api_key is not None:
        return args.api_key, "the key given with --api-key (visible in `ps`)"
    from_env = env.get(args.api_key_env)
    if from_env:
        return from_env, f"the key in ${args.api_key_env}"
    return DEFAULT_API_KEY, f"the default key ({DEFAULT_API_KEY})"


def settings_from_args(
    args: argparse.Namespace, env: Mapping[str, str] | None = None
) -> SandboxSettings:
    import os

    api_key, key_source = api_key_from(args, os.environ if env is None else env)
    return SandboxSettings(
        port=args.port,
        workspace_id=args.workspace_id,
        api_key=api_key,
        key_source=key_source,
        outage_after=args.outage_after,
        outage_for=args.outage_for,
        outage_mode=args.outage_mode,
        redirect=args.redirect,
        redirect_to=args.redirect_to,
        rate=args.rate,
        period=args.period,
        event_rate=args.event_rate,
        fail_rate=args.fail_rate,
        reset_rate=args.reset_rate,
        latency_ms=args.latency_ms,
        record=args.record,
        arrivals=args.arrivals,
        max_body_bytes=args.max_body_bytes,
        strict_bulk=args.strict_bulk,
        reject_customer_ids=args.reject_customer_ids,
        fail_customer_ids=args.fail_customer_ids,
        status_for_all=args.status_for_all,
        seed=args.seed,
        schema_violations=args.schema_violations,
        check_schema=args.check_schema,
    )


async def serve(settings: SandboxSettings) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with SandboxServer(settings) as server:
        print(f"sandbox listening on {server.url} (workspace {settings.workspace_id})", flush=True)
        print(describe(settings), flush=True)
        await stop.wait()


def describe(settings: SandboxSettings) -> str:
    """What a client needs to know, said on start: workspace, key source, limit, faults."""
    lines = [
        f"  workspace ID  {settings.workspace_id}",
        f"  API key       {settings.key_source}",
        f"  rate limit    {settings.rate:,} user updates per {settings.period:g} s",
        f"  event limit   {settings.event_rate:,} events per {settings.period:g} s",
    ]
    faults = []
    if settings.latency_ms:
        faults.append(f"latency {settings.latency_ms:g} ms")
    if settings.fail_rate:
        faults.append(f"{settings.fail_rate:.0%} answered 5xx")
    if settings.reset_rate:
        faults.append(f"{settings.reset_rate:.0%} connections cut")
    if settings.status_for_all is not None:
        faults.append(f"every request answered {settings.status_for_all}")
    if settings.redirect is not None:
        faults.append(f"every request redirected ({settings.redirect})")
    if settings.outage_after is not None:
        faults.append(
            f"outage ({settings.outage_mode}) {settings.outage_after:g} s after the first "
            f"request, for {settings.outage_for:g} s"
        )
    if faults:
        lines.append(f"  faults        {', '.join(faults)}")
    return "\n".join(lines)


def run_from_args(args: argparse.Namespace) -> int:
    try:
        asyncio.run(serve(settings_from_args(args)))
    except OSError as exc:  # the port is taken, most likely
        print(f"sandbox: cannot listen on {HOST}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m importer.sandbox", description=__doc__)
    add_arguments(_parser)
    raise SystemExit(run_from_args(_parser.parse_args()))


# --- running it in a subprocess (the demo, the benchmark, the tests) ------------------------

URL_LINE = re.compile(r"^sandbox listening on (http://127\.0\.0\.1:\d+) \(workspace (.*)\)$")
STARTUP_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 5.0


@contextmanager
def launched(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stderr: IO[str] | None = None,
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`python -m importer.sandbox --port 0 ARGS` in a subprocess: yields it and its URL,
    and stops it on exit. A sandbox that does not report its URL is a RuntimeError."""
    process = subprocess.Popen(
        [sys.executable, "-m", "importer.sandbox", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        cwd=cwd,
        env=None if env is None else dict(env),
    )
    try:
        yield process, _reported_url(process)
    finally:
        _stop_process(process)


def _reported_url(process: subprocess.Popen[str]) -> str:
    stdout = process.stdout
    assert stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    # readline has no timeout: a thread reads, the caller waits on the queue.
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=STARTUP_TIMEOUT_SECONDS)
    except queue.Empty:
        line = ""
    match = URL_LINE.match(line.strip())
    if match is None:
        _stop_process(process)
        raise RuntimeError(
            f"sandbox did not report its URL within {STARTUP_TIMEOUT_SECONDS:.0f} s "
            f"(exit code {process.returncode}, first line {line!r})"
        )
    return match.group(1)


def _stop_process(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
