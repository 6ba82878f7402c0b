"""Resume skips rows only of content that is provably unchanged: an edit anywhere (even one
keeping the size) is sent again, an appended file resumes after its old end."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from importer.sources.content import legacy_fingerprint
from tests.sandbox_proc import start_sandbox
from tests.support import (
    USERS_MAPPING,
    job_dict,
    read_report,
    run_cli,
    start_cli,
    users_csv,
    users_job,
    write_job,
)

UNPACED = {"updates": 1_000_000, "period_seconds": 60}
FILLER = "f" * 1000  # rows of ~1 KB: the settled part reaches past the first MiB


def _wide_users(folder: Path, count: int) -> Path:
    lines = ["user_id,first_name,points,filler"]
    lines += [f"u{i:05d},name{i:05d},{i},{FILLER}" for i in range(1, count + 1)]
    source = folder / "users.csv"
    source.write_text("\n".join(lines) + "\n")
    return source


def _folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder


@pytest.mark.slow
def test_a_same_size_edit_in_the_settled_middle_is_sent_on_resume(tmp_path: Path) -> None:
    source = _wide_users(tmp_path, 4000)
    delivery = {"max_batch_bytes": 1500, "concurrency": 8, "timeout_seconds": 5}
    sandbox_args = ("--rate", "1000000", "--latency-ms", "200")
    with start_sandbox(_folder(tmp_path, "sandbox"), *sandbox_args) as sandbox:
        job = users_job(tmp_path, sandbox.url, source, rate_limit=UNPACED, delivery=delivery)
        run = start_cli("run", str(job), "--no-progress")
        deadline = time.monotonic() + 60
        while len(sandbox.records()) < 2500:
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.02)
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=30)
        assert run.returncode == 130, stderr
        assert read_report(tmp_path)["rows_pending"] > 0
        first = len(sandbox.records())
        # Row 1200 was accepted, lies past the first MiB, and in no block the old
        # fingerprint sampled: the same-size edit leaves that fingerprint as it was.
        assert "u01200" in {r["customer_id"] for r in sandbox.records()}
        before = legacy_fingerprint(source)
        text = source.read_text()
        source.write_text(text.replace("u01200,name01200,", "u01200,NAME01200,"))
        assert legacy_fingerprint(source) == before and len(source.read_text()) == len(text)
        again = run_cli("run", str(job), "--no-progress")
        received = {r["customer_id"]: r for r in sandbox.records()[first:]}
    assert again.returncode == 0, again.stderr
    assert "changed since the last run" in again.stderr
    assert received["u01200"]["attributes"]["first_name"] == "NAME01200"
    assert read_report(tmp_path)["rows_skipped"] == 0


@pytest.mark.slow
def test_an_appended_users_file_resumes_after_its_old_end(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 100)
    with start_sandbox(_folder(tmp_path, "sandbox"), "--latency-ms", "0") as sandbox:
        job = users_job(tmp_path, sandbox.url, source)
        assert run_cli("run", str(job), "--no-progress").returncode == 0
        assert len(sandbox.records()) == 100
        with source.open("a") as handle:
            handle.writelines(f"u{i:05d},name{i},{i}\n" for i in range(101, 121))
        again = run_cli("run", str(job), "--no-progress")
        sent = sorted(r["customer_id"] for r in sandbox.records()[100:])
    assert again.returncode == 0, again.stderr
    assert sent == [f"u{i:05d}" for i in range(101, 121)]
    report = read_report(tmp_path)
    assert report["rows_skipped"] == 100 and report["rows_accepted"] == 20


EVENTS: dict[str, Any] = {
    "customer_id": "user_id",
    "event": {"action": {"column": "event_name"}, "time": {"column": "occurred_at"}},
}


@pytest.mark.slow
def test_an_appended_events_file_resumes_after_its_old_end(tmp_path: Path) -> None:
    source = tmp_path / "events.csv"
    rows = [f"u{i:04d},Viewed,2024-03-01T10:00:00Z" for i in range(1, 51)]
    source.write_text("user_id,event_name,occurred_at\n" + "\n".join(rows) + "\n")
    with start_sandbox(_folder(tmp_path, "sandbox"), "--latency-ms", "0") as sandbox:
        settings = job_dict(tmp_path, sandbox.url, source, EVENTS)
        job = write_job(tmp_path, {"import": "events", **settings})
        assert run_cli("run", str(job), "--no-progress").returncode == 0
        assert len(sandbox.records()) == 50
        with source.open("a") as handle:
            handle.write("u0051,Bought,2024-03-01T11:00:00Z\nu0052,Bought,2024-03-01T11:00:00Z\n")
        again = run_cli("run", str(job), "--no-progress")
        sent = sorted(r["customer_id"] for r in sandbox.records())
    assert again.returncode == 0, again.stderr
    # Each earlier event arrived once, in the first run; the second sent only the new two.
    assert sent == [f"u{i:04d}" for i in range(1, 53)]
    assert read_report(tmp_path)["rows_skipped"] == 50


def test_an_edit_keeping_the_size_changes_the_fingerprint(tmp_path: Path) -> None:
    from importer.sources import fingerprint

    source = _wide_users(tmp_path, 4000)
    before = fingerprint(source)
    source.write_text(source.read_text().replace("name02000", "NAME02000"))
    assert fingerprint(source) != before
    assert USERS_MAPPING  # the mapping the wide file is read with
