"""Saved progress: keyed by target and mapping, refused when unusable, transient failures
resent by a rerun, replay skipping what a later run accepted, Ctrl-C stopping the sending."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.sandbox_proc import start_sandbox
from tests.support import (
    USERS_MAPPING,
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
FAST = ("--rate", "1000000")


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_progress_from_a_rehearsal_does_not_apply_to_another_target(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 1000)
    (tmp_path / "rehearsal").mkdir()
    with start_sandbox(tmp_path / "rehearsal", *FAST) as rehearsal:
        job = users_job(tmp_path, rehearsal.url, source)
        first = run_cli("run", str(job), "--no-progress")
        assert first.returncode == 0, first.stderr
        assert len(rehearsal.records()) == 1000
    (tmp_path / "real").mkdir()
    with start_sandbox(tmp_path / "real", *FAST, "--workspace-id", "REAL") as real:
        settings = job_dict(tmp_path, real.url, source, MAPPING)
        settings["api"]["workspace_id"] = "REAL"
        job = write_job(tmp_path, settings)
        again = run_cli("run", str(job), "--no-progress")
        sent = [r["customer_id"] for r in real.records()]
        report = read_report(tmp_path)
        # Once this target has progress of its own, the rehearsal's is no news: no warning
        # that every row would be sent while every row is skipped.
        third = run_cli("run", str(job), "--no-progress")
        assert len(real.records()) == 1000
    assert again.returncode == 0, again.stderr
    assert sorted(sent) == sorted(user_ids(1000))  # every row, once
    said = [line for line in again.stderr.splitlines() if "another target or mapping" in line]
    assert len(said) == 1, again.stderr
    assert report["rows_skipped"] == 0 and report["rows_accepted"] == 1000
    assert third.returncode == 0, third.stderr
    assert "another target or mapping" not in third.stderr, third.stderr
    assert read_report(tmp_path)["rows_skipped"] == 1000


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_a_changed_mapping_does_not_reuse_progress(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 100)
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = users_job(tmp_path, sandbox.url, source)
        assert run_cli("run", str(job), "--no-progress").returncode == 0
        settings = job_dict(
            tmp_path, sandbox.url, source, {**MAPPING, "attributes": {"n": "first_name"}}
        )
        write_job(tmp_path, settings)
        again = run_cli("run", str(job), "--no-progress")
        assert again.returncode == 0, again.stderr
        assert len(sandbox.records()) == 200


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize(
    "content", [b"", b"not a database at all\n", b"SQLite format 3\x00" + b"\x00" * 100]
)
def test_a_state_file_that_is_not_a_state_database_is_refused_until_fresh(
    tmp_path: Path, content: bytes
) -> None:
    source = users_csv(tmp_path, 50)
    state = tmp_path / "out" / "state.db"
    state.parent.mkdir()
    state.write_bytes(content)
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = users_job(tmp_path, sandbox.url, source)
        refused = run_cli("run", str(job), "--no-progress")
        assert refused.returncode == 2, refused.stderr
        assert str(state) in refused.stderr and "--fresh" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert sandbox.stats()["requests"] == 0
        fresh = run_cli("run", str(job), "--no-progress", "--fresh")
        assert fresh.returncode == 0, fresh.stderr
        assert len(sandbox.records()) == 50
    assert list(state.parent.glob("state.db.unusable-*"))  # set aside, not destroyed


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_a_rerun_resends_delivery_failures_but_not_refused_rows_and_replay_skips_them(
    tmp_path: Path,
) -> None:
    source = users_csv(tmp_path, 600, bad_points=(7, 8))
    with start_sandbox(tmp_path, *FAST, "--fail-rate", "0.4", "--seed", "2") as flaky:
        port = str(urlparse(flaky.url).port)
        job = users_job(
            tmp_path,
            flaky.url,
            source,
            delivery={"max_batch_bytes": 1500, "max_attempts": 1},
        )
        first = run_cli("run", str(job), "--no-progress")
        accepted_first = {r["customer_id"] for r in flaky.records()}
    assert first.returncode == 1, first.stderr
    report = read_report(tmp_path)
    failed = report["rows_failed"]
    assert failed > 0 and report["rows_invalid"] == 2
    first_letters = read_dead_letters(tmp_path)
    assert {d["run_id"] for d in first_letters} == {report["run_id"]}
    delivery_rows = {d["row"] for d in first_letters if d["stage"] == "delivery"}
    assert len(delivery_rows) == failed

    (tmp_path / "healthy").mkdir()
    with start_sandbox(tmp_path / "healthy", *FAST, "--port", port) as healthy:
        assert healthy.url == flaky.url  # the same target: the progress applies
        again = run_cli("run", str(job), "--no-progress")
        resent = [r["customer_id"] for r in healthy.records()]
    # Exactly the rows that failed in delivery; the invalid ones stay settled.
    assert sorted(resent) == sorted(f"u{row:05d}" for row in delivery_rows)
    assert not set(resent) & accepted_first
    assert again.returncode == 1, again.stderr  # the invalid rows still want attention
    rerun = read_report(tmp_path)
    assert_report_adds_up(rerun)
    assert rerun["rows_accepted"] == failed and rerun["rows_skipped_dead_lettered"] == 2
    assert rerun["run_id"] > report["run_id"]  # time-sortable

    (tmp_path / "replay").mkdir()
    with start_sandbox(tmp_path / "replay", *FAST, "--port", port) as replayed:
        replay = run_cli(
            "replay", str(job), str(tmp_path / "out" / "dead_letter.jsonl"), "--no-progress"
        )
        sent_by_replay = [r["customer_id"] for r in replayed.records()]
    assert f"skipping {failed:,} dead-letter lines whose row a later run accepted" in replay.stderr
    assert sent_by_replay == []  # the two invalid rows are invalid still; nothing else to send
    assert replay.returncode == 1, replay.stderr


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_first_interrupt_stops_sending_within_a_second(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 3000)
    with start_sandbox(tmp_path, *FAST, "--latency-ms", "300") as sandbox:
        job = users_job(
            tmp_path,
            sandbox.url,
            source,
            # No pacing: waits inside the limiter are the sender's to cut short, not this test's.
            rate_limit={"updates": 1_000_000, "period_seconds": 60},
            delivery={"max_batch_bytes": 1500, "concurrency": 8, "timeout_seconds": 5},
        )
        run = start_cli("run", str(job), "--no-progress")
        deadline = time.monotonic() + 30
        while len(sandbox.records()) < 300:
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.02)
        interrupted_at = time.time()
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=30)
        time.sleep(0.5)
        arrivals = sandbox.arrivals()
    assert run.returncode == 130, stderr
    late = [a for a in arrivals if a["t"] > interrupted_at + 1.0]  # t: when it arrived
    assert late == [], f"{len(late)} requests arrived more than 1 s after the interrupt"
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_pending"] > 0 and report["rows_failed"] == 0
    assert report["rows_accepted"] == len(sandbox.records())
    assert Counter(r["customer_id"] for r in sandbox.records()).most_common(1)[0][1] == 1
