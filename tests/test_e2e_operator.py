"""The operator's view across several runs of one job (issue 16): outputs that never clobber
each other, a replay that finishes the job and resumes, progress that names the wait."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.sandbox_proc import start_sandbox
from tests.support import (
    assert_report_adds_up,
    job_dict,
    read_dead_letters,
    read_report,
    run_cli,
    start_cli,
    user_id,
    users_csv,
    write_job,
)

MAPPING = {"customer_id": "user_id", "attributes": {"first_name": "first_name"}}
FAST = ("--rate", "1000000")
# One user a request: refused rows never share a request with accepted ones, so the
# sandbox's refusals stay isolated (no splitting) whatever the pattern.
ONE_A_REQUEST = {"endpoint": "customer"}


def _job(tmp_path: Path, url: str, source: Path, **sections: Any) -> Path:
    return write_job(tmp_path, job_dict(tmp_path, url, source, MAPPING, **sections))


def _dead_letter(tmp_path: Path) -> Path:
    return tmp_path / "out" / "dead_letter.jsonl"


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_a_dry_run_writes_its_report_beside_the_real_one(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 50, points=False)
    with start_sandbox(tmp_path, *FAST, "--reject-customer-ids", "^u0000[12]$") as sandbox:
        job = _job(tmp_path, sandbox.url, source, api=ONE_A_REQUEST)
        real = run_cli("run", str(job), "--no-progress")
        assert real.returncode == 1, real.stderr
        before = read_report(tmp_path)
        assert before["rows_rejected"] == 2 and not before["dry_run"]
        validated = run_cli("validate", str(job), "--no-progress")
        dry = run_cli("run", str(job), "--dry-run", "--no-progress")
        assert sandbox.stats()["requests"] == 50  # the dry runs sent nothing
    assert validated.returncode == 0, validated.stderr
    assert dry.returncode == 0, dry.stderr
    assert read_report(tmp_path) == before  # the real run's counts survive
    dry_report = json.loads((tmp_path / "out" / "report.dry-run.json").read_text())
    assert dry_report["dry_run"] and dry_report["rows_read"] == 50
    assert dry_report["run_id"] != before["run_id"]


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_fresh_keeps_the_earlier_dead_letters_and_the_summary_says_where(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 30, points=False)
    with start_sandbox(tmp_path, *FAST, "--reject-customer-ids", "^u00003$") as sandbox:
        job = _job(tmp_path, sandbox.url, source, api=ONE_A_REQUEST)
        first = run_cli("run", str(job), "--no-progress")
        first_run = read_report(tmp_path)["run_id"]
        again = run_cli("run", str(job), "--no-progress", "--fresh")
    assert first.returncode == 1 and again.returncode == 1, again.stderr
    kept = tmp_path / "out" / f"dead_letter.{first_run}.jsonl"
    assert [json.loads(line)["run_id"] for line in kept.read_text().splitlines()] == [first_run]
    assert re.search(rf"earlier letters +{re.escape(str(kept))}", again.stdout), again.stdout
    assert read_report(tmp_path)["dead_letter_previous"] == str(kept)
    assert [d["row"] for d in read_dead_letters(tmp_path)] == [3]  # the new run's own line


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_a_replay_that_delivers_every_refused_row_finishes_the_job(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 200, points=False)
    with start_sandbox(tmp_path, *FAST, "--reject-customer-ids", "0$") as strict:
        port = str(urlparse(strict.url).port)
        job = _job(tmp_path, strict.url, source, api=ONE_A_REQUEST)
        first = run_cli("run", str(job), "--no-progress")
    assert first.returncode == 1, first.stderr
    refused = sorted(d["customer_id"] for d in read_dead_letters(tmp_path))
    assert refused == [user_id(i) for i in range(10, 201, 10)]

    (tmp_path / "healthy").mkdir()
    with start_sandbox(tmp_path / "healthy", *FAST, "--port", port) as healthy:
        replay = run_cli("replay", str(job), str(_dead_letter(tmp_path)), "--no-progress")
        delivered = [r["customer_id"] for r in healthy.records()]
        rerun = run_cli("run", str(job), "--no-progress")
        sent_by_rerun = len(healthy.records()) - len(delivered)
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.splitlines()[0] == "moe-import replay summary", replay.stdout
    assert sorted(delivered) == refused
    replay_report = json.loads((tmp_path / "out" / "dead_letter.replay.report.json").read_text())
    assert replay_report["rows_accepted"] == 20 and replay_report["replay_of"]

    # Nothing stands: no row is sent again, none counts as dead-lettered, exit 0.
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert sent_by_rerun == 0
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_skipped"] == 200 and report["rows_skipped_dead_lettered"] == 0
    assert "dead-lettered" not in rerun.stdout


def _wait_for(condition: Any, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_an_interrupted_replay_resumes_and_sends_only_the_rest(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 1200, points=False)
    with start_sandbox(tmp_path, *FAST, "--reject-customer-ids", "[02468]$") as strict:
        port = str(urlparse(strict.url).port)
        job = _job(tmp_path, strict.url, source, api=ONE_A_REQUEST)
        first = run_cli("run", str(job), "--no-progress")
    assert first.returncode == 1, first.stderr
    refused = {d["customer_id"] for d in read_dead_letters(tmp_path)}
    assert len(refused) == 600
    replay_args = ["replay", str(job), str(_dead_letter(tmp_path)), "--no-progress"]

    (tmp_path / "slow").mkdir()
    with start_sandbox(tmp_path / "slow", *FAST, "--port", port, "--latency-ms", "25") as slow:
        interrupted = start_cli(*replay_args, "--concurrency", "2")
        _wait_for(lambda: len(slow.records()) >= 150, interrupted)
        interrupted.send_signal(signal.SIGINT)
        _, stderr = interrupted.communicate(timeout=30)
        assert interrupted.returncode == 130, stderr
        sent_first = [r["customer_id"] for r in slow.records()]
        resumed = run_cli(*replay_args, "--concurrency", "8")
        sent_second = [r["customer_id"] for r in slow.records()][len(sent_first) :]
    assert 150 <= len(sent_first) < 600
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    # Every refused row delivered; the resumed replay sent only the rest (under 5% twice).
    assert set(sent_first) | set(sent_second) == refused
    twice = sum(n - 1 for n in Counter(sent_first + sent_second).values())
    assert twice < 0.05 * len(refused), twice
    assert len(sent_second) <= 600 - len(sent_first) + 0.05 * 600
    report = json.loads((tmp_path / "out" / "dead_letter.replay.report.json").read_text())
    assert_report_adds_up(report)
    assert report["rows_read"] == 600 and report["rows_accepted"] == len(sent_second)
    assert report["rows_skipped"] == 600 - len(sent_second)


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_progress_lines_name_the_429_wait_and_the_summary_times_it(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 600, points=False)
    # The workspace allows 40 a second; the job claims 600 a second: 429s, then a slower pace.
    with start_sandbox(tmp_path, "--rate", "40", "--period", "1") as sandbox:
        job = _job(
            tmp_path,
            sandbox.url,
            source,
            rate_limit={"updates": 36000, "period_seconds": 60},
            delivery={"max_batch_bytes": 1500},
        )
        run = run_cli("run", str(job), timeout=60)  # stderr is no terminal: timed log lines
        assert len(sandbox.records()) == 600
    assert run.returncode == 0, run.stderr
    report = read_report(tmp_path)
    assert report["http_429"] > 0
    lines = [line for line in run.stderr.splitlines() if "progress:" in line]
    waits = [line for line in lines if "waiting: 429" in line]
    assert waits, run.stderr
    assert re.search(
        r"of 600 rows settled, [\d,]+ rows/minute; about .+ left at this pace", waits[0]
    )
    assert report["wait_seconds"].get("http_429", 0) > 0, report["wait_seconds"]
    assert re.search(r"waited on +429s \d+ s", run.stdout), run.stdout


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_progress_lines_name_slow_answers(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 20, points=False)
    with start_sandbox(tmp_path, *FAST, "--latency-ms", "6500") as sandbox:
        job = _job(tmp_path, sandbox.url, source, delivery={"timeout_seconds": 20})
        run = run_cli("run", str(job), timeout=60)
        assert len(sandbox.records()) == 20
    assert run.returncode == 0, run.stderr
    # Nothing answered yet, so the line names the host it waits on, never the rate limit.
    waits = [line for line in run.stderr.splitlines() if "waiting: the first answer" in line]
    assert waits, run.stderr
    assert "from 127.0.0.1:" in waits[0] and "none accepted in" in waits[0]
    assert "of 20 rows settled" in waits[0]
    assert not [line for line in run.stderr.splitlines() if "waiting: the rate limit" in line]
    assert read_report(tmp_path)["wait_seconds"].get("slow_answers", 0) >= 1
