"""Our own files: a failing write stops the run cleanly (exit 3), symlinks are refused, the
report holds no personal data."""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox_proc import start_sandbox
from tests.support import (
    ROOT,
    assert_each_sent_and_few_twice,
    assert_report_adds_up,
    job_dict,
    read_report,
    run_cli,
    start_cli,
    user_id,
    user_ids,
    users_csv,
    write_job,
)

ATTRIBUTES: dict[str, Any] = {
    "first_name": "first_name",
    "points": {"column": "points", "type": "integer"},
}
MAPPING: dict[str, Any] = {"customer_id": "user_id", "attributes": ATTRIBUTES}


def _job(tmp_path: Path, url: str, source: Path, **sections: Any) -> Path:
    return write_job(tmp_path, job_dict(tmp_path, url, source, MAPPING, **sections))


def _limited_file_size(limit: int) -> Any:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _run_limited(job: Path, limit: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "importer", "run", str(job), "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limited_file_size(limit),
    )


def _assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr


def _dead_letter_lines(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "out" / "dead_letter.jsonl"
    data = path.read_bytes() if path.exists() else b""
    assert not data or data.endswith(b"\n"), "a torn last line"
    return [json.loads(line) for line in data.splitlines()]  # every line whole


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.parametrize("full", ["state", "dead_letter"])
def test_a_full_disk_stops_the_run_at_once_and_a_rerun_resends_little(
    tmp_path: Path, full: str
) -> None:
    rows = 20_000
    # With bad rows the dead-letter file fills first; without, the state database does.
    source = users_csv(tmp_path, rows, long_bad_points_every=10 if full == "dead_letter" else 0)
    with start_sandbox(tmp_path, "--rate", "1000000") as sandbox:
        job = _job(
            tmp_path,
            sandbox.url,
            source,
            rate_limit={"updates": 1_000_000, "period_seconds": 60},
            delivery={"max_batch_bytes": 4000, "concurrency": 4},
        )
        started = time.monotonic()
        first = _run_limited(job, 300_000)
        took = time.monotonic() - started
        _assert_no_traceback(first)
        assert first.returncode == 3, first.stderr
        assert took < 20
        report = read_report(tmp_path)
        assert_report_adds_up(report)
        assert report["exit_code"] == 3 and report["rows_pending"] > 0
        assert any(word in report["aborted"] for word in ("too large", "full", "disk I/O"))
        letters = _dead_letter_lines(tmp_path)
        assert report["rows_invalid"] == len(letters)
        sent_first = Counter(r["customer_id"] for r in sandbox.records())
        assert report["rows_accepted"] == sum(sent_first.values())

        again = run_cli("run", str(job), "--no-progress")
        assert again.returncode == (1 if full == "dead_letter" else 0), again.stderr
        sent = Counter(r["customer_id"] for r in sandbox.records())
    valid = {user_id(i) for i in range(1, rows + 1) if full == "state" or i % 10}
    assert_each_sent_and_few_twice(sent, valid)


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_a_state_database_locked_by_another_process_stops_the_run_within_seconds(
    tmp_path: Path,
) -> None:
    rows = 20_000
    source = users_csv(tmp_path, rows)
    state_path = tmp_path / "out" / "state.db"
    with start_sandbox(tmp_path, "--rate", "1000000") as sandbox:
        job = _job(
            tmp_path,
            sandbox.url,
            source,
            rate_limit={"updates": 4000, "period_seconds": 1},
            delivery={"max_batch_bytes": 4000, "concurrency": 4},
        )
        run = start_cli("run", str(job), "--no-progress")
        deadline = time.monotonic() + 30
        while len(sandbox.records()) < 2000:
            assert time.monotonic() < deadline and run.poll() is None, "the run did not start"
            time.sleep(0.05)
        holder = sqlite3.connect(state_path, timeout=10, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        locked_at = time.monotonic()
        try:
            _, stderr = run.communicate(timeout=30)
            took = time.monotonic() - locked_at
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert "Traceback" not in stderr, stderr
        assert run.returncode == 3, stderr
        assert took < 10, f"took {took:.1f} s to stop"
        assert "locked" in stderr
        report = read_report(tmp_path)
        assert_report_adds_up(report)
        assert report["exit_code"] == 3 and report["rows_pending"] > 0

        again = run_cli("run", str(job), "--no-progress")
        assert again.returncode == 0, again.stderr
        sent = Counter(r["customer_id"] for r in sandbox.records())
    assert_each_sent_and_few_twice(sent, user_ids(rows))


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_a_state_database_locked_from_the_start_is_exit_3_with_a_report(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 50)
    state_path = tmp_path / "out" / "state.db"
    with start_sandbox(tmp_path) as sandbox:
        job = _job(tmp_path, sandbox.url, source)
        assert run_cli("run", str(job), "--no-progress", "--fresh").returncode == 0
        holder = sqlite3.connect(state_path, timeout=10, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            result = run_cli("run", str(job), "--no-progress", "--fresh")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    _assert_no_traceback(result)
    assert result.returncode == 3, result.stderr
    assert "locked" in read_report(tmp_path)["aborted"]


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize("output", ["dead_letter", "report", "report_tmp", "state", "lock"])
def test_no_output_is_written_through_a_symlink(tmp_path: Path, output: str) -> None:
    source = users_csv(tmp_path, 20, long_bad_points_every=5)
    out = tmp_path / "out"
    out.mkdir()
    paths = {
        "dead_letter": out / "dead_letter.jsonl",
        "report": out / "report.json",
        "report_tmp": out / "report.json.tmp",
        "state": out / "state.db",
        "lock": out / "state.db.lock",
    }
    target = tmp_path / "elsewhere" / "precious.txt"
    target.parent.mkdir()
    target.write_text("keep me\n")
    paths[output].symlink_to(target)
    with start_sandbox(tmp_path) as sandbox:
        job = _job(tmp_path, sandbox.url, source)
        result = run_cli("run", str(job), "--no-progress")
        assert sandbox.stats()["requests"] == 0  # refused before anything was sent
    _assert_no_traceback(result)
    assert result.returncode == 2, result.stderr
    assert str(paths[output]) in result.stderr and "symbolic link" in result.stderr
    assert target.read_text() == "keep me\n"


@pytest.mark.subprocess
def test_report_holds_no_cell_value_however_many_distinct_bad_values(tmp_path: Path) -> None:
    rows = 20_000
    source = tmp_path / "users.csv"
    lines = ["user_id,first_name,points,tags"]
    for i in range(1, rows + 1):
        # Each bad value distinct: an email in an array item, a word in a number column.
        lines.append(f"u{i:05d},name{i},secret{i}x,a|person{i}@example.com{'y' * 600}")
    source.write_text("\n".join(lines) + "\n")
    mapping = {
        **MAPPING,
        "attributes": {
            **ATTRIBUTES,
            "tags": {"column": "tags", "type": "array", "separator": "|"},
        },
    }
    job = write_job(tmp_path, job_dict(tmp_path, "http://127.0.0.1:9", source, mapping))
    for log_format in ("text", "json"):
        result = run_cli("validate", str(job), "--log-format", log_format)
        assert result.returncode == 1, result.stderr
        report_path = tmp_path / "out" / "report.dry-run.json"
        assert stat.S_IMODE(report_path.stat().st_mode) == 0o600
        text = report_path.read_text()
        assert len(text) < 5000, len(text)
        reasons = read_report(tmp_path, dry_run=True)["invalid_reasons"]
        assert len(reasons) <= 3, reasons
        for output in (text, result.stderr, result.stdout):
            assert "secret" not in output and "@example.com" not in output
    assert read_report(tmp_path, dry_run=True)["rows_invalid"] == rows


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_dead_letter_file_mode_and_lines_name_their_run(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 30, long_bad_points_every=3)
    with start_sandbox(tmp_path) as sandbox:
        job = _job(tmp_path, sandbox.url, source)
        result = run_cli("run", str(job), "--no-progress")
    assert result.returncode == 1, result.stderr
    report = read_report(tmp_path)
    assert report["run_id"] and len(report["run_id"]) == len("20261129T034512Z-3f9a1c")
    letters = _dead_letter_lines(tmp_path)
    assert len(letters) == 10
    assert {d["run_id"] for d in letters} == {report["run_id"]}
    assert len({d["fingerprint"] for d in letters}) == 1 and letters[0]["fingerprint"]
    mode = stat.S_IMODE((tmp_path / "out" / "dead_letter.jsonl").stat().st_mode)
    assert mode == 0o600
    assert os.stat(tmp_path / "out" / "report.json").st_mode & 0o077 == 0
