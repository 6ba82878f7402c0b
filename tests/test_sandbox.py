"""The sandbox answers as MoEngage's Data API does: auth, limits, validation, faults, records."""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import requests

from importer import moengage
from importer.cli import build_parser
from importer.sandbox import (
    RateWindow,
    SandboxServer,
    SandboxSettings,
    api_key_from,
    describe,
    element_problem,
    settings_from_args,
)
from importer.sandbox.launcher import launched
from importer.sandbox.recording import read_json_lines
from importer.sandbox.windows import max_in_any_window
from tests.sandbox_proc import REPO_ROOT as ROOT
from tests.sandbox_proc import start_sandbox

WORKSPACE = "SANDBOX"
KEY = "sandbox-key"
JSON = {"Content-Type": "application/json"}


def customer(customer_id: str | None, **attributes: Any) -> dict[str, Any]:
    return moengage.customer_element(customer_id, attributes, False)


def bulk(*elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": moengage.BULK_TYPE, "elements": list(elements)}


def post(
    url: str,
    body: Any,
    endpoint: str = "transition",
    auth: tuple[str, str] | None = (WORKSPACE, KEY),
    workspace: str = WORKSPACE,
    headers: dict[str, str] = JSON,
) -> requests.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return requests.post(
        f"{url}/v1/{endpoint}/{workspace}", data=data, headers=headers, auth=auth, timeout=10
    )


def error_of(response: requests.Response) -> dict[str, Any]:
    body = response.json()
    assert body["status"] == "fail"
    assert set(body["error"]) == {"type", "message", "request_id"}
    error: dict[str, Any] = body["error"]
    return error


@contextmanager
def in_process(tmp_path: Path, **overrides: Any) -> Iterator[SandboxServer]:
    """The server on its own event loop in a thread, so tests can call it synchronously."""
    settings = SandboxSettings(
        port=0, record=tmp_path / "record.jsonl", arrivals=tmp_path / "arrivals.jsonl", **overrides
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = SandboxServer(settings)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# ---------------------------------------------------------------- through a subprocess


@pytest.mark.sandbox
def test_subprocess_accepts_records_and_counts(tmp_path: Path) -> None:
    with start_sandbox(tmp_path, "--api-key", "s3cret-key") as sandbox:
        assert sandbox.url.startswith("http://127.0.0.1:")
        auth = (WORKSPACE, "s3cret-key")
        first = customer(
            "u1", name="Ann", points=3, platforms=[{"platform": "iOS", "active": "true"}]
        )
        second = customer("u2", **{moengage.ADD_TO_ARRAY_KEY: {"tags": ["a", "b"]}})
        answer = post(sandbox.url, bulk(first, second), auth=auth)
        assert answer.status_code == 200
        assert answer.json() == {"status": "success", "message": moengage.SUCCESS_MESSAGE}
        one = post(sandbox.url, customer("u3", city="Pune"), endpoint="customer", auth=auth)
        assert one.status_code == 200

        records = sandbox.records()
        assert [r["customer_id"] for r in records] == ["u1", "u2", "u3"]
        assert [r["endpoint"] for r in records] == ["bulk", "bulk", "customer"]
        assert records[0]["attributes"] == first["attributes"]
        assert records[1]["attributes"] == {moengage.ADD_TO_ARRAY_KEY: {"tags": ["a", "b"]}}
        assert records[2]["update_existing_only"] is False
        assert all(isinstance(r["received_at"], float) for r in records)

        arrivals = sandbox.arrivals()
        assert [(a["path"], a["users"], a["status"]) for a in arrivals] == [
            (f"/v1/transition/{WORKSPACE}", 2, 200),
            (f"/v1/customer/{WORKSPACE}", 1, 200),
        ]
        assert arrivals[0]["bytes"] == len(orjson.dumps(bulk(first, second)))
        stats = sandbox.stats()
        assert stats["requests"] == 2
        assert stats["users_accepted"] == 3
        assert stats["by_status"] == {"200": 2}
    assert sandbox.process.returncode == 0  # SIGTERM stops it cleanly
    assert "s3cret-key" not in sandbox.stderr()


@pytest.mark.sandbox
def test_subprocess_reset_rate_cuts_the_connection(tmp_path: Path) -> None:
    with start_sandbox(tmp_path, "--reset-rate", "1") as sandbox:
        with pytest.raises(requests.ConnectionError):
            post(sandbox.url, bulk(customer("u1", a=1)))
        assert sandbox.records() == []
        assert sandbox.arrivals()[0]["status"] is None
        assert sandbox.stats()["resets"] == 1


@pytest.mark.sandbox
def test_subprocess_startup_failure_reports_stderr(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="fail-rate"),
        start_sandbox(tmp_path, "--fail-rate", "7"),
    ):
        pass


# ---------------------------------------------------------------- auth and request checks


def test_auth_failures(tmp_path: Path) -> None:
    body = customer("u1", a=1)
    with in_process(tmp_path) as server:
        url = server.url
        assert post(url, body, endpoint="customer", auth=(WORKSPACE, "wrong")).status_code == 401
        assert post(url, body, endpoint="customer", auth=None).status_code == 401
        malformed = {**JSON, "Authorization": "Basic not-base64!"}
        assert post(url, body, endpoint="customer", auth=None, headers=malformed).status_code == 401
        mismatch = post(url, body, endpoint="customer", auth=("OTHER", KEY))
        assert mismatch.status_code == 409
        assert error_of(mismatch)["request_id"]
        other = post(url, body, endpoint="customer", auth=("OTHER", KEY), workspace="OTHER")
        assert other.status_code == 401
        assert error_of(other)["type"] == "Unauthorized"
        assert read_json_lines(tmp_path / "record.jsonl") == []


def test_content_type_and_body_size(tmp_path: Path) -> None:
    with in_process(tmp_path, max_body_bytes=200) as server:
        small = bulk(customer("u1", a=1))
        plain = post(server.url, small, headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415
        big = bulk(*(customer(f"u{i}", a=i) for i in range(10)))
        too_large = post(server.url, big)
        assert too_large.status_code == 413
        assert error_of(too_large)["message"]
        assert post(server.url, small).status_code == 200
        assert post(server.url, b"{not json").status_code == 400


def test_customer_endpoint_refuses_invalid_elements(tmp_path: Path) -> None:
    with in_process(tmp_path) as server:
        placeholder = post(server.url, customer("NULL", a=1), endpoint="customer")
        assert placeholder.status_code == 400
        assert "placeholder" in error_of(placeholder)["message"]
        reserved = post(server.url, customer("u1", moe_points=1), endpoint="customer")
        assert reserved.status_code == 400
        assert "moe_points" in error_of(reserved)["message"]
        system = post(server.url, customer("u1", moe_email="a@b.c"), endpoint="customer")
        assert system.status_code == 200
        assert [r["customer_id"] for r in read_json_lines(tmp_path / "record.jsonl")] == ["u1"]


def test_bulk_drops_invalid_elements_silently(tmp_path: Path) -> None:
    body = bulk(customer("good", a=1), customer("guest", a=2), customer("also-good", id=3))
    with in_process(tmp_path) as server:
        answer = post(server.url, body)
        assert answer.status_code == 200
        assert server.stats()["users_dropped"] == 2
    assert [r["customer_id"] for r in read_json_lines(tmp_path / "record.jsonl")] == ["good"]
    [arrival] = read_json_lines(tmp_path / "arrivals.jsonl")
    assert (arrival["users"], arrival["dropped"]) == (3, 2)


def test_strict_bulk_refuses_the_request(tmp_path: Path) -> None:
    body = bulk(customer("good", a=1), customer("guest", a=2))
    with in_process(tmp_path, strict_bulk=True) as server:
        answer = post(server.url, body)
        assert answer.status_code == 400
        assert "element 1" in error_of(answer)["message"]
    assert read_json_lines(tmp_path / "record.jsonl") == []


def test_reject_customer_ids(tmp_path: Path) -> None:
    with in_process(tmp_path, reject_customer_ids="^bad-") as server:
        refused = post(server.url, bulk(customer("ok-1", a=1), customer("bad-2", a=2)))
        assert refused.status_code == 400
        assert "element 1" in error_of(refused)["message"]
        assert post(server.url, customer("bad-3", a=1), endpoint="customer").status_code == 400
        assert post(server.url, bulk(customer("ok-4", a=1))).status_code == 200
    assert [r["customer_id"] for r in read_json_lines(tmp_path / "record.jsonl")] == ["ok-4"]


# ---------------------------------------------------------------- rate limit and faults


@pytest.mark.slow
def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    with in_process(tmp_path, rate=5, period=2.0) as server:
        three = bulk(*(customer(f"u{i}", a=i) for i in range(3)))
        assert post(server.url, three).status_code == 200
        limited = post(server.url, three)
        assert limited.status_code == 429
        assert error_of(limited)["type"] == moengage.RATE_LIMIT_ERROR_TYPE
        assert limited.json()["error"]["message"] == moengage.RATE_LIMIT_MESSAGE
        retry_after = int(limited.headers["Retry-After"])
        assert 1 <= retry_after <= 2
        assert int(limited.headers["x-ratelimit-reset"]) >= int(time.time())
        # The refused request did not count: two more users still fit.
        assert post(server.url, bulk(customer("a", x=1), customer("b", x=1))).status_code == 200
        time.sleep(2.05)
        assert post(server.url, three).status_code == 200
    arrivals = read_json_lines(tmp_path / "arrivals.jsonl")
    assert [a["status"] for a in arrivals] == [200, 429, 200, 200]
    assert max_in_any_window(arrivals, 2.0, statuses={200}) <= 5


def test_rate_window_retry_after_counts_only_what_must_expire() -> None:
    window = RateWindow(limit=10, period=60.0)
    window.add(0.0, 4)
    window.add(10.0, 4)
    assert window.wait_seconds(20.0, 2) is None
    assert window.wait_seconds(20.0, 3) == pytest.approx(40.0)  # the first 4 must go
    assert window.wait_seconds(20.0, 7) == pytest.approx(50.0)  # both must go
    assert window.wait_seconds(60.0, 6) is None  # the entry at 0.0 has expired
    assert window.wait_seconds(60.0, 11) == 60.0  # can never fit


def test_fail_rate_answers_5xx(tmp_path: Path) -> None:
    with in_process(tmp_path, fail_rate=1.0, seed=3) as server:
        answers = [post(server.url, bulk(customer("u1", a=1))) for _ in range(6)]
        assert {a.status_code for a in answers} <= {500, 503}
        assert all(error_of(a)["message"] for a in answers)
    assert read_json_lines(tmp_path / "record.jsonl") == []


def test_reset_is_a_broken_connection_for_aiohttp_too(tmp_path: Path) -> None:
    async def attempt(url: str) -> None:
        async with aiohttp.ClientSession() as session:
            await session.post(
                f"{url}/v1/transition/{WORKSPACE}",
                data=orjson.dumps(bulk(customer("u1", a=1))),
                headers={**JSON, "Authorization": aiohttp.encode_basic_auth(WORKSPACE, KEY)},
            )

    with in_process(tmp_path, reset_rate=1.0) as server:
        with pytest.raises(aiohttp.ClientConnectionError):
            asyncio.run(attempt(server.url))
        assert server.stats()["resets"] == 1


def test_status_for_all(tmp_path: Path) -> None:
    with in_process(tmp_path, status_for_all=403) as server:
        answer = post(server.url, bulk(customer("u1", a=1)))
        assert answer.status_code == 403
        assert error_of(answer)["type"] == "Forbidden"
        assert post(server.url, customer("u1"), endpoint="customer", auth=None).status_code == 403
        stats = requests.get(f"{server.url}/_sandbox/stats", timeout=5).json()
        assert stats == {
            "requests": 2,
            "users_accepted": 0,
            "events_accepted": 0,
            "users_dropped": 0,
            "resets": 0,
            "by_status": {"403": 2},
            "deletes": 0,
            "deletes_not_found": 0,
            "exports": 0,
            "unsets_applied": 0,
        }


def test_latency_delays_the_answer(tmp_path: Path) -> None:
    with in_process(tmp_path, latency_ms=300) as server:
        started = time.monotonic()
        assert post(server.url, bulk(customer("u1", a=1))).status_code == 200
        assert time.monotonic() - started >= 0.3


# ---------------------------------------------------------------- element rules


@pytest.mark.parametrize(
    ("element", "fragment"),
    [
        (customer("u1", a=1), None),
        (customer(None, moe_mobile="+911234567890"), None),
        (customer(None, name="x"), "identifier"),
        (customer(""), "empty"),
        (customer("u1", _id=1), "blocked"),
        (customer("u1", **{"n" * 201: 1}), "longer than 200"),
        (customer("u1", a="x" * 513), "longer than 512"),
        (customer("u1", a=None), "null"),
        (customer("u1", a=["x", 1]), "mixes"),
        (customer("u1", a=list(range(51))), "more than 50"),
        (customer("u1", a=["x" * 513]), "item longer"),
        (customer("u1", a=float("inf")), "finite"),
        (customer("u1", platforms=[{"platform": "android", "active": "true"}]), "platforms"),
        (customer("u1", platforms=[{"platform": "web", "active": True}]), "platforms"),
        (customer("u1", platforms=[{"platform": "ANDROID", "active": "false"}]), None),
        (customer("u1", tags=["a"], **{moengage.ADD_TO_ARRAY_KEY: {"tags": ["b"]}}), "both"),
        (customer("u1", **{moengage.REMOVE_FROM_ARRAY_KEY: {"tags": "b"}}), "must be an array"),
        ({**customer("u1"), "update_existing_only": "yes"}, "update_existing_only"),
        ({"type": "event", "customer_id": "u1", "attributes": {}}, "actions"),
    ],
)
def test_element_rules(element: dict[str, Any], fragment: str | None) -> None:
    problem = element_problem(element)
    if fragment is None:
        assert problem is None
    else:
        assert problem is not None and fragment in problem


# ---------------------------------------------------------------- the window helper


def test_max_in_any_window_sweeps_every_placement() -> None:
    arrivals: list[dict[str, Any]] = [
        {"t": 100.0, "users": 4, "status": 200},
        {"t": 100.5, "users": 3, "status": 429},
        {"t": 101.9, "users": 2, "status": 200},
        {"t": 102.0, "users": 5, "status": 200},  # exactly 2 s after the first: a new window
        {"t": 99.0, "users": 1, "status": None},  # out of order, as concurrent writes can be
    ]
    assert max_in_any_window(arrivals, 2.0) == 10  # 100.5 + 101.9 + 102.0
    assert max_in_any_window(arrivals, 2.0, statuses={200}) == 7  # 101.9 + 102.0
    assert max_in_any_window(arrivals, 2.01, statuses={200}) == 11
    assert max_in_any_window(arrivals, 10.0, statuses={None}) == 1
    assert max_in_any_window([], 60.0) == 0


# ---------------------------------------------------------------- for operators and new faults


def test_a_401_says_what_the_sandbox_expects_but_never_the_key(tmp_path: Path) -> None:
    secret = "real-key-from-the-vault-123"
    source = "the key in $MOE_SANDBOX_API_KEY"
    with in_process(tmp_path, api_key=secret, key_source=source) as server:
        wrong = error_of(post(server.url, customer("u1", a=1), "customer", (WORKSPACE, "nope")))
        padded = post(server.url, customer("u1", a=1), "customer", (WORKSPACE, secret + "\n"))
        other = post(server.url, customer("u1"), "customer", ("OTHER", secret), "OTHER")
    assert "'SANDBOX'" in wrong["message"] and source in wrong["message"]
    assert "whitespace" in error_of(padded)["message"]
    assert "unknown workspace ID 'OTHER'" in error_of(other)["message"]
    for message in (wrong["message"], error_of(padded)["message"], error_of(other)["message"]):
        assert secret not in message


@pytest.mark.sandbox
def test_the_key_comes_from_the_environment_and_start_says_where_from(tmp_path: Path) -> None:
    secret = "a-key-that-must-not-show-in-ps"
    env = {**os.environ, "MOE_SANDBOX_API_KEY": secret, "PYTHONPATH": str(ROOT)}
    with launched(["--rate", "500", "--period", "5"], cwd=ROOT, env=env) as (process, url):
        ok = post(url, customer("u1", a=1), "customer", (WORKSPACE, secret))
        assert ok.status_code == 200
        assert secret not in " ".join(process.args)  # type: ignore[arg-type]
    args = build_parser(["sandbox"]).parse_args(["sandbox"])
    assert api_key_from(args, {"MOE_SANDBOX_API_KEY": secret}) == (
        secret,
        "the key in $MOE_SANDBOX_API_KEY",
    )
    assert api_key_from(args, {})[0] == "sandbox-key"
    text = describe(settings_from_args(args, {"MOE_SANDBOX_API_KEY": secret}))
    assert "SANDBOX" in text and "$MOE_SANDBOX_API_KEY" in text and "10,000" in text
    assert secret not in text


def test_help_lists_every_default() -> None:
    parser = build_parser(["sandbox"])
    sandbox_parser = next(
        action.choices["sandbox"]
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    text = sandbox_parser.format_help()
    for default in ("8377", "SANDBOX", "sandbox-key", "MOE_SANDBOX_API_KEY", "10000", "60"):
        assert default in text, default


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_answers_with_a_location(tmp_path: Path, status: int) -> None:
    with in_process(tmp_path, redirect=status, redirect_to="http://127.0.0.1:9") as server:
        response = requests.post(
            f"{server.url}/v1/transition/{WORKSPACE}",
            data=orjson.dumps(bulk(customer("u1", a=1))),
            headers=JSON,
            auth=(WORKSPACE, KEY),
            allow_redirects=False,
            timeout=10,
        )
    assert response.status_code == status
    assert response.headers["Location"] == f"http://127.0.0.1:9/v1/transition/{WORKSPACE}"
    assert read_json_lines(tmp_path / "record.jsonl") == []


@pytest.mark.slow  # about half a second or more: not in make test-fast
def test_a_scheduled_outage_starts_after_the_first_request_and_ends(tmp_path: Path) -> None:
    # Polled until each change is seen (not a fixed number of sleeps, which a stalled
    # machine could carry past the whole outage).
    with in_process(tmp_path, outage_after=0.3, outage_for=0.5) as server:
        statuses = [post(server.url, customer("u1", a=1), "customer").status_code]
        deadline = time.monotonic() + 30
        for wanted in (503, 200):
            while statuses[-1] != wanted and time.monotonic() < deadline:
                time.sleep(0.02)
                statuses.append(post(server.url, customer("u1", a=1), "customer").status_code)
    assert statuses[0] == 200 and 503 in statuses and statuses[-1] == 200, statuses


def test_fail_customer_ids_fails_only_those_requests(tmp_path: Path) -> None:
    with in_process(tmp_path, fail_customer_ids="^bad") as server:
        assert post(server.url, bulk(customer("bad1", a=1), customer("u2"))).status_code == 503
        assert post(server.url, bulk(customer("u3", a=1))).status_code == 200
