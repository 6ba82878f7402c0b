"""The Delete User and Get User APIs over the sandbox's profiles, each with its own limit.

Delete: `POST /v1/customer/delete?app_id=W`, body {"identity_type": "customer_id",
"identity_value": ID}; 400 "User not found" for an unknown customer. Get User: `POST
/v1/customers/export?app_id=W`, body {"identity_type": "customer_id", "identity_values":
[ID, ...]} (at most 20), answered {"status": "success", "data": [{customer_id, attributes}],
"not_found": [...]}.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from importer import moengage
from importer.sandbox.answers import Answer, failure, response
from importer.sandbox.bodies import UNPARSED, parse_body
from importer.sandbox.profiles import ProfileStore
from importer.sandbox.recording import JsonLines
from importer.sandbox.window import RateWindow

AuthCheck = Callable[[web.Request, str], Answer | None]


class UsersApi:
    """Handlers for deletes and read-backs; `auth(request, workspace_id)` is the server's."""

    def __init__(
        self,
        profiles: ProfileStore,
        auth: AuthCheck,
        *,
        delete_window: RateWindow,
        export_window: RateWindow,
        arrivals: Callable[[], JsonLines],
        fail_deletes: bool = False,
    ) -> None:
        self.fail_deletes = fail_deletes
        self.profiles = profiles
        self._auth = auth
        self._delete_window = delete_window
        self._export_window = export_window
        self._arrivals = arrivals
        self.counters = {"deletes": 0, "deletes_not_found": 0, "exports": 0}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(moengage.DELETE_PATH, self.handle_delete)
        app.router.add_post(moengage.EXPORT_PATH, self.handle_export)

    async def handle_delete(self, request: web.Request) -> web.Response:
        now = time.time()
        parsed = parse_body(await request.read())
        answer = self._refused(request, self._delete_window, now, 1)
        if answer is None and self.fail_deletes:
            answer = failure(503, "deletes fail (sandbox --fail-deletes)")
        answer = answer or self._delete(parsed, now)
        self._log(request, now, answer, deletes=1)
        return response(answer, "moengage")

    async def handle_export(self, request: web.Request) -> web.Response:
        now = time.time()
        parsed = parse_body(await request.read())
        ids = parsed.get("identity_values") if isinstance(parsed, dict) else None
        count = len(ids) if isinstance(ids, list) else 0
        answer = self._refused(request, self._export_window, now, count) or self._export(ids)
        self._log(request, now, answer, exports=count)
        return response(answer, "moengage")

    def _refused(
        self, request: web.Request, window: RateWindow, now: float, count: int
    ) -> Answer | None:
        refused = self._auth(request, request.query.get("app_id", ""))
        if refused is not None:
            return refused
        wait = window.wait_seconds(now, count)
        if wait is not None:
            return failure(
                moengage.RATE_LIMITED_STATUS,
                moengage.RATE_LIMIT_MESSAGE,
                moengage.RATE_LIMIT_ERROR_TYPE,
            )
        window.add(now, count)
        return None

    def _delete(self, parsed: Any, now: float) -> Answer:
        if parsed is UNPARSED or not isinstance(parsed, dict):
            return failure(moengage.BAD_PAYLOAD_STATUS, "body is not a JSON object")
        if parsed.get("identity_type") != moengage.DELETE_IDENTITY_TYPE:
            return failure(moengage.BAD_PAYLOAD_STATUS, "identity_type must be customer_id")
        customer_id = parsed.get("identity_value")
        if not isinstance(customer_id, str) or not customer_id:
            return failure(moengage.BAD_PAYLOAD_STATUS, "identity_value must be a customer_id")
        if not self.profiles.delete(customer_id, now):
            self.counters["deletes_not_found"] += 1
            return failure(moengage.BAD_PAYLOAD_STATUS, moengage.USER_NOT_FOUND_MESSAGE)
        self.counters["deletes"] += 1
        return Answer(200, {"status": "success", "message": "User deletion request accepted"})

    def _export(self, ids: Any) -> Answer:
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            return failure(moengage.BAD_PAYLOAD_STATUS, "identity_values must list customer_ids")
        if len(ids) > moengage.EXPORT_MAX_USERS:
            return failure(
                moengage.BAD_PAYLOAD_STATUS,
                f"at most {moengage.EXPORT_MAX_USERS} identity_values a request",
            )
        self.counters["exports"] += len(ids)
        found, missing = self.profiles.export(ids)
        return Answer(200, {"status": "success", "data": found, "not_found": missing})

    def _log(self, request: web.Request, now: float, answer: Answer, **counts: int) -> None:
        line = {"t": now, "path": request.path, "users": 0, "status": answer.status, **counts}
        self._arrivals().write([line])


def profiles_body(profiles: ProfileStore) -> bytes:
    return orjson.dumps(profiles.snapshot())
