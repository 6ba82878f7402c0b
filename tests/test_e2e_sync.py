"""Incremental sync (sync.mode: changed): night after night only the rows that changed
are sent, against a snapshot of what the API last accepted per customer."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    ROOT,
    assert_report_adds_up,
    job_dict,
    read_dead_letters,
    read_report,
    run_cli,
    write_job,
)
from sandbox_proc import SandboxProcess, start_sandbox

MAPPING: dict[str, Any] = {
    "customer_id": "user_id",
    "attributes": {"first_name": "first_name", "points": {"column": "points", "type": "integer"}},
}
FAST = ("--rate", "1000000")
# Small requests (50 users), so one failed request does not take a night's rows with it.
SMALL = ("--rate", "1000", "--period", "0.05")


def _users(path: Path, users: dict[int, int]) -> Path:
    """A CSV of user i with `points` users[i], in the order given."""
    lines = ["user_id,first_name,points"]
    lines += [f"u{i:05d},name{i},{points}" for i, points in users.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _job(tmp_path: Path, url: str, mapping: dict[str, Any] | None = None, **sections: Any) -> Path:
    settings = job_dict(
        tmp_path, url, tmp_path / "unused.csv", mapping or MAPPING, sync={"mode": "changed"}
    )
    for name, values in sections.items():
        settings[name] = {**settings.get(name, {}), **values}
    return write_job(tmp_path, settings)


def _night(job: Path, source: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("run", str(job), "--input", str(source), "--no-progress", *args)


def _ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["customer_id"] for r in records]


NIGHT_1 = {i: i for i in range(1, 3001)}
CHANGED = set(range(100, 3000, 19)[:150])
REMOVED = set(range(1, 31))
NEW = set(range(3001, 3051))


def _night_2() -> dict[int, int]:
    users = {i: (p + 1000 if i in CHANGED else p) for i, p in NIGHT_1.items() if i not in REMOVED}
    return users | {i: i for i in NEW}


def test_night_two_sends_only_what_changed(tmp_path: Path) -> None:
    night_1 = _users(tmp_path / "export-1" / "users.csv", NIGHT_1)
    night_2 = _users(tmp_path / "export-2" / "users.csv", _night_2())
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = _job(tmp_path, sandbox.url)
        first = _night(job, night_1)
        assert first.returncode == 0, first.stderr
        assert len(sandbox.records()) == 3000
        assert read_report(tmp_path)["rows_unchanged"] == 0
        second = _night(job, night_2)
        assert second.returncode == 0, second.stderr
        sent = _ids(sandbox.records()[3000:])
    expected = {f"u{i:05d}" for i in CHANGED | NEW}
    assert sorted(sent) == sorted(expected)  # exactly those 200, each once
    report = read_report(tmp_path)
    assert report["rows_read"] == 3020
    assert report["rows_accepted"] == 200
    assert report["rows_unchanged"] == 2820
    assert report["customers_absent"] == 30
    assert not any("snapshot" in w for w in report["warnings"]), report["warnings"]
    assert_report_adds_up(report)
    assert "unchanged" in second.stdout
