"""Issue 24, delivery: odd 2xx never accepted, per-row 5xx, refusal budgets, 407/408/425,
an unreachable host, and error texts cut where they are kept."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import orjson
import pytest
import requests
from pydantic import SecretStr

from importer.config import ApiConfig, DeliveryConfig
from importer.quota.window import WindowLimiter
from importer.rows import Row
from importer.run.answers import MAX_REASON_CHARS
from importer.run.delivery import DeliveryStats, Sender
from importer.run.transport import Answer, FakeTransport, Request
from tests.sandbox_proc import start_sandbox
from tests.support import (
    assert_report_adds_up,
    read_dead_letters,
    read_report,
    run_cli,
    user_id,
    user_ids,
    users_csv,
    users_job,
)
from tests.test_delivery import CHUNK

QUICK = {
    "max_attempts": 2,
    "backoff_base_seconds": 0.02,
    "backoff_max_seconds": 0.05,
    "max_outage_seconds": 2,
    "timeout_seconds": 5,
}


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize("kind", ["html", "fail", "empty", "202", "204"])
def test_a_2xx_without_moengage_success_body_is_never_accepted(tmp_path: Path, kind: str) -> None:
    source = users_csv(tmp_path, 30)
    with start_sandbox(tmp_path, "--success-body", kind) as sandbox:
        job = users_job(tmp_path, sandbox.url, source, delivery={**QUICK, "concurrency": 2})
        result = run_cli("run", str(job), "--no-progress")
        kept = sandbox.records()
    assert result.returncode == 3, result.stderr
    assert "without MoEngage's success body" in result.stderr
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_accepted"] == 0 and report["rows_pending"] == 30, report
    assert read_dead_letters(tmp_path) == [] and kept == []


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_5xx_for_a_few_customers_dead_letters_only_them(tmp_path: Path) -> None:
    failing = {150, 220, 221}
    source = users_csv(tmp_path, 300)
    pattern = "^(" + "|".join(user_id(i) for i in sorted(failing)) + ")$"
    with start_sandbox(tmp_path, "--fail-customer-ids", pattern) as sandbox:
        delivery = {**QUICK, "concurrency": 1, "max_batch_bytes": 2000}
        job = users_job(tmp_path, sandbox.url, source, delivery=delivery)
        result = run_cli("run", str(job), "--no-progress")
        recorded = {r["customer_id"] for r in sandbox.records()}
    assert result.returncode == 1, result.stderr
    letters = read_dead_letters(tmp_path)
    assert {letter["customer_id"] for letter in letters} == {user_id(i) for i in failing}
    assert {letter["stage"] for letter in letters} == {"delivery"}
    assert recorded == user_ids(300) - {user_id(i) for i in failing}
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_accepted"] == 297 and report["rows_failed"] == 3, report


def _profiles(url: str) -> set[str]:
    """The customer ids the sandbox keeps a profile for."""
    got = requests.get(f"{url}/_sandbox/profiles", timeout=10).json()
    return set(got["profiles"])


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize("concurrency", [1, 8])
def test_a_lone_batch_with_failing_customers_is_judged_per_row_at_once(
    tmp_path: Path, concurrency: int
) -> None:
    # One request holds the whole file, so nothing else can be answered first (a small file,
    # or the rerun after a replay); row 1 fails, the worst case for a bisection's first half.
    failing = {user_id(i) for i in (1, 2, 17, 23)}
    source = users_csv(tmp_path, 30)
    pattern = "^(" + "|".join(sorted(failing)) + ")$"
    with start_sandbox(tmp_path, "--fail-customer-ids", pattern) as sandbox:
        delivery = {**QUICK, "max_attempts": 6, "max_outage_seconds": 120}
        job = users_job(
            tmp_path, sandbox.url, source, delivery={**delivery, "concurrency": concurrency}
        )
        started = time.monotonic()
        result = run_cli("run", str(job), "--no-progress")
        elapsed = time.monotonic() - started
        profiles = _profiles(sandbox.url)
    assert result.returncode == 1, result.stderr
    assert elapsed < 20, elapsed  # not max_outage_seconds (120) of probing
    letters = read_dead_letters(tmp_path)
    assert sorted(letter["customer_id"] for letter in letters) == sorted(failing)
    assert {letter["stage"] for letter in letters} == {"delivery"}
    assert profiles == user_ids(30) - failing
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_accepted"] == 26 and report["rows_failed"] == 4, report
    assert report["outage_seconds"] == 0, report


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize("mode", ["500", "refuse"])
def test_a_lone_batch_in_an_outage_is_never_dead_lettered_and_the_rerun_delivers_it(
    tmp_path: Path, mode: str
) -> None:
    source = users_csv(tmp_path, 30)
    outage = ("--outage-after", "0", "--outage-for", "6", "--outage-mode", mode)
    with start_sandbox(tmp_path, *outage) as sandbox:
        job = users_job(tmp_path, sandbox.url, source, delivery={**QUICK, "max_attempts": 3})
        first = run_cli("run", str(job), "--no-progress")
        assert first.returncode == 3, first.stderr
        assert "max_outage_seconds" in first.stderr
        stopped = read_report(tmp_path)
        assert_report_adds_up(stopped)
        assert stopped["rows_failed"] == 0 and stopped["rows_pending"] > 0, stopped
        assert read_dead_letters(tmp_path) == []
        back_at = sandbox.arrivals()[0]["t"] + 6.2
        time.sleep(max(0.0, back_at - time.time()))
        again = run_cli("run", str(job), "--no-progress")
        profiles = _profiles(sandbox.url)
    assert again.returncode == 0, again.stderr
    assert profiles == user_ids(30) and read_dead_letters(tmp_path) == []
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_accepted"] + report["rows_skipped"] == 30, report


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize("status", ["413", "410", "431"])
def test_413_to_everything_stops_with_the_rows_not_isolated_pending(
    tmp_path: Path, status: str
) -> None:
    source = users_csv(tmp_path, 400)
    with start_sandbox(tmp_path, "--status-for-all", status) as sandbox:
        delivery = {**QUICK, "concurrency": 2, "max_batch_bytes": 4000}
        job = users_job(tmp_path, sandbox.url, source, delivery=delivery)
        result = run_cli("run", str(job), "--no-progress", timeout=60)
    assert result.returncode == 3, result.stderr
    assert "refused" in result.stderr
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    # Only single elements isolated before the budget tripped are rejected; the rest wait.
    assert report["rows_rejected"] < 70 and report["rows_pending"] >= 330, report
    assert report["requests"] < 200, report
    assert all(letter["stage"] == "rejected" for letter in read_dead_letters(tmp_path))


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize("status", ["407", "408", "425"])
def test_407_408_425_never_dead_letter(tmp_path: Path, status: str) -> None:
    source = users_csv(tmp_path, 40)
    with start_sandbox(tmp_path, "--status-for-all", status) as sandbox:
        job = users_job(tmp_path, sandbox.url, source, delivery={**QUICK, "concurrency": 2})
        result = run_cli("run", str(job), "--no-progress", timeout=60)
    assert result.returncode == 3, result.stderr
    assert read_dead_letters(tmp_path) == []
    report = read_report(tmp_path)
    assert report["rows_accepted"] == 0 and report["rows_pending"] == 40, report


@pytest.mark.subprocess
def test_a_closed_port_stops_before_reading_naming_host_and_port(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = users_csv(tmp_path, 10)
    job = users_job(tmp_path, f"http://127.0.0.1:{port}", source, delivery=QUICK)
    result = run_cli("run", str(job), "--no-progress", timeout=60)
    assert result.returncode == 3, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr and "rate limit" not in result.stderr
    report = read_report(tmp_path)
    assert report["rows_read"] == 0 and report["requests"] == 0, report


def _sender(respond: Answer) -> tuple[Sender, FakeTransport]:
    def answer(request: Request) -> Answer:
        return respond

    transport = FakeTransport(answer)
    api = ApiConfig(
        base_url="http://127.0.0.1:9", workspace_id="W", api_key=SecretStr("a-long-test-key")
    )
    delivery = DeliveryConfig(max_attempts=2, backoff_base_seconds=0.01)
    sender = Sender(api, delivery, WindowLimiter(1000, 1.0), transport, DeliveryStats())
    return sender, transport


def test_a_huge_error_message_is_cut_where_it_is_kept() -> None:
    message = "bad " * 125_000  # a 500 KB message
    body = orjson.dumps({"status": "fail", "error": {"message": message}})
    sender, _ = _sender((400, {}, body))
    rows = [Row("in.csv", 1, "c1", b'{"customer_id":"c1"}', CHUNK)]
    result = asyncio.run(sender.send(rows))
    assert len(result.refused) == 1
    reason = result.refused[0].error
    assert len(reason) <= MAX_REASON_CHARS + 80 and "more characters not kept" in reason
