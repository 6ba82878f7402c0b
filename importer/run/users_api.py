"""Calls beside the update stream: Delete User, Get User (read-back) and the credential check.

Each kind is paced by its own window limiter (deletes and read-backs have limits of their
own at MoEngage), retried on 5xx, timeouts and 429 with backoff, and judged by MoEngage's
success body, never by the status alone.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from importer import moengage
from importer.config import ApiConfig
from importer.errors import RunAborted
from importer.quota.window import WindowLimiter
from importer.run import retry
from importer.run.transport import NoAnswer, Transport, check_plain_http

MAX_ATTEMPTS = 6
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0


class CallRefused(RunAborted):
    """The API refused the credentials or the workspace (401, 403, 409): exit 3."""


@dataclass(frozen=True, slots=True)
class CallResult:
    """One call's end: `ok` with MoEngage's success body; else why (no personal data)."""

    ok: bool
    status: int | None
    body: Any
    error: str | None = None


def basic_auth(login: str, password: str) -> str:
    """The Authorization header value (aiohttp 3.14 deprecates BasicAuth for this helper)."""
    encode = getattr(aiohttp, "encode_basic_auth", None)
    if encode is not None:
        return str(encode(login, password))
    return aiohttp.BasicAuth(login, password, "utf-8").encode()


def is_success_body(body: Any) -> bool:
    """MoEngage's success: a JSON object whose status is "success" (any other 2xx is not)."""
    return isinstance(body, dict) and body.get("status") == "success"


class UsersApiClient:
    """Delete User and Get User calls for one job's workspace, each kind paced on its own."""

    def __init__(
        self,
        api: ApiConfig,
        transport: Transport,
        *,
        limiter: WindowLimiter,
        in_transit_seconds: float,
        rng: random.Random | None = None,
    ) -> None:
        self._api = api
        # How late a request that got no answer may still arrive (its slot is held so long).
        self._in_transit_seconds = in_transit_seconds
        self._transport = transport
        self._limiter = limiter
        self._rng = rng or random.Random()
        key = api.api_key.get_secret_value()
        self.headers: Mapping[str, str] = {
            "Content-Type": "application/json",
            "Authorization": basic_auth(api.workspace_id, key),
        }

    def url(self, path: str) -> str:
        query = {"app_id": self._api.workspace_id}
        if self._api.project_code:
            query["project_code"] = self._api.project_code
        url = f"{self._api.resolved_base_url()}{path}?{urlencode(query)}"
        check_plain_http(url, self._api.allow_insecure_http)
        return url

    async def delete(self, customer_id: str) -> CallResult:
        """One user deleted; a 400 saying the user was not found counts as done."""
        body = {"identity_type": moengage.DELETE_IDENTITY_TYPE, "identity_value": customer_id}
        result = await self.call(moengage.DELETE_PATH, body, units=1)
        if not result.ok and result.status == moengage.BAD_PAYLOAD_STATUS:
            message, _ = moengage.parse_error(result.body)
            if moengage.USER_NOT_FOUND_MESSAGE.lower() in message.lower():
                return CallResult(True, result.status, result.body)
        return result

    async def export(self, customer_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Profiles of up to 20 customers as MoEngage stores them (absent ones left out)."""
        body = {"identity_type": "customer_id", "identity_values": customer_ids}
        result = await self.call(moengage.EXPORT_PATH, body, units=len(customer_ids))
        if not result.ok:
            raise RunAborted(f"reading profiles back failed: {result.error}")
        found = result.body.get("data") if isinstance(result.body, dict) else None
        profiles: dict[str, dict[str, Any]] = {}
        for item in found if isinstance(found, list) else []:
            if isinstance(item, dict) and isinstance(item.get("customer_id"), str):
                attributes = item.get("attributes")
                profiles[item["customer_id"]] = attributes if isinstance(attributes, dict) else {}
        return profiles

    async def call(self, path: str, body: dict[str, Any], *, units: int) -> CallResult:
        """POST with retries: 5xx, no answer, 429 and non-MoEngage 2xx are tried again."""
        url = self.url(path)
        payload = orjson.dumps(body)
        last = CallResult(False, None, None, "not sent")
        for attempt in range(1, MAX_ATTEMPTS + 1):
            last, wait = await self._attempt(url, payload, units)
            if last.ok or wait is None:
                return last
            await asyncio.sleep(
                wait or retry.backoff_delay(attempt, BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS)
            )
        return last

    async def _attempt(
        self, url: str, payload: bytes, units: int
    ) -> tuple[CallResult, float | None]:
        """One attempt and, when it may be retried, the wait before the next (0 = backoff)."""
        permit = await self._limiter.acquire(units)
        try:
            status, headers, raw = await self._transport.post(url, payload, self.headers)
        except NoAnswer as exc:
            permit.release(extra_hold=self._in_transit_seconds)
            return CallResult(False, None, None, f"no answer ({exc})"), 0.0
        permit.release()
        body = _json_or_none(raw)
        if status in moengage.FATAL_STATUSES:
            raise CallRefused(
                f"the API refused the request with {status} "
                f"({moengage.STATUS_MEANINGS.get(status, 'refused')}); nothing more is sent"
            )
        if 200 <= status < 300 and is_success_body(body):
            return CallResult(True, status, body), None
        error = f"status {status}" + ("" if 200 <= status < 300 else ": " + _message(body))
        if status == moengage.RATE_LIMITED_STATUS:
            return CallResult(False, status, body, error), (
                retry.retry_after_seconds(headers, time.time()) or 0.0
            )
        if retry.is_transient(status) or 200 <= status < 300:
            why = error if status >= 300 else f"status {status} without MoEngage's success body"
            return CallResult(False, status, body, why), 0.0
        return CallResult(False, status, body, error), None


def _json_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def _message(body: Any) -> str:
    message, _ = moengage.parse_error(body)
    return message[:200]
