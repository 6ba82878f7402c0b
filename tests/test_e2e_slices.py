"""Customer-hash slices end to end: `--slice K/N` processes and `--workers N`.

Four slice processes against one sandbox and one Redis quota deliver exactly what one
unsliced run of the same messy file delivers (every element once, each customer's elements
in file order, the last row winning), never over the limit in any window; `--workers 2`
merges the slices' reports into one run's counts; a second night in changed mode sends only
the changed rows; and what cannot be sliced is refused before anything is sent.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import requests

from importer.sandbox.windows import max_in_any_window
from tests.redis_proc import requires_redis, start_redis
from tests.sandbox_proc import SandboxProcess, start_sandbox
from tests.support import (
    ROOT,
    SANDBOX_KEY,
    SANDBOX_WORKSPACE,
    assert_report_adds_up,
    run_cli,
    start_cli,
    write_job,
)

RATE, PERIOD = 1500, 5.0
CUSTOMERS, ROWS = 400, 1200
ROW_OUTCOMES = ("accepted", "skipped", "unchanged", "invalid", "rejected", "failed", "pending")


def _messy_csv(path: Path, changed: set[int] | None = None, *, rows: int = ROWS) -> Path:
    """Three rows a customer on average, spread over the file (the last one wins), plus a
    row with no id, a placeholder id and a points cell that is no integer. `changed`
    customers get other points (a second night)."""
    lines = ["user_id,first_name,points"]
    for row in range(rows):
        customer = (row * 7) % CUSTOMERS
        bump = 1000 if customer in (changed or set()) else 0
        lines.append(f"c{customer:04d},name{row},{row + bump}")
    lines += [",nobody,1", "null,placeholder,2", "c0001,bad,x"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _job(folder: Path, url: str, source: Path, **extra: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    job: dict[str, Any] = {
        "api": {"base_url": url, "workspace_id": SANDBOX_WORKSPACE, "api_key": SANDBOX_KEY},
        "source": {"path": str(source)},
        "mapping": {
            "customer_id": "user_id",
            "attributes": {
                "first_name": "first_name",
                "points": {"column": "points", "type": "integer"},
            },
        },
        "rate_limit": {"updates": RATE, "period_seconds": PERIOD},
        "output": {
            "dead_letter": str(folder / "dead_letter.jsonl"),
            "state": str(folder / "state.db"),
            "report": str(folder / "report.json"),
        },
        **extra,
    }
    return write_job(folder, job)


def _by_customer(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:  # as sent: when it arrived is no part of it
        found[record["customer_id"]].append({k: v for k, v in record.items() if k != "received_at"})
    return dict(found)


def _profiles(sandbox: SandboxProcess) -> dict[str, Any]:
    got: dict[str, Any] = requests.get(f"{sandbox.url}/_sandbox/profiles", timeout=10).json()
    profiles: dict[str, Any] = got["profiles"]
    return profiles


def _report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def _counts(report: dict[str, Any]) -> dict[str, int]:
    return {name: report[f"rows_{name}"] for name in ("read", *ROW_OUTCOMES)}


def _single_run(tmp_path: Path, source: Path) -> tuple[dict[str, Any], Any, Any]:
    """One unsliced run: (its report, the elements the sandbox accepted, its profiles)."""
    for name in ("single", "sliced", "workers", "nights"):
        (tmp_path / name).mkdir(exist_ok=True)
    with start_sandbox(tmp_path / "single") as sandbox:
        job = _job(tmp_path / "single", sandbox.url, source)
        done = run_cli("run", str(job), "--no-progress")
        assert done.returncode == 1, done.stderr  # the planted bad rows
        return _report(tmp_path / "single" / "report.json"), sandbox.records(), _profiles(sandbox)


@pytest.mark.redis
@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
@requires_redis
def test_four_slice_processes_deliver_what_one_run_does_within_one_redis_quota(
    tmp_path: Path,
) -> None:
    source = _messy_csv(tmp_path / "users.csv")
    single_report, single_records, single_profiles = _single_run(tmp_path, source)
    with start_redis(tmp_path) as redis, start_sandbox(tmp_path / "sliced") as sandbox:
        shared = {"backend": "redis", "url": redis.url, "key": "slices-test"}
        job = _job(tmp_path / "sliced", sandbox.url, source, rate_limit={
            "updates": RATE, "period_seconds": PERIOD, "shared": shared
        })  # fmt: skip
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "importer", "run", str(job), "--slice", f"{k}/4"],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for k in range(4)
        ]
        codes = [p.wait(timeout=180) for p in processes]
        errors = [p.stderr.read() if p.stderr else "" for p in processes]
        records, arrivals, profiles = sandbox.records(), sandbox.arrivals(), _profiles(sandbox)
    assert set(codes) <= {0, 1} and 1 in codes, errors
    # Same elements per customer, in the same order: every element once, nothing else.
    assert _by_customer(records) == _by_customer(single_records)
    assert len(records) == len(single_records)
    assert profiles == single_profiles  # the last row of each customer won, as in one run
    last = {f"c{(row * 7) % CUSTOMERS:04d}": row for row in range(ROWS)}
    assert len(profiles) == CUSTOMERS
    assert all(profiles[c]["points"] == row for c, row in last.items()), profiles["c0001"]
    assert max_in_any_window(arrivals, PERIOD) <= RATE
    # Each slice wrote its own files, and together they account for every row once.
    reports = [_report(tmp_path / "sliced" / f"report.slice-{k}-of-4.json") for k in range(4)]
    for report in reports:
        assert_report_adds_up(report)
        assert report["slice"] in {f"{k}/4" for k in range(4)}
    total = {name: sum(_counts(r)[name] for r in reports) for name in _counts(reports[0])}
    assert total == _counts(single_report)
    assert all(r["rows_read"] + r["other_slices_rows"] == ROWS + 3 for r in reports)
    assert all((tmp_path / "sliced" / f"state.slice-{k}-of-4.db").exists() for k in range(4))


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_workers_two_merge_into_one_runs_report_and_worst_exit_code(tmp_path: Path) -> None:
    source = _messy_csv(tmp_path / "users.csv")
    single_report, single_records, _ = _single_run(tmp_path, source)
    with start_sandbox(tmp_path / "workers") as sandbox:
        job = _job(tmp_path / "workers", sandbox.url, source)
        done = run_cli("run", str(job), "--workers", "2", "--no-progress")
        records, arrivals = sandbox.records(), sandbox.arrivals()
    assert done.returncode == 1, done.stderr  # the worst of the slices: dead letters
    merged = _report(tmp_path / "workers" / "report.json")
    assert_report_adds_up(merged)
    assert _counts(merged) == _counts(single_report)
    assert merged["exit_code"] == 1
    assert merged["duplicate_customers"] == single_report["duplicate_customers"]
    assert _by_customer(records) == _by_customer(single_records)
    # The local ledger is shared by the two slices without the job saying so.
    assert max_in_any_window(arrivals, PERIOD) <= RATE
    dead = [
        json.loads(line)
        for k in range(2)
        for line in (tmp_path / "workers" / f"dead_letter.slice-{k}-of-2.jsonl")
        .read_text()
        .splitlines()
    ]
    assert len(dead) == single_report["rows_invalid"]
    assert "rows read" in done.stdout or "read" in done.stdout  # one summary, printed once


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_a_second_night_in_changed_mode_sends_only_the_changed_rows(tmp_path: Path) -> None:
    # One row a customer: with several, each row is compared with the last one accepted.
    source = _messy_csv(tmp_path / "users.csv", rows=CUSTOMERS)
    (tmp_path / "nights").mkdir()
    with start_sandbox(tmp_path / "nights") as sandbox:
        job = _job(tmp_path / "nights", sandbox.url, source, sync={"mode": "changed"})
        first = run_cli("run", str(job), "--workers", "2", "--no-progress")
        assert first.returncode == 1, first.stderr
        before = len(sandbox.records())
        _messy_csv(source, changed={3, 5, 8}, rows=CUSTOMERS)
        second = run_cli("run", str(job), "--workers", "2", "--no-progress")
        assert second.returncode == 1, second.stderr
        sent = sandbox.records()[before:]
    assert {record["customer_id"] for record in sent} == {"c0003", "c0005", "c0008"}
    merged = _report(tmp_path / "nights" / "report.json")
    assert_report_adds_up(merged)
    assert merged["rows_unchanged"] == CUSTOMERS - 3 and merged["rows_read"] == CUSTOMERS + 3


def _offline_job(tmp_path: Path, **extra: Any) -> Path:
    source = _messy_csv(tmp_path / "users.csv")
    # An unreachable host: nothing may reach it; a run that gets past the refusals gives up soon.
    delivery = {"max_outage_seconds": 1, "timeout_seconds": 1, "max_attempts": 1}
    return _job(tmp_path / "out", "https://api.invalid", source, delivery=delivery, **extra)


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--slice", "4/4"), "K counts from 0 to N-1"),
        (("--slice", "one/4"), "is not K/N"),
        (("--slice", "0/0"), "N must be from 1"),
        (("--workers", "2", "--slice", "0/2"), "cannot be combined"),
    ],
)
def test_bad_slicing_is_refused_before_anything_is_sent(
    tmp_path: Path, args: tuple[str, ...], said: str
) -> None:
    done = run_cli("run", str(_offline_job(tmp_path)), *args, "--no-progress")
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr


@pytest.mark.subprocess
@pytest.mark.parametrize("args", [("--slice", "1/2"), ("--workers", "2")])
def test_identity_resolution_jobs_refuse_slicing(tmp_path: Path, args: tuple[str, ...]) -> None:
    source = tmp_path / "ir.csv"
    source.write_text("phone,first_name\n+15550001,a\n")
    mapping = {"identifiers": ["moe_mobile"], "attributes": {"moe_mobile": "phone"}}
    job = _job(tmp_path / "out", "https://api.invalid", source, mapping=mapping)
    done = run_cli("run", str(job), *args, "--no-progress")
    assert done.returncode == 2, done.stderr
    assert "Identity Resolution" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.subprocess
def test_a_state_made_with_another_n_is_refused_unless_fresh(tmp_path: Path) -> None:
    job = _offline_job(tmp_path)
    (tmp_path / "out" / "state.slice-1-of-4.db").write_bytes(b"")
    done = run_cli("run", str(job), "--slice", "0/2", "--no-progress")
    assert done.returncode == 2, done.stderr
    assert "made with 4 slice(s)" in done.stderr
    workers = run_cli("run", str(job), "--workers", "2", "--no-progress")
    assert workers.returncode == 2 and "made with 4 slice(s)" in workers.stderr
    unsliced = run_cli("run", str(job), "--no-progress")
    assert unsliced.returncode == 2 and "made with 4 slice(s)" in unsliced.stderr
    # --fresh gets past it (to the unreachable host: a refusal of another kind, exit 3).
    fresh = run_cli("run", str(job), "--slice", "0/2", "--fresh", "--no-progress")
    assert "made with" not in fresh.stderr


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_ctrl_c_stops_every_slice_gently_and_exits_130_with_the_merged_report(
    tmp_path: Path,
) -> None:
    source = _messy_csv(tmp_path / "users.csv")
    (tmp_path / "stop").mkdir()
    with start_sandbox(tmp_path / "stop") as sandbox:
        slow = {"updates": 100, "period_seconds": 2.0}  # about 25 s for the whole file
        job = _job(tmp_path / "stop", sandbox.url, source, rate_limit=slow)
        process = start_cli("run", str(job), "--workers", "2", "--no-progress")
        sandbox.wait_until_reached()
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        merged = _report(tmp_path / "stop" / "report.json")
        assert merged["exit_code"] == 130 and merged["rows_pending"] > 0
        assert_report_adds_up(merged)
        assert merged["rows_read"] == ROWS + 3
        # The slices' progress lets the same command finish the work. At another --rate,
        # once the stopped run's grants have expired (a period after its last send): until
        # then they count in the window, and another limit on the ledger is refused.
        time.sleep(float(slow["period_seconds"]) + 1.5)
        done = run_cli("run", str(job), "--workers", "2", "--no-progress", "--rate", "100000")
        assert done.returncode == 1, done.stderr
        kept = _profiles(sandbox)
    assert {f"c{c:04d}" for c in range(CUSTOMERS)} <= set(kept)
