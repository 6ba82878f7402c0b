"""End to end: the CLI against the sandbox; what it recorded, the dead-letter file, the report."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox_proc import start_sandbox
from tests.support import (
    assert_report_adds_up,
    job_dict,
    read_dead_letters,
    read_report,
    run_cli,
    write_job,
)

CSV = """user_id,first_name,points,is_super,signup,birthday,interests,country,platform,note
00123,Ada,20,true,2024-01-31T10:00:00+02:00,1990-05-01,a|b,NA,ANDROID,
00124,Bob,,no,2024-02-01 08:30:00,,x,DE,ios,null
00125,,7,1,,1985-12-24,,FR,web,"hello, world"
guest,Eve,1,true,,,,,,
00127,Mallory,2.5,maybe,31/31/2024,,,,Windows,
00128,Trent,3,F,2024-03-01,2000-01-01,p|q|r,US,,ok
"""

MAPPING = {
    "customer_id": "user_id",
    "attributes": {
        "first_name": "first_name",
        "points": {"column": "points", "type": "integer"},
        "super_user": {"column": "is_super", "type": "boolean"},
        "signup_at": {"column": "signup", "type": "datetime"},
        "birthday": {"column": "birthday", "type": "date"},
        "interests": {"column": "interests", "type": "array", "separator": "|"},
        "country": "country",
        "note": "note",
    },
    "platforms": {"column": "platform"},
}


def _import(tmp_path: Path, *sandbox_args: str, extra: tuple[str, ...] = ()) -> tuple[Any, ...]:
    source = tmp_path / "users.csv"
    source.write_text(CSV)
    with start_sandbox(tmp_path, *sandbox_args) as sandbox:
        job = write_job(tmp_path, job_dict(tmp_path, sandbox.url, source, MAPPING))
        result = run_cli("run", str(job), "--no-progress", *extra)
        records = sandbox.records()
    return result, records


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_import_sends_typed_values_and_dead_letters_bad_rows(tmp_path: Path) -> None:
    result, records = _import(tmp_path)
    assert result.returncode == 1, result.stderr  # two rows are dead-lettered
    by_id = {r["customer_id"]: r["attributes"] for r in records}
    assert set(by_id) == {"00123", "00124", "00125", "00128"}

    assert by_id["00123"] == {
        "first_name": "Ada",
        "points": 20,
        "super_user": True,
        "signup_at": "2024-01-31T08:00:00Z",  # offset converted to UTC
        "birthday": "1990-05-01T00:00:00Z",  # MoEngage stores date-times
        "interests": ["a", "b"],
        "country": "NA",  # Namibia, not a missing value
        "platforms": [{"platform": "ANDROID", "active": "true"}],
    }
    assert isinstance(by_id["00123"]["points"], int)
    # Empty cells are omitted; "null" is text; naive datetimes are read as UTC.
    assert by_id["00124"] == {
        "first_name": "Bob",
        "super_user": False,
        "signup_at": "2024-02-01T08:30:00Z",
        "interests": ["x"],
        "country": "DE",
        "note": "null",
        "platforms": [{"platform": "iOS", "active": "true"}],
    }
    assert by_id["00125"]["note"] == "hello, world"
    assert "first_name" not in by_id["00125"]
    assert by_id["00128"]["super_user"] is False
    for attributes in by_id.values():
        for value in attributes.values():
            assert value not in (None, "", "nan", "NaN")

    letters = read_dead_letters(tmp_path)
    assert [(d["row"], d["stage"]) for d in letters] == [(4, "validation"), (5, "validation")]
    guest, mallory = letters
    assert "customer_id" in guest["error"] and "guest" in guest["error"]
    assert guest["record"]["user_id"] == "guest"
    for fragment in ("points", "2.5", "integer", "maybe", "boolean", "31/31/2024", "Windows"):
        assert fragment in mallory["error"], mallory["error"]
    assert mallory["customer_id"] == "00127"
    assert mallory["status"] is None
    mode = stat.S_IMODE((tmp_path / "out" / "dead_letter.jsonl").stat().st_mode)
    assert mode == 0o600

    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_read"] == 6
    assert report["rows_accepted"] == 4
    assert report["rows_invalid"] == 2
    assert report["exit_code"] == 1
    assert report["requests"] >= 1


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_rerun_skips_settled_rows(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    source.write_text(CSV)
    with start_sandbox(tmp_path) as sandbox:
        job = write_job(tmp_path, job_dict(tmp_path, sandbox.url, source, MAPPING))
        first = run_cli("run", str(job), "--no-progress")
        assert first.returncode == 1
        sent = len(sandbox.records())
        again = run_cli("run", str(job), "--no-progress")
        assert len(sandbox.records()) == sent  # nothing re-sent
    report = read_report(tmp_path)
    # Still 1: the earlier run's dead-lettered rows still want someone's attention.
    assert again.returncode == 1, again.stderr
    assert report["rows_skipped"] == 6 and report["rows_read"] == 6
    assert report["rows_skipped_dead_lettered"] == 2 and report["rows_invalid"] == 0
    assert "2 of them dead-lettered" in again.stdout
    assert len(read_dead_letters(tmp_path)) == 2  # the earlier dead letters are kept


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_bad_credentials_abort_with_exit_3_and_nothing_dead_lettered(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    source.write_text(CSV)
    with start_sandbox(tmp_path, "--api-key", "another-key") as sandbox:
        job = write_job(tmp_path, job_dict(tmp_path, sandbox.url, source, MAPPING))
        result = run_cli("run", str(job), "--no-progress")
        assert sandbox.records() == []
    assert result.returncode == 3, result.stderr
    assert "401" in result.stderr or "credentials" in result.stderr
    assert "sandbox-key" not in result.stderr + result.stdout
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    # The credential check refuses the key before the input is read.
    assert report["rows_read"] == 0 and report["requests"] == 0
    assert read_dead_letters(tmp_path) == []


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_dry_run_sends_nothing(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    source.write_text(CSV)
    with start_sandbox(tmp_path) as sandbox:
        job = write_job(tmp_path, job_dict(tmp_path, sandbox.url, source, MAPPING))
        result = run_cli("validate", str(job))
        assert sandbox.stats()["requests"] == 0
    assert result.returncode == 1, result.stderr
    report = read_report(tmp_path, dry_run=True)
    assert_report_adds_up(report)
    assert report["rows_pending"] == 4 and report["rows_invalid"] == 2
    assert report["requests"] == 0 and report["requests_planned"] == 1
    assert "sample of 3 built elements" in result.stdout
    assert "is not an integer" in result.stdout
