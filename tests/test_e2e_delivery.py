"""The sender end to end: the CLI against the sandbox when the API limits, fails, redirects,
refuses everything, answers slowly, or the user presses Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from aiohttp import web

from importer.run.delivery import MAX_REFUSALS_IN_A_ROW
from importer.sandbox.windows import max_in_any_window
from tests.sandbox_proc import SandboxProcess, start_sandbox
from tests.support import (
    USERS_MAPPING,
    assert_each_sent_and_few_twice,
    assert_report_adds_up,
    read_dead_letters,
    read_report,
    run_cli,
    self_signed_certificate,
    start_cli,
    user_ids,
    users_csv,
    users_job,
)

MAPPING = USERS_MAPPING


def _wait_for_arrivals(sandbox: SandboxProcess, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(sandbox.arrivals()) < count:
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.05)


def _wait_for_connections(pid: int, url: str, timeout: float = 30) -> None:
    """Until the process holds a connection to the sandbox: its first requests are out."""
    port = int(url.rsplit(":", 1)[1])
    process = psutil.Process(pid)
    deadline = time.monotonic() + timeout
    while not any(c.raddr and c.raddr.port == port for c in process.net_connections(kind="tcp")):
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.05)


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- 429: a workspace limit below the job's slows the run down, dead-letters nothing


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_a_workspace_limit_25_times_below_the_jobs_only_slows_the_run(tmp_path: Path) -> None:
    rows, limit, period = 6000, 1200, 4.0  # the workspace: 300 a second
    source = users_csv(tmp_path, rows)
    with start_sandbox(tmp_path, "--rate", str(limit), "--period", str(period)) as sandbox:
        job = users_job(
            tmp_path,
            sandbox.url,
            source,
            rate_limit={"updates": limit * 25, "period_seconds": period},
            delivery={"max_batch_bytes": 6000},
        )
        result = run_cli("run", str(job), "--no-progress")
        recorded = Counter(r["customer_id"] for r in sandbox.records())
        arrivals = sandbox.arrivals()
    assert result.returncode == 0, result.stderr
    assert set(recorded) == user_ids(rows) and max(recorded.values()) == 1
    assert read_dead_letters(tmp_path) == []
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_accepted"] == rows and report["http_429"] > 0
    # The workspace's pace: 20 s (16 s sending a window at once every period).
    allowed = rows / (limit / period)
    assert report["elapsed_seconds"] < 1.3 * allowed, report["elapsed_seconds"]
    settled = report["rate_settled_per_minute"]
    assert 0.6 * limit / period * 60 <= settled <= 1.1 * limit / period * 60, settled
    assert "settled at about" in result.stdout
    assert 1.0 <= report["rate_limited_wait_seconds"] <= report["elapsed_seconds"]
    assert max_in_any_window(arrivals, period, statuses=[200]) <= limit


# --- outages: pause, probe, resume; or stop with rows pending and resume on the rerun


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["500", "refuse"])
def test_an_outage_shorter_than_the_limit_pauses_and_delivers_everything(
    tmp_path: Path, mode: str
) -> None:
    rows = 3000
    source = users_csv(tmp_path, rows)
    outage = ("--outage-after", "1", "--outage-for", "3", "--outage-mode", mode)
    with start_sandbox(tmp_path, *outage) as sandbox:
        job = users_job(
            tmp_path,
            sandbox.url,
            source,
            rate_limit={"updates": 2400, "period_seconds": 6},
            delivery={"max_batch_bytes": 4000, "max_attempts": 2, "timeout_seconds": 2},
        )
        result = run_cli("run", str(job), "--no-progress")
        recorded = Counter(r["customer_id"] for r in sandbox.records())
        during = [a for a in sandbox.arrivals() if a["status"] != 200]
    assert result.returncode == 0, result.stderr
    assert set(recorded) == user_ids(rows)
    assert read_dead_letters(tmp_path) == []
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_accepted"] == rows and report["rows_failed"] == 0
    assert report["outage_seconds"] >= 1.0
    assert "not answering" in result.stderr and "answers again" in result.stderr
    if mode == "500":  # one probe at a time, at growing intervals: a handful, not a flood
        assert len(during) <= 8 + 6, during


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_an_outage_beyond_the_limit_stops_and_the_rerun_delivers_the_rest(
    tmp_path: Path,
) -> None:
    rows = 3000
    source = users_csv(tmp_path, rows)
    with start_sandbox(tmp_path, "--outage-after", "1", "--outage-for", "7") as sandbox:
        job = users_job(
            tmp_path,
            sandbox.url,
            source,
            rate_limit={"updates": 2400, "period_seconds": 6},
            delivery={"max_batch_bytes": 4000, "max_outage_seconds": 2},
        )
        first = run_cli("run", str(job), "--no-progress")
        assert first.returncode == 3, first.stderr
        assert "max_outage_seconds" in first.stderr
        stopped = read_report(tmp_path)
        assert_report_adds_up(stopped)
        assert stopped["rows_pending"] > 0 and stopped["rows_failed"] == 0
        assert read_dead_letters(tmp_path) == []
        # The API comes back 8 s after the first request; the same command resumes.
        back_at = sandbox.arrivals()[0]["t"] + 8.2
        time.sleep(max(0.0, back_at - time.time()))
        again = run_cli("run", str(job), "--no-progress")
        recorded = Counter(r["customer_id"] for r in sandbox.records())
    assert again.returncode == 0, again.stderr
    assert_each_sent_and_few_twice(recorded, user_ids(rows))
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_skipped"] + report["rows_accepted"] == rows


@pytest.mark.subprocess
def test_an_unreachable_api_stops_before_reading(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 50)
    # Nothing listens on port 9 of the loopback: every attempt is refused.
    job = users_job(
        tmp_path,
        "http://127.0.0.1:9",
        source,
        delivery={"max_attempts": 2, "backoff_base_seconds": 0.01, "max_outage_seconds": 1.5},
    )
    result = run_cli("run", str(job), "--no-progress")
    assert result.returncode == 3, result.stderr
    # The check before reading: refused connections, named with host and port.
    assert "connection refused" in result.stderr and "127.0.0.1:9" in result.stderr
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_read"] == 0 and report["requests"] == 0
    assert read_dead_letters(tmp_path) == []


# --- redirects are never followed


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_stops_the_run_and_the_target_receives_nothing(
    tmp_path: Path, status: int
) -> None:
    source = users_csv(tmp_path, 300)
    (tmp_path / "target").mkdir()
    with start_sandbox(tmp_path / "target") as target:
        redirect = ("--redirect", str(status), "--redirect-to", target.url)
        with start_sandbox(tmp_path, *redirect) as sandbox:
            job = users_job(tmp_path, sandbox.url, source, delivery={"max_batch_bytes": 2000})
            result = run_cli("run", str(job), "--no-progress")
            sent = len(sandbox.arrivals())
        reached_target = target.arrivals()
    assert result.returncode == 3, result.stderr
    assert f"answered {status}" in result.stderr and target.url in result.stderr
    assert reached_target == []
    assert 1 <= sent <= 8  # what was in flight when the first answer came
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_accepted"] == 0 and report["rows_pending"] == 300
    assert read_dead_letters(tmp_path) == []


# --- bisection has a budget


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_every_request_refused_stops_after_a_handful_not_two_per_row(tmp_path: Path) -> None:
    rows = 20_000
    source = users_csv(tmp_path, rows)
    with start_sandbox(tmp_path, "--status-for-all", "400") as sandbox:
        # A generous limit: the test is about requests spent, not about waiting for quota.
        job = users_job(tmp_path, sandbox.url, source, rate_limit={"updates": 200_000})
        result = run_cli("run", str(job), "--no-progress")
        requests = sandbox.stats()["requests"]
    assert result.returncode == 3, result.stderr
    assert "in a row" in result.stderr and "every request so" in result.stderr
    assert requests <= MAX_REFUSALS_IN_A_ROW + 8, requests
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_accepted"] == 0
    assert report["rows_pending"] + report["rows_rejected"] == rows
    assert report["rows_rejected"] <= MAX_REFUSALS_IN_A_ROW


# --- stop means stop; idle is idle


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_after_ctrl_c_no_request_arrives_later_than_a_second(tmp_path: Path) -> None:
    rows = 3000
    source = users_csv(tmp_path, rows)
    # A workspace limit ten times below the job's: attempts wait out 429 pauses in the
    # limiter; and failures wait in backoff.
    faults = ("--rate", "100", "--period", "4", "--fail-rate", "0.3", "--seed", "3")
    with start_sandbox(tmp_path, *faults) as sandbox:
        job = users_job(
            tmp_path,
            sandbox.url,
            source,
            rate_limit={"updates": 1000, "period_seconds": 4},
            delivery={"max_batch_bytes": 3000, "backoff_base_seconds": 2, "max_attempts": 10},
        )
        run = start_cli("run", str(job), "--no-progress")
        _wait_for_arrivals(sandbox, 6)
        time.sleep(1.0)
        interrupted_at = time.time()
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=60)
        time.sleep(0.5)
        arrivals = sandbox.arrivals()
    assert run.returncode == 130, stderr
    latest = max(a["t"] for a in arrivals)
    assert latest <= interrupted_at + 1.0, (
        f"a request arrived {latest - interrupted_at:.2f} s after"
    )
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_pending"] > 0 and report["rows_failed"] == 0


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.parametrize("wait", ["slow answers", "outage"])
def test_waiting_uses_under_five_percent_of_a_core(tmp_path: Path, wait: str) -> None:
    # Three requests for eight workers: five workers are done while three wait.
    source = users_csv(tmp_path, 150)
    faults = ("--latency-ms", "8000") if wait == "slow answers" else ("--status-for-all", "503")
    with start_sandbox(tmp_path, *faults) as sandbox:
        job = users_job(
            tmp_path,
            sandbox.url,
            source,
            delivery={"max_batch_bytes": 3000, "timeout_seconds": 20},
        )
        run = start_cli("run", str(job), "--no-progress")
        try:
            _wait_for_connections(run.pid, sandbox.url)
            time.sleep(1.0)  # startup and the first sends are done: only waiting now
            before, started = _cpu_seconds(run.pid), time.monotonic()
            time.sleep(4.0)
            used = _cpu_seconds(run.pid) - before
            share = used / (time.monotonic() - started)
            assert run.poll() is None, "the run ended before the window"
        finally:
            run.send_signal(signal.SIGINT)
            time.sleep(0.3)
            run.send_signal(signal.SIGINT)
            run.communicate(timeout=60)
    assert share < 0.05, f"{share:.1%} of a core while waiting on {wait}"


# --- transport safety


@pytest.mark.subprocess
def test_plain_http_to_another_host_is_refused_before_sending(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 10)
    job = users_job(tmp_path, "http://api-01.moengage.example", source)
    result = run_cli("run", str(job), "--no-progress")
    assert result.returncode == 2, result.stderr
    assert "--allow-insecure-http" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "report.json").exists()  # refused before the run began
    # A dry run sends nothing, so it has nothing to refuse.
    assert run_cli("validate", str(job)).returncode == 0


@pytest.fixture
def tls_api(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTPS server answering every POST 200, with a self-signed certificate."""
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"status": "success", "message": "Your request has been accepted"})

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/{tail:.*}", accept)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{port}", cert
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.subprocess
def test_an_untrusted_certificate_stops_with_a_plain_message_and_ca_bundle_fixes_it(
    tmp_path: Path, tls_api: tuple[str, Path]
) -> None:
    url, cert = tls_api
    source = users_csv(tmp_path, 20)
    env = {"SSL_CERT_FILE": ""}
    result = run_cli("run", str(users_job(tmp_path, url, source)), "--no-progress", env=env)
    assert result.returncode == 3, result.stderr
    assert "certificate verification failed for 127.0.0.1" in result.stderr
    assert "api.ca_bundle" in result.stderr and "SSL_CERT_FILE" in result.stderr
    assert "Error(" not in result.stderr and "Traceback" not in result.stderr
    # Found by the check before reading: nothing read, nothing sent.
    assert read_report(tmp_path)["rows_read"] == 0
    trusted = users_job(tmp_path, url, source, api={"ca_bundle": str(cert)})
    again = run_cli("run", str(trusted), "--no-progress", env=env)
    assert again.returncode == 0, again.stderr
    assert read_report(tmp_path)["rows_accepted"] == 20
