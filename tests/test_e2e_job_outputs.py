"""Each job's outputs are its own: per-job default paths, ownership marks, the old default
state carried over, output paths that would destroy something refused, dry runs that touch
nothing real, and a changed-mode run that says when it has no snapshot."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.sandbox_proc import start_sandbox
from tests.support import (
    ROOT,
    USERS_MAPPING,
    assert_report_adds_up,
    job_dict,
    run_cli,
    users_csv,
)

pytestmark = pytest.mark.sandbox

FAST = ("--rate", "1000000")


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI run from `tmp_path`, so default outputs land in `tmp_path/out/`."""
    return run_cli(*args, "--no-progress", cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})


def _job(tmp_path: Path, name: str, url: str, source: Path, **output: Any) -> Path:
    """A job file without `output:` (or with only what `output` says)."""
    job = job_dict(tmp_path, url, source, USERS_MAPPING)
    del job["output"]
    if output:
        job["output"] = output
    path = tmp_path / name
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def _report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _tree(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: its content hash and mtime (ns)."""
    return {
        str(path.relative_to(folder)): (
            hashlib.sha256(path.read_bytes()).hexdigest(),
            path.stat().st_mtime_ns,
        )
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_two_jobs_without_output_in_one_directory_never_share_a_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    source_a = users_csv(tmp_path / "a", 6, bad_points=(2,))
    source_b = users_csv(tmp_path / "b", 8, bad_points=(5, 7))
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job_a = _job(tmp_path, "a.yaml", sandbox.url, source_a)
        job_b = _job(tmp_path, "b.yaml", sandbox.url, source_b)
        first = _cli(tmp_path, "run", str(job_a))
        second = _cli(tmp_path, "run", str(job_b))
    assert first.returncode == 1, first.stderr
    assert second.returncode == 1, second.stderr
    out = tmp_path / "out"
    # Each job in its own folder; B renamed nothing of A's.
    assert sorted(p.name for p in (out / "a").iterdir() if not p.name.startswith(".")) == [
        "dead_letter.jsonl",
        "report.json",
        "state.db",
        "state.db.lock",
    ]
    assert not list(out.glob("*.jsonl")) and not (out / "report.json").exists()
    letters_a = _lines(out / "a" / "dead_letter.jsonl")
    letters_b = _lines(out / "b" / "dead_letter.jsonl")
    assert [(d["source"], d["row"]) for d in letters_a] == [(str(source_a), 2)]
    assert [(d["source"], d["row"]) for d in letters_b] == [(str(source_b), 5), (str(source_b), 7)]
    # A's summary and report point at A's rows, after B ran too.
    report_a = _report(out / "a" / "report.json")
    assert report_a["dead_letter"] == "out/a/dead_letter.jsonl"
    assert report_a["state"] == "out/a/state.db"
    assert (report_a["rows_accepted"], report_a["rows_invalid"]) == (5, 1)
    assert_report_adds_up(report_a)
    assert "out/a/dead_letter.jsonl" in first.stdout
    # Each output is marked as its job's (the job file's absolute path).
    mark = json.loads((out / "a" / ".dead_letter.jsonl.owner").read_text())
    assert mark["job"] == str(job_a.resolve())
    assert mark["target"]["workspace_id"] == "SANDBOX"
    assert json.loads((out / "b" / ".report.json.owner").read_text())["job"] == str(job_b.resolve())


def test_an_output_of_another_job_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 5)
    shared = {
        "dead_letter": str(tmp_path / "shared" / "dead_letter.jsonl"),
        "report": str(tmp_path / "shared" / "report.json"),
    }
    with start_sandbox(tmp_path, *FAST) as sandbox:
        users = _job(tmp_path, "users.yaml", sandbox.url, source, **shared)
        assert _cli(tmp_path, "run", str(users)).returncode == 0
        before = len(sandbox.arrivals())
        # A copied job file writing the same outputs: another job.
        profiles = tmp_path / "profiles.yaml"
        shutil.copy(users, profiles)
        refused = _cli(tmp_path, "run", str(profiles))
        after = len(sandbox.arrivals())
        # The first job still runs: the files are its own.
        again = _cli(tmp_path, "run", str(users))
    assert refused.returncode == 2, refused.stderr
    assert str(users.resolve()) in refused.stderr and str(profiles.resolve()) in refused.stderr
    assert "Traceback" not in refused.stderr
    assert after == before  # nothing sent
    assert _report(tmp_path / "shared" / "report.json")["exit_code"] == 0
    assert again.returncode == 0, again.stderr


def _make_old_state(tmp_path: Path, url: str, source: Path, name: str) -> Path:
    """A run as an earlier version left it: the job's state at `out/<name>` (old default)."""
    job = _job(tmp_path, "users.yaml", url, source, state=f"out/{name}")
    result = _cli(tmp_path, "run", str(job), *FAST)
    assert result.returncode == 0, result.stderr
    return tmp_path / "out" / name


@pytest.mark.parametrize("old_name", ["state.db", "users.state.db"])
def test_a_state_file_at_the_old_default_path_is_carried_over(
    tmp_path: Path, old_name: str
) -> None:
    source = users_csv(tmp_path, 20)
    with start_sandbox(tmp_path, *FAST) as sandbox:
        old = _make_old_state(tmp_path, sandbox.url, source, old_name)
        sent = len(sandbox.records())
        job = _job(tmp_path, "users.yaml", sandbox.url, source)  # output: unset, as upgraded
        # A dry run reads the old file where it is and leaves no state file behind.
        dry = _cli(tmp_path, "validate", str(job))
        assert not (tmp_path / "out" / "users" / "state.db").exists()
        rerun = _cli(tmp_path, "run", str(job), *FAST)
        resent = len(sandbox.records()) - sent
    assert sent == 20
    assert dry.returncode == 0, dry.stderr
    assert rerun.returncode == 0, rerun.stderr
    assert f"carried over: out/{old_name} copied to out/users/state.db" in rerun.stderr
    report = _report(tmp_path / "out" / "users" / "report.json")
    assert (report["rows_skipped"], report["rows_accepted"], resent) == (20, 0, 0)
    assert report["state"] == "out/users/state.db"
    assert old.exists()  # left as it was: another job may still need it


def test_output_paths_that_would_destroy_something_are_refused(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 5)
    original = source.read_bytes()
    sqlite_file = tmp_path / "other.db"
    sqlite3.connect(sqlite_file).execute("CREATE TABLE t (x)").connection.close()
    other_csv = tmp_path / "other.csv"
    other_csv.write_text("a,b\n1,2\n")
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = _job(tmp_path, "users.yaml", sandbox.url, source)
        state = str(tmp_path / "out" / "users" / "state.db")
        cases = {
            "is an input file": [("--report", str(source)), ("--dead-letter", str(source))],
            "state file": [("--report", state)],
            "the job file": [("--report", str(job))],
            "report file": [("--dead-letter", str(tmp_path / "r.json")), ("--report", "r.json")],
            "an SQLite database": [("--report", str(sqlite_file))],
            "a text file (CSV or other)": [("--report", str(other_csv))],
        }
        results = []
        for said, options in cases.items():
            args = [arg for option in options for arg in option]
            results.append((said, args, _cli(tmp_path, "run", str(job), *args)))
        # The state suggestion --fresh must not move the input aside either.
        results.append(
            (
                "is an input file",
                ["--state"],
                _cli(tmp_path, "run", str(job), "--state", str(source), "--fresh"),
            )
        )
        results.append(
            (
                "is an input file",
                ["validate"],
                _cli(tmp_path, "validate", str(job), "--report", str(source)),
            )
        )
        arrivals = sandbox.arrivals()
    for said, args, result in results:
        assert result.returncode == 2, (args, result.stderr)
        assert said in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert arrivals == []
    assert source.read_bytes() == original
    assert other_csv.read_text() == "a,b\n1,2\n"
    assert not list(tmp_path.glob("users.csv.*"))  # nothing renamed aside


def test_validate_writes_only_its_own_files_and_exactly_where_asked(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 12, bad_points=(4,))
    fresh = _job(tmp_path, "fresh.yaml", "http://127.0.0.1:9", source)
    # A job that never ran: validate makes no real file.
    first = _cli(tmp_path, "validate", str(fresh))
    assert first.returncode == 1, first.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "fresh").iterdir()) == [
        "dead_letter.dry-run.jsonl",
        "report.dry-run.json",
    ]
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = _job(tmp_path, "users.yaml", sandbox.url, source)
        run = _cli(tmp_path, "run", str(job))
    assert run.returncode == 1, run.stderr
    out = tmp_path / "out" / "users"
    real = _tree(out)
    dry = _cli(tmp_path, "validate", str(job))
    assert dry.returncode == 1, dry.stderr
    after = _tree(out)
    # The real files are as the run left them (not rewritten, not renamed); no -wal, -shm
    # or lock file is left behind by reading the state.
    assert {name: after[name] for name in real} == real
    assert sorted(set(after) - set(real)) == ["dead_letter.dry-run.jsonl", "report.dry-run.json"]
    # An explicit --report / --dead-letter is written exactly there.
    elsewhere = tmp_path / "elsewhere"
    asked = _cli(
        tmp_path,
        "validate",
        str(fresh),
        "--report",
        str(elsewhere / "r.json"),
        "--dead-letter",
        str(elsewhere / "d.jsonl"),
    )
    assert asked.returncode == 1, asked.stderr
    assert sorted(p.name for p in elsewhere.iterdir()) == ["d.jsonl", "r.json"]
    assert _report(elsewhere / "r.json")["dry_run"] is True
    assert [d["row"] for d in _lines(elsewhere / "d.jsonl")] == [4]
    assert sorted(p.name for p in (tmp_path / "out" / "fresh").iterdir()) == [
        "dead_letter.dry-run.jsonl",
        "report.dry-run.json",
    ]
    # Pointed at the real run's own files, a dry run is refused.
    for option, name in (("--report", "report.json"), ("--dead-letter", "dead_letter.jsonl")):
        refused = _cli(tmp_path, "validate", str(job), option, str(out / name))
        assert refused.returncode == 2 and "never writes the real run's files" in refused.stderr
    assert _tree(out) == after


def test_a_first_sync_is_said_in_validate_progress_and_report(tmp_path: Path) -> None:
    source = users_csv(tmp_path, 10)
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = _job(tmp_path, "users.yaml", sandbox.url, source)
        spec = yaml.safe_load(job.read_text())
        spec["sync"] = {"mode": "changed"}
        job.write_text(yaml.safe_dump(spec))
        dry = _cli(tmp_path, "validate", str(job))
        first = _cli(tmp_path, "run", str(job))
        first_report = _report(tmp_path / "out" / "users" / "report.json")
        second = _cli(tmp_path, "run", str(job))
        copy = tmp_path / "profiles.yaml"
        shutil.copy(job, copy)
        copied = _cli(tmp_path, "validate", str(copy))
        sent = len(sandbox.records())
    out = tmp_path / "out"
    assert dry.returncode == 0, dry.stderr
    assert "first sync: sending every row" in dry.stdout  # the validate summary
    assert _report(out / "users" / "report.dry-run.json")["first_sync"] is True
    assert first.returncode == 0, first.stderr
    assert "first sync: sending every row" in first.stderr  # said before sending
    assert first_report["first_sync"] is True
    assert second.returncode == 0, second.stderr
    assert "first sync" not in second.stderr + second.stdout
    report = _report(out / "users" / "report.json")
    assert (report["first_sync"], report["rows_accepted"], report["rows_read"]) == (False, 0, 10)
    assert sent == 10
    # The copied job has no snapshot of its own; the one under users/ is named, with how.
    assert copied.returncode == 0, copied.stderr
    assert _report(out / "profiles" / "report.dry-run.json")["first_sync"] is True
    hint = "out/users/state.db holds a snapshot of this target and mapping (10 customers)"
    assert hint in copied.stdout and hint in copied.stderr
    assert "output.state: out/users/state.db" in copied.stdout
