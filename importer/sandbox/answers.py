"""The sandbox's answers: MoEngage's success and error bodies, the 2xx answers that are not
MoEngage's (a captive portal's page, a fail body with 200, 202, 204), the cut connection."""

from __future__ import annotations

import math
import socket
import struct
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import hdrs, web

from importer import moengage

# `--success-body`: how an accepted request is answered. Only "moengage" is MoEngage's own;
# the others are what a proxy, a portal or a half-broken gateway answers with a 2xx.
SUCCESS_BODIES = ("moengage", "html", "fail", "empty", "202", "204")
PORTAL_PAGE = b"<!doctype html><html><body><h1>Sign in to the network</h1></body></html>"


@dataclass(slots=True)
class Answer:
    """One answer to a request, and what it accepted or dropped for the record."""

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


def rate_limited(now: float, wait: float) -> Answer:
    """A 429 as MoEngage sends it, saying when the window has room again."""
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


def response(answer: Answer, success_body: str) -> web.Response:
    """The HTTP response for an answer; a 2xx in a non-MoEngage form when the sandbox plays one
    (the elements are then not kept: nothing behind the portal received them)."""
    if answer.status == 200 and success_body != "moengage":
        return odd_success(success_body, answer.headers)
    return web.Response(
        status=answer.status,
        body=orjson.dumps(answer.body),
        headers=answer.headers,
        content_type="application/json",
    )


def odd_success(kind: str, headers: dict[str, str]) -> web.Response:
    if kind == "html":
        return web.Response(status=200, body=PORTAL_PAGE, headers=headers, content_type="text/html")
    if kind == "fail":
        body = moengage.error_body("Unknown", "failed (sandbox --success-body fail)", "sandbox")
        return web.Response(
            status=200, body=orjson.dumps(body), headers=headers, content_type="application/json"
        )
    if kind == "empty":
        return web.Response(status=200, body=b"", headers=headers)
    return web.Response(status=int(kind), headers=headers)


def cut_connection(request: web.Request) -> None:
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
