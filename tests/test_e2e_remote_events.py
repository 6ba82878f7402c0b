"""An events job whose state is in object storage (moto's S3 server on loopback), killed
mid-run and resumed on another runner: no event lost, the ones sent twice at most what the
remote state could not know of, and every one of them counted in events_possibly_duplicated.

What MoEngage would hold is the sandbox's record of accepted elements, event by event."""

from __future__ import annotations

import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox_proc import SandboxProcess, start_sandbox
from tests.support import (
    assert_report_adds_up,
    bucket_json,
    job_dict,
    job_in_bucket,
    run_cli,
    saved_mid_run,
    start_cli,
)
from tests.test_e2e_events_once import MAPPING, arrivals_per_event, event_line, write_events

EVENTS = 2400


def remote_events_job(
    runner: Path, sandbox: SandboxProcess, source: Path, s3: Any, endpoint: str, **extra: Any
) -> Path:
    """The job as a runner has it: events, its outputs in the bucket, nothing kept locally."""
    output = extra.pop("output", None)
    job = {"import": "events", **job_dict(runner, sandbox.url, source, MAPPING, **extra)}
    return job_in_bucket(runner, job, s3.bucket, endpoint, "events", output=output)


def remote_json(s3: Any, name: str) -> dict[str, Any]:
    return bucket_json(s3, f"jobs/events/{name}")


def state_saved_mid_run(s3: Any) -> bool:
    return saved_mid_run(s3, "jobs/events/state.db")


def kill_mid_run(job: Path, sandbox: SandboxProcess, s3: Any, at_least: int) -> int:
    """Starts the run, SIGKILLs it once the state was saved mid-run and `at_least` events
    arrived; the events the sandbox had accepted by then."""
    first = start_cli("run", str(job), "--no-progress")
    deadline = time.monotonic() + 30
    while events_arrived(sandbox) < at_least or not state_saved_mid_run(s3):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    return events_arrived(sandbox)


def events_arrived(sandbox: SandboxProcess) -> int:
    return sum(arrivals_per_event(sandbox).values())


def resume_after_lease(job: Path, s3: Any) -> dict[str, Any]:
    """The same job on another runner once the dead one's lease expired: its report."""
    lease = remote_json(s3, "state.db.lease")
    time.sleep(max(0.0, float(lease["expires_at"]) - time.time()) + 0.5)
    again = run_cli("run", str(job), "--no-progress", cwd=job.parent)
    assert again.returncode == 0, again.stderr
    return remote_json(s3, "report.json")


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_an_events_run_killed_after_a_checkpoint_resumes_elsewhere(
    tmp_path: Path, s3: Any, s3_env: dict[str, str]
) -> None:
    rate, every = 200, 1.0
    source = write_events(tmp_path / "events.csv", [event_line(s) for s in range(EVENTS)])
    paced = {
        "rate_limit": {"updates": rate, "period_seconds": 1},
        "delivery": {"max_batch_bytes": 2000},
        "output": {"checkpoint_seconds": every},
    }
    endpoint = s3_env["AWS_ENDPOINT_URL"]
    with start_sandbox(tmp_path) as sandbox:
        runner_a = tmp_path / "runner-a"
        job_a = remote_events_job(runner_a, sandbox, source, s3, endpoint, **paced)
        before = kill_mid_run(job_a, sandbox, s3, at_least=800)
        assert before < EVENTS
        shutil.rmtree(runner_a)
        job_b = remote_events_job(tmp_path / "runner-b", sandbox, source, s3, endpoint, **paced)
        report = resume_after_lease(job_b, s3)
        sent = arrivals_per_event(sandbox)
    assert len(sent) == EVENTS  # every event delivered
    twice = count_twice(sent)
    # At most what was sent since the last saved copy: one interval, plus its upload.
    assert twice <= rate * (every + 0.5), twice
    # Counted: the events the state had in flight, and what the limiter lets through in the
    # longest a run sends without a saved copy (twice the interval here).
    assert twice <= report["events_possibly_duplicated"] <= 3 * rate * every + 100
    assert_report_adds_up(report)
    assert report["rows_skipped"] + report["rows_already_sent"] + report["rows_accepted"] == EVENTS
    assert report["rows_skipped"] + report["rows_already_sent"] >= before - twice
    counted = report["events_possibly_duplicated"]
    print(f"killed at {before} events; sent twice {twice}; counted {counted}")


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_checkpoint_zero_resends_only_what_was_in_flight_and_counts_it(
    tmp_path: Path, s3: Any, s3_env: dict[str, str]
) -> None:
    """checkpoint_seconds 0: a request goes only once the remote state holds its in-flight
    marks, so the next run knows every event that may have been sent twice."""
    source = write_events(tmp_path / "events.csv", [event_line(s) for s in range(EVENTS)])
    paced = {
        "rate_limit": {"updates": 300, "period_seconds": 1},
        "delivery": {"max_batch_bytes": 2000, "concurrency": 4},
        "output": {"checkpoint_seconds": 0},
    }
    endpoint = s3_env["AWS_ENDPOINT_URL"]
    with start_sandbox(tmp_path, "--latency-ms", "50") as sandbox:
        runner_a = tmp_path / "runner-a"
        job_a = remote_events_job(runner_a, sandbox, source, s3, endpoint, **paced)
        before = kill_mid_run(job_a, sandbox, s3, at_least=600)
        shutil.rmtree(runner_a)
        job_b = remote_events_job(tmp_path / "runner-b", sandbox, source, s3, endpoint, **paced)
        report = resume_after_lease(job_b, s3)
        sent = arrivals_per_event(sandbox)
        largest = max(arrival["events"] for arrival in sandbox.arrivals())
    assert len(sent) == EVENTS
    twice = count_twice(sent)
    assert twice <= 4 * largest, twice  # the requests in flight at the kill, at most
    # Counted one by one from the in-flight marks: no allowance on top.
    assert twice <= report["events_possibly_duplicated"] <= 4 * largest
    assert_report_adds_up(report)
    assert report["rows_skipped"] + report["rows_already_sent"] + report["rows_accepted"] == EVENTS
    print(f"killed at {before}; sent twice {twice}; counted {report['events_possibly_duplicated']}")


def count_twice(sent: Counter[tuple[str, int]]) -> int:
    return sum(count - 1 for count in sent.values())
