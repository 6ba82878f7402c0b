"""Incremental sync (sync.mode: changed): night after night only the rows that changed
are sent, against a snapshot of what the API last accepted per customer."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from tests.sandbox_proc import SandboxProcess, start_sandbox
from tests.support import (
    ROOT,
    assert_report_adds_up,
    job_dict,
    read_dead_letters,
    read_report,
    run_cli,
    user_id,
    write_job,
)

pytestmark = pytest.mark.slow  # each test runs the CLI several times: seconds each

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
    lines += [f"{user_id(i)},name{i},{points}" for i, points in users.items()]
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


@pytest.mark.sandbox
@pytest.mark.subprocess
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
    expected = {user_id(i) for i in CHANGED | NEW}
    assert sorted(sent) == sorted(expected)  # exactly those 200, each once
    report = read_report(tmp_path)
    assert report["rows_read"] == 3020
    assert report["rows_accepted"] == 200
    assert report["rows_unchanged"] == 2820
    assert report["customers_absent"] == 30
    assert not any("snapshot" in w for w in report["warnings"]), report["warnings"]
    assert_report_adds_up(report)
    assert "unchanged" in second.stdout


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("stage", "faults"),
    [
        ("rejected", ("--reject-customer-ids", r"^u00(00[1-9]|500)$")),
        # A 5xx request is bisected: only rows whose own requests keep failing end here.
        ("delivery", ("--fail-customer-ids", r"^u00(70[1-9]|900)$")),
    ],
)
def test_rows_rejected_or_failed_are_sent_again_though_unchanged(
    tmp_path: Path, stage: str, faults: tuple[str, ...]
) -> None:
    users = {i: i for i in range(1, 1001)}
    night_1 = _users(tmp_path / "export-1" / "users.csv", users)
    night_2 = _users(tmp_path / "export-2" / "users.csv", users)  # the same data
    (tmp_path / "s1").mkdir()
    with start_sandbox(tmp_path / "s1", *FAST, *faults) as flaky:
        job = _job(tmp_path, flaky.url, delivery={"max_attempts": 1, "concurrency": 1})
        first = _night(job, night_1, *SMALL)
        accepted_1 = set(_ids(flaky.records()))
    assert first.returncode == 1, first.stderr
    letters = read_dead_letters(tmp_path)
    assert {d["stage"] for d in letters} == {stage}
    refused = {d["customer_id"] for d in letters}
    if stage == "rejected":
        assert refused == {f"u0000{i}" for i in range(1, 10)} | {"u00500"}
    else:
        assert refused == {f"u0070{i}" for i in range(1, 10)} | {"u00900"}
    assert 0 < len(refused) < 1000
    (tmp_path / "s2").mkdir()
    # The same target (URL and port), now healthy.
    port = str(urlparse(flaky.url).port)
    with start_sandbox(tmp_path / "s2", *FAST, "--port", port) as sandbox:
        assert sandbox.url == flaky.url
        second = _night(job, night_2)
        sent = _ids(sandbox.records())
    assert second.returncode == 0, second.stderr
    assert sorted(sent) == sorted(refused)  # sent again; no accepted row is
    report = read_report(tmp_path)
    assert report["rows_unchanged"] == len(accepted_1) == 1000 - len(refused)
    assert_report_adds_up(report)


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_kill_9_mid_run_then_rerun_sends_every_changed_user_and_no_other(
    tmp_path: Path,
) -> None:
    users = {i: i for i in range(1, 2001)}
    night_1 = _users(tmp_path / "export-1" / "users.csv", users)
    changed = set(range(1, 2001, 5))  # 400 users, spread through the file
    night_2 = _users(
        tmp_path / "export-2" / "users.csv",
        {i: (p + 7 if i in changed else p) for i, p in users.items()},
    )
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = _job(tmp_path, sandbox.url)
        assert _night(job, night_1).returncode == 0
        before = len(sandbox.records())
        # Paced at 20 users a request, 200 a second: killed about half-way.
        command = ["run", str(job), "--input", str(night_2), "--no-progress"]
        process = subprocess.Popen(
            [sys.executable, "-m", "importer", *command, "--rate", "20", "--period", "0.1"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while len(sandbox.records()) < before + 150 and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        killed_sent = len(sandbox.records()) - before
        assert 0 < killed_sent < len(changed), killed_sent
        rerun = _night(job, night_2)
        assert rerun.returncode == 0, rerun.stderr
        sent = _ids(sandbox.records()[before:])
        # The snapshot and progress agree: a third night on the same data sends nothing.
        copy = tmp_path / "export-3" / "users.csv"
        copy.parent.mkdir()
        copy.write_bytes(night_2.read_bytes())
        third = _night(job, copy)
        after_third = len(sandbox.records()) - before
    expected = {user_id(i) for i in changed}
    assert set(sent) == expected  # every changed user delivered
    # Sent twice at most: the requests in flight at the kill (8 of 20 users at the most).
    assert len(sent) - len(expected) <= 8 * 20
    assert third.returncode == 0, third.stderr
    assert after_third == len(sent)
    assert read_report(tmp_path)["rows_unchanged"] == 2000


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_a_dry_run_first_changes_nothing(tmp_path: Path) -> None:
    night_1 = _users(tmp_path / "export-1" / "users.csv", NIGHT_1)
    night_2 = _users(tmp_path / "export-2" / "users.csv", _night_2())
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = _job(tmp_path, sandbox.url)
        assert _night(job, night_1).returncode == 0
        state = tmp_path / "out" / "state.db"
        before = state.read_bytes()
        dry = run_cli("validate", str(job), "--input", str(night_2), "--no-progress")
        assert dry.returncode == 0, dry.stderr
        dry_report = read_report(tmp_path, dry_run=True)
        assert state.read_bytes() == before  # neither snapshot nor progress moved
        again = run_cli("run", str(job), "--input", str(night_2), "--dry-run", "--no-progress")
        assert again.returncode == 0, again.stderr
        real = _night(job, night_2)
        sent = _ids(sandbox.records()[3000:])
    assert dry_report["dry_run"] and dry_report["rows_unchanged"] == 2820
    assert dry_report["rows_pending"] == 200  # would be sent
    assert "would send" in dry.stdout and "unchanged" in dry.stdout
    assert real.returncode == 0, real.stderr
    assert sorted(sent) == sorted(user_id(i) for i in CHANGED | NEW)


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_full_sends_all_and_a_mapping_change_sends_all(tmp_path: Path) -> None:
    users = {i: i for i in range(1, 501)}
    night_1 = _users(tmp_path / "export-1" / "users.csv", users)
    night_2 = _users(tmp_path / "export-2" / "users.csv", users)
    night_3 = _users(tmp_path / "export-3" / "users.csv", users)
    night_4 = _users(tmp_path / "export-4" / "users.csv", dict(list(users.items())[:200]))
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = _job(tmp_path, sandbox.url)
        assert _night(job, night_1).returncode == 0
        full = _night(job, night_2, "--full")
        assert full.returncode == 0, full.stderr
        assert len(sandbox.records()) == 1000
        assert read_report(tmp_path)["rows_unchanged"] == 0
        # Another mapping: other elements, and a snapshot of its own.
        mapping = {**MAPPING, "attributes": {**MAPPING["attributes"], "name": "first_name"}}
        job = _job(tmp_path, sandbox.url, mapping)
        remapped = _night(job, night_3)
        assert remapped.returncode == 0, remapped.stderr
        assert len(sandbox.records()) == 1500
        said = [
            line for line in remapped.stderr.splitlines() if "another target or mapping" in line
        ]
        assert len(said) == 1, remapped.stderr
        # A truncated export: most of the snapshot absent, and said so.
        short = _night(job, night_4)
        assert short.returncode == 0, short.stderr
        assert len(sandbox.records()) == 1500
    report = read_report(tmp_path)
    assert report["customers_absent"] == 300 and report["rows_unchanged"] == 200
    assert any("300 of the 500 customers" in w for w in report["warnings"]), report["warnings"]


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_under_identity_resolution_the_key_is_the_identifier(tmp_path: Path) -> None:
    mapping = {
        "customer_id": None,
        "identifiers": ["moe_mobile"],
        "attributes": {"moe_mobile": "mobile", "name": "name"},
    }
    night_1 = tmp_path / "export-1" / "users.csv"
    night_1.parent.mkdir()
    night_1.write_text("mobile,name\n+491,Ann\n+492,Bo\n+493,Cy\n")
    night_2 = tmp_path / "export-2" / "users.csv"
    night_2.parent.mkdir()
    # +492 renamed; a new number with an old name is a new person; +493 as it was.
    night_2.write_text("mobile,name\n+491,Ann\n+492,Bob\n+493,Cy\n+494,Ann\n")
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = _job(tmp_path, sandbox.url, mapping)
        assert _night(job, night_1).returncode == 0
        second = _night(job, night_2)
        sent = [r["attributes"] for r in sandbox.records()[3:]]
    assert second.returncode == 0, second.stderr
    assert sent == [{"moe_mobile": "+492", "name": "Bob"}, {"moe_mobile": "+494", "name": "Ann"}]
    assert read_report(tmp_path)["rows_unchanged"] == 2


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_a_customer_twice_in_one_night_sends_each_difference_in_order(tmp_path: Path) -> None:
    night_1 = _users(tmp_path / "export-1" / "users.csv", {1: 10, 2: 20})
    night_2 = tmp_path / "export-2" / "users.csv"
    night_2.parent.mkdir()
    # u00001: a change, then back to what MoEngage holds: both sent, the last one last.
    # u00002: as held, then as held again: nothing sent.
    night_2.write_text(
        "user_id,first_name,points\nu00001,name1,11\nu00002,name2,20\n"
        "u00001,name1,10\nu00002,name2,20\n"
    )
    night_3 = tmp_path / "export-3" / "users.csv"
    night_3.parent.mkdir()
    night_3.write_text("user_id,first_name,points\nu00001,name1,10\n")
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = _job(tmp_path, sandbox.url)
        assert _night(job, night_1).returncode == 0
        assert _night(job, night_2).returncode == 0
        sent = _points(sandbox, 2)
        report = read_report(tmp_path)
        # The snapshot ends with the last accepted row: 10 again, so night 3 sends nothing.
        assert _night(job, night_3).returncode == 0
        assert len(sandbox.records()) == 2 + len(sent)
    # Both rows of u00001 accepted (merged into one element where that keeps the end
    # state, see ordering), the last one last; u00002's rows are unchanged.
    assert report["rows_accepted"] == 2 and report["rows_unchanged"] == 2
    assert {customer for customer, _ in sent} == {"u00001"}
    assert sent[-1] == ("u00001", 10)


def _points(sandbox: SandboxProcess, skip: int) -> list[tuple[str, int]]:
    return [(r["customer_id"], r["attributes"]["points"]) for r in sandbox.records()[skip:]]


@pytest.mark.subprocess
@pytest.mark.parametrize("mode", ["all", "changed"])
def test_init_writes_sync_changed_and_both_modes_load(tmp_path: Path, mode: str) -> None:
    scaffold = run_cli("init", "sample_data/")
    assert scaffold.returncode == 0, scaffold.stderr
    assert "sync: {mode: changed}" in scaffold.stdout
    settings = yaml.safe_load(scaffold.stdout)
    assert settings["sync"] == {"mode": "changed"}
    settings["sync"]["mode"] = mode
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(settings))
    env = {"MOENGAGE_WORKSPACE_ID": "WS1", "MOENGAGE_API_KEY": "k"}
    result = run_cli(
        "validate",
        str(job),
        *("--report", str(tmp_path / "report.json")),
        *("--dead-letter", str(tmp_path / "dead.jsonl")),
        *("--state", str(tmp_path / "state.db")),
        env=env,
    )
    assert result.returncode in (0, 1), result.stderr
    assert not (tmp_path / "state.db").exists()  # a dry run creates no state
