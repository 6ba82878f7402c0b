"""No row lost, none sent twice without need: faults, kill -9, Ctrl-C, splitting, stops, replay."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.sandbox_proc import SandboxProcess, start_sandbox
from tests.support import (
    USERS_MAPPING,
    assert_each_sent_and_few_twice,
    assert_report_adds_up,
    job_dict,
    read_dead_letters,
    read_report,
    run_cli,
    start_cli,
    user_ids,
    users_csv,
    users_job,
    write_job,
)

MAPPING = USERS_MAPPING


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_faults_are_retried_until_every_user_is_recorded(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 2000)
    with start_sandbox(
        tmp_path, "--fail-rate", "0.15", "--reset-rate", "0.05", "--seed", "7"
    ) as sandbox:
        job = users_job(
            tmp_path,
            sandbox.url,
            source,
            rate_limit={"updates": 100000, "period_seconds": 60},
            delivery={"max_batch_bytes": 4000, "max_attempts": 8},
        )
        result = run_cli("run", str(job), "--no-progress")
        recorded = {r["customer_id"] for r in sandbox.records()}
    assert result.returncode == 0, result.stderr
    assert recorded == user_ids(2000)
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_accepted"] == 2000
    assert report["retries"] > 0
    assert report["requests"] > report["retries"]


def _wait_for_records(sandbox: SandboxProcess, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(sandbox.records()) < count:
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.05)


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize("how", ["kill", "sigint", "sigterm"])
def test_interrupted_run_resumes_without_losing_or_resending_much(tmp_path: Path, how: str) -> None:
    rows = 2000
    source = users_csv(tmp_path, rows)
    with start_sandbox(tmp_path) as sandbox:
        job = users_job(
            tmp_path, sandbox.url, source, rate_limit={"updates": 500, "period_seconds": 1}
        )
        first = start_cli("run", str(job), "--no-progress")
        _wait_for_records(sandbox, 600)
        signals = {"kill": signal.SIGKILL, "sigint": signal.SIGINT, "sigterm": signal.SIGTERM}
        first.send_signal(signals[how])
        first.communicate(timeout=60)
        if how != "kill":
            assert first.returncode == 130
            interrupted = read_report(tmp_path)
            assert_report_adds_up(interrupted)
            assert interrupted["exit_code"] == 130
            assert 0 < interrupted["rows_accepted"] < rows
        else:
            assert first.returncode == -signal.SIGKILL
        sent_before = len(sandbox.records())
        assert sent_before < rows

        again = run_cli("run", str(job), "--no-progress")
        assert again.returncode == 0, again.stderr
        recorded = Counter(r["customer_id"] for r in sandbox.records())
    assert_each_sent_and_few_twice(recorded, user_ids(rows))
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_skipped"] > 0
    assert report["rows_skipped"] + report["rows_accepted"] == rows


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_too_large_requests_are_split_and_resent(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 300)
    with start_sandbox(tmp_path, "--max-body-bytes", "3000") as sandbox:
        job = users_job(tmp_path, sandbox.url, source)
        result = run_cli("run", str(job), "--no-progress")
        recorded = {r["customer_id"] for r in sandbox.records()}
        statuses = Counter(a["status"] for a in sandbox.arrivals())
    assert result.returncode == 0, result.stderr
    assert len(recorded) == 300
    assert statuses[413] > 0


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_refused_elements_are_isolated_and_the_rest_delivered(tmp_path: Path) -> None:
    bad = (17, 250)
    source = users_csv(tmp_path, 300, bad_ids=bad)
    with start_sandbox(tmp_path, "--reject-customer-ids", "^bad") as sandbox:
        job = users_job(tmp_path, sandbox.url, source)
        result = run_cli("run", str(job), "--no-progress")
        recorded = {r["customer_id"] for r in sandbox.records()}
    assert result.returncode == 1, result.stderr
    assert len(recorded) == 298 and not any(c.startswith("bad") for c in recorded)
    letters = read_dead_letters(tmp_path)
    assert [(d["row"], d["stage"], d["status"]) for d in letters] == [
        (17, "rejected", 400),
        (250, "rejected", 400),
    ]
    assert letters[0]["payload"]["customer_id"] == "bad00017"
    assert "request_id" in letters[0]["error"]
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_rejected"] == 2 and report["rows_accepted"] == 298


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize("status", [401, 403, 409])
def test_fatal_statuses_stop_at_once(tmp_path: Path, status: int) -> None:
    source = users_csv(tmp_path, 500)
    with start_sandbox(tmp_path, "--status-for-all", str(status)) as sandbox:
        job = users_job(tmp_path, sandbox.url, source, delivery={"max_batch_bytes": 2000})
        result = run_cli("run", str(job), "--no-progress")
        requests = sandbox.stats()["requests"]
    assert result.returncode == 3, result.stderr
    assert str(status) in result.stderr
    assert requests <= 8  # only what was in flight when the first answer came
    assert read_dead_letters(tmp_path) == []
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_pending"] == 500 and report["exit_code"] == 3


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_rate_limited_answers_are_waited_out(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 300)
    # The workspace's real limit is lower than the job thinks: 429s with Retry-After.
    with start_sandbox(tmp_path, "--rate", "100", "--period", "1") as sandbox:
        job = users_job(
            tmp_path,
            sandbox.url,
            source,
            rate_limit={"updates": 100000, "period_seconds": 60},
            delivery={"max_batch_bytes": 2000},
        )
        result = run_cli("run", str(job), "--no-progress")
        recorded = {r["customer_id"] for r in sandbox.records()}
    assert result.returncode == 0, result.stderr
    assert len(recorded) == 300
    report = read_report(tmp_path)
    assert report["http_429"] > 0 and report["rows_failed"] == 0


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_replay_resends_failed_rows_and_remaps_invalid_ones(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    healthy_rows = "".join(f"ok{i},Ok,{i}\n" for i in range(4, 40))
    source.write_text("user_id,first_name,points\nu1,Ann,1\nu2,Bo,2.5\nu3,Cy,3\n" + healthy_rows)
    # u1 and u3 fail whenever they are sent, while the other rows are answered: their
    # requests fail on their own (an outage would stop the run instead), one row a request.
    faults = ("--fail-customer-ids", "^u[13]$", "--latency-ms", "50")
    with start_sandbox(tmp_path, *faults) as broken:
        job = users_job(
            tmp_path,
            broken.url,
            source,
            delivery={"max_attempts": 3, "concurrency": 3},
            api={"endpoint": "customer"},
        )
        first = run_cli("run", str(job), "--no-progress")
    assert first.returncode == 1, first.stderr
    dead = tmp_path / "out" / "dead_letter.jsonl"
    assert sorted((d["row"], d["stage"]) for d in read_dead_letters(tmp_path)) == [
        (1, "delivery"),
        (2, "validation"),
        (3, "delivery"),
    ]
    # Fix the mapping (points are numbers after all) and replay against a healthy API.
    healthy_dir = tmp_path / "healthy"
    healthy_dir.mkdir()
    with start_sandbox(healthy_dir) as healthy:
        fixed = job_dict(
            tmp_path,
            healthy.url,
            source,
            {
                "customer_id": "user_id",
                "attributes": {
                    "first_name": "first_name",
                    "points": {"column": "points", "type": "number"},
                },
            },
        )
        replay_job = write_job(tmp_path, fixed)  # the same job, its mapping fixed in place
        result = run_cli("replay", str(replay_job), str(dead), "--no-progress")
        recorded = {r["customer_id"]: r["attributes"] for r in healthy.records()}
    assert result.returncode == 0, result.stderr
    assert recorded == {
        "u1": {"first_name": "Ann", "points": 1},
        "u2": {"first_name": "Bo", "points": 2.5},
        "u3": {"first_name": "Cy", "points": 3},
    }
    replay_report = json.loads((tmp_path / "out" / "dead_letter.replay.report.json").read_text())
    assert replay_report["rows_read"] == 3 and replay_report["rows_accepted"] == 3
    assert os.path.getsize(tmp_path / "out" / "dead_letter.replay.jsonl") == 0


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_dry_run_leaves_a_resumable_runs_dead_letters_alone(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    source.write_text("user_id,first_name,points\nu1,Ann,1\nu2,Bo,2.5\n")
    with start_sandbox(tmp_path) as sandbox:
        job = users_job(tmp_path, sandbox.url, source)
        assert run_cli("run", str(job), "--no-progress").returncode == 1
        before = (tmp_path / "out" / "dead_letter.jsonl").read_text()
        dry = run_cli("validate", str(job))
        assert dry.returncode == 1, dry.stderr
        assert (tmp_path / "out" / "dead_letter.jsonl").read_text() == before
        assert (tmp_path / "out" / "dead_letter.dry-run.jsonl").exists()
        again = run_cli("run", str(job), "--no-progress")
        assert again.returncode == 1 and read_report(tmp_path)["rows_skipped"] == 2
    assert (tmp_path / "out" / "dead_letter.jsonl").read_text() == before


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_second_interrupt_stops_at_once_and_loses_nothing(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 400)
    with start_sandbox(tmp_path, "--latency-ms", "4000") as slow:
        job = users_job(tmp_path, slow.url, source, delivery={"max_batch_bytes": 2000})
        first = start_cli("run", str(job), "--no-progress")
        slow.wait_until_reached()  # the check before reading: the CLI is up
        time.sleep(1.0)  # requests are in flight, each answered only after 4 s
        first.send_signal(signal.SIGINT)
        time.sleep(0.3)
        stopped = time.monotonic()
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
        assert time.monotonic() - stopped < 3.5  # did not wait for the 4 s answers
    assert first.returncode == 130
    interrupted = read_report(tmp_path)
    assert_report_adds_up(interrupted)
    assert interrupted["rows_pending"] > 0
    fast_dir = tmp_path / "fast"
    fast_dir.mkdir()
    with start_sandbox(fast_dir) as fast:
        job = users_job(tmp_path, fast.url, source, delivery={"max_batch_bytes": 2000})
        again = run_cli("run", str(job), "--no-progress")
        recorded = {r["customer_id"] for r in fast.records()} | {
            r["customer_id"] for r in slow.records()
        }
    assert again.returncode == 0, again.stderr
    assert recorded == user_ids(400)


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_first_interrupt_leaves_unanswered_rows_pending_not_failed(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 200)
    with start_sandbox(tmp_path, "--latency-ms", "4000") as slow:
        job = users_job(
            tmp_path,
            slow.url,
            source,
            delivery={"max_batch_bytes": 2000, "timeout_seconds": 1, "max_attempts": 6},
        )
        first = start_cli("run", str(job), "--no-progress")
        slow.wait_until_reached()  # the check before reading: the CLI is up
        time.sleep(1.5)  # the first attempts have timed out; retries are due
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert first.returncode == 130
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_failed"] == 0 and report["rows_pending"] == 200
    assert read_dead_letters(tmp_path) == []


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_replay_keeps_malformed_and_oversized_lines_as_validation_rows(tmp_path: Path) -> None:
    big = {"type": "customer", "customer_id": "u9", "attributes": {"bio": "x" * 1500}}
    lines = [
        {"source": "a.csv", "row": 2, "stage": "validation", "error": "malformed record: x",
         "status": None, "customer_id": None, "record": {"_raw": "u2,,,"}, "payload": None},
        {"source": "a.csv", "row": 9, "stage": "rejected", "error": "413 too large",
         "status": 413, "customer_id": "u9", "record": {"user_id": "u9"}, "payload": big},
        {"source": "a.csv", "row": 11, "stage": "delivery", "error": "503 after 6 attempts",
         "status": 503, "customer_id": "u11", "record": {"user_id": "u11"},
         "payload": {"type": "customer", "customer_id": "u11", "attributes": {"first_name": "K"}}},
    ]  # fmt: skip
    dead = tmp_path / "dead.jsonl"
    dead.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with start_sandbox(tmp_path) as sandbox:
        job = users_job(
            tmp_path, sandbox.url, tmp_path / "a.csv", delivery={"max_batch_bytes": 1000}
        )
        result = run_cli("replay", str(job), str(dead), "--no-progress")
        recorded = [r["customer_id"] for r in sandbox.records()]
    assert result.returncode == 1, result.stderr
    assert recorded == ["u11"]
    out = [json.loads(x) for x in (tmp_path / "dead.replay.jsonl").read_text().splitlines()]
    assert [(d["row"], d["stage"]) for d in out] == [(2, "validation"), (9, "validation")]
    assert out[0]["record"] == {"_raw": "u2,,,"} and "malformed" in out[0]["error"]
    assert "one request holds at most" in out[1]["error"]
