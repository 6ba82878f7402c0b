"""`replay` in-process: which dead-letter lines go again and how (payload as sent, or the
record re-mapped), what it skips, and that its own progress makes a second try a no-op."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from importer.api import RunOptions, RunOutcome, execute
from importer.config import JobConfig, load_job
from importer.outputs.deadletter import DeadLetterError
from importer.run.replay import replay_dead_letter
from tests.sandbox_proc import start_sandbox
from tests.support import USERS_MAPPING, job_dict, users_csv, write_job

FAST = ("--latency-ms", "0")
QUIET = RunOptions(progress=False)
# One row a request, a few at a time: a customer the sandbox always fails then fails on
# its own while the others are answered (a whole run failing would read as an outage).
ONE_BY_ONE: dict[str, Any] = {
    "api": {"endpoint": "customer"},
    "delivery": {"max_attempts": 3, "concurrency": 3, "backoff_base_seconds": 0.01},
}


def run_job(job: JobConfig, options: RunOptions) -> RunOutcome:
    """The job's own run, as the CLI makes it."""
    return execute(job, options, job_name="job")


def _failing(customers: str) -> tuple[str, ...]:
    return ("--fail-customer-ids", customers, "--latency-ms", "50")


def _job(
    tmp_path: Path, url: str, source: Path, mapping: dict[str, Any], **sections: Any
) -> JobConfig:
    settings = job_dict(tmp_path, url, source, mapping, **sections)
    return load_job(write_job(tmp_path, settings))


def _folder(tmp_path: Path, name: str) -> Path:
    """Where one sandbox keeps its record: one per night, so each counts only its own."""
    folder = tmp_path / name
    folder.mkdir()
    return folder


def _letters(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _lenient_points() -> dict[str, Any]:
    """The mapping fixed after the first run: points as text, so `x5` is valid."""
    return {**USERS_MAPPING, "attributes": {**USERS_MAPPING["attributes"], "points": "points"}}


@pytest.mark.sandbox
def test_replay_resends_failed_payloads_and_remaps_invalid_records(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 60, bad_points=(5, 6))
    dead_letter = tmp_path / "out" / "dead_letter.jsonl"
    with start_sandbox(_folder(tmp_path, "night"), *_failing("^u000(12|40)$")) as down:
        first = run_job(_job(tmp_path, down.url, source, USERS_MAPPING, **ONE_BY_ONE), QUIET)
        assert {r["customer_id"] for r in down.records()}.isdisjoint({"u00005", "u00040"})
    assert first.report.rows_invalid == 2 and first.report.rows_failed == 2
    stages = {letter["customer_id"]: letter["stage"] for letter in _letters(dead_letter)}
    assert stages == {
        "u00005": "validation",
        "u00006": "validation",
        "u00012": "delivery",
        "u00040": "delivery",
    }

    kept = tmp_path / "night-1.jsonl"
    kept.write_bytes(dead_letter.read_bytes())
    with start_sandbox(_folder(tmp_path, "replay"), *FAST) as up:
        job = _job(tmp_path, up.url, source, _lenient_points())
        replayed = replay_dead_letter(job, kept, QUIET)
        records = {r["customer_id"]: r["attributes"] for r in up.records()}
    assert replayed.report.exit_code == 0
    assert replayed.report.rows_accepted == 4
    # Delivery failures go as they were built (points an integer); invalid rows are
    # re-mapped with today's mapping (points now text).
    assert records["u00040"]["points"] == 40
    assert records["u00005"]["points"] == "x5"
    assert set(records) == {"u00005", "u00006", "u00012", "u00040"}


@pytest.mark.sandbox
def test_a_second_replay_of_the_same_file_sends_nothing(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 30, bad_points=(2, 9, 17))
    with start_sandbox(_folder(tmp_path, "night"), *FAST) as night:
        run_job(_job(tmp_path, night.url, source, USERS_MAPPING), QUIET)
    kept = tmp_path / "night-1.jsonl"
    kept.write_bytes((tmp_path / "out" / "dead_letter.jsonl").read_bytes())
    with start_sandbox(_folder(tmp_path, "replay"), *FAST) as up:
        job = _job(tmp_path, up.url, source, _lenient_points())
        first = replay_dead_letter(job, kept, QUIET)
        second = replay_dead_letter(job, kept, QUIET)
        sent = [r["customer_id"] for r in up.records()]
    assert first.report.rows_accepted == 3
    assert second.report.rows_accepted == 0 and second.report.rows_skipped == 3
    assert sorted(sent) == ["u00002", "u00009", "u00017"]  # each once


@pytest.mark.sandbox
def test_lines_a_later_run_accepted_are_skipped(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 20)
    with start_sandbox(_folder(tmp_path, "night"), *_failing("^u0000[34]$")) as down:
        run_job(_job(tmp_path, down.url, source, USERS_MAPPING, **ONE_BY_ONE), QUIET)
    kept = tmp_path / "night-1.jsonl"
    kept.write_bytes((tmp_path / "out" / "dead_letter.jsonl").read_bytes())
    assert len(_letters(kept)) == 2
    # The same address as the night's API: progress belongs to one target.
    port = down.url.rsplit(":", 1)[1]
    with start_sandbox(_folder(tmp_path, "rerun"), *FAST, "--port", port) as up:
        job = _job(tmp_path, up.url, source, USERS_MAPPING, **ONE_BY_ONE)
        rerun = run_job(job, QUIET)  # the job's own rerun resends its delivery failures
        assert rerun.report.rows_accepted == 2
        replayed = replay_dead_letter(job, kept, QUIET)
        sent = [r["customer_id"] for r in up.records()]
    assert replayed.report.rows_accepted == 0 and replayed.report.rows_skipped == 2
    assert sorted(sent) == ["u00003", "u00004"]


def test_replay_refuses_to_write_over_its_own_input(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 5)
    job = _job(tmp_path, "http://127.0.0.1:9", source, USERS_MAPPING)
    job.output.dead_letter.parent.mkdir(parents=True, exist_ok=True)
    job.output.dead_letter.write_text("")
    with pytest.raises(DeadLetterError, match="overwrite its input"):
        replay_dead_letter(job, job.output.dead_letter, QUIET)


@pytest.mark.sandbox
def test_a_line_written_twice_is_sent_once(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 10, bad_points=(4,))
    with start_sandbox(_folder(tmp_path, "night"), *FAST) as night:
        run_job(_job(tmp_path, night.url, source, USERS_MAPPING), QUIET)
    line = (tmp_path / "out" / "dead_letter.jsonl").read_text()
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_text(line + line)  # a crash between the line and the progress save
    with start_sandbox(_folder(tmp_path, "replay"), *FAST) as up:
        replayed = replay_dead_letter(
            _job(tmp_path, up.url, source, _lenient_points()), doubled, QUIET
        )
        sent = [r["customer_id"] for r in up.records()]
    assert replayed.report.rows_accepted == 1 and sent == ["u00004"]
