"""One workspace quota shared by several CLI processes (Redis and local ledgers), end to end.

Three `moe-import run` processes, each importing its own 3,000 users into one sandbox that
enforces 3,000 updates per 10 s: together they must never put more than that in any window
(the sandbox's arrivals log), keep the pipe full, and deliver every row. Killed with SIGKILL
mid-run, one process must not stall the others: its grants expire.

"Full" is a margin here (a busy machine's stalls are pace lost, and these runs share two
cores with the rest of the suite); the exact figures at this limit, at least 97% together
and 93% after a kill, are asserted on the virtual clock in test_quota.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from importer.quota.base import QuotaTerms, SharedLedger
from importer.quota.local import LocalLedger
from importer.quota.redis import RedisLedger
from importer.sandbox.windows import max_in_any_window
from tests.redis_proc import requires_redis, start_redis
from tests.sandbox_proc import SandboxProcess, start_sandbox
from tests.support import ROOT, SANDBOX_KEY, SANDBOX_WORKSPACE, write_job

RATE, PERIOD, USERS, PROCESSES = 3000, 10.0, 3000, 3
TIMEOUT = 2.0  # delivery.timeout_seconds: short, so a dead process's lease ends soon
QUOTA_KEY = "nightly-workspace"


def _write_users(path: Path, prefix: str) -> None:
    lines = ["user_id,first_name"] + [f"{prefix}-u{i:05d},name{i}" for i in range(USERS)]
    path.write_text("\n".join(lines) + "\n")


def _job(tmp_path: Path, sandbox: SandboxProcess, index: int, shared: dict[str, Any]) -> Path:
    folder = tmp_path / f"job{index}"
    folder.mkdir()
    source = folder / "users.csv"
    _write_users(source, f"p{index}")
    job = {
        "api": {"base_url": sandbox.url, "workspace_id": SANDBOX_WORKSPACE, "api_key": SANDBOX_KEY},
        "source": {"path": str(source)},
        "mapping": {"customer_id": "user_id", "attributes": {"first_name": "first_name"}},
        "rate_limit": {"updates": RATE, "period_seconds": PERIOD, "shared": shared},
        "delivery": {"timeout_seconds": TIMEOUT},
        "output": {
            "dead_letter": str(folder / "dead_letter.jsonl"),
            "state": str(folder / "state.db"),
            "report": str(folder / "report.json"),
        },
    }
    return write_job(folder, job)


def _start(job: Path, tmp_path: Path, index: int) -> subprocess.Popen[str]:
    folder = tmp_path / f"job{index}"
    folder.mkdir(exist_ok=True)
    log = (folder / "stderr.txt").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "importer", "run", str(job), "--no-progress"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )


def _users_of(arrivals_or_records: list[dict[str, Any]], prefix: str) -> set[str]:
    return {r["customer_id"] for r in arrivals_or_records if r["customer_id"].startswith(prefix)}


def _pace(arrivals: list[dict[str, Any]], since: float = 0.0) -> float:
    """Users per second from the first arrival after `since` to the last."""
    points = sorted((a["t"], a["users"]) for a in arrivals if a["t"] >= since and a["users"])
    first_t, first_users = points[0]
    return float((sum(n for _, n in points) - first_users) / (points[-1][0] - first_t))


def _check_finished(tmp_path: Path, index: int, process: subprocess.Popen[str]) -> None:
    folder = tmp_path / f"job{index}"
    assert process.wait(timeout=90) == 0, (folder / "stderr.txt").read_text()
    report = json.loads((folder / "report.json").read_text())
    assert report["rows_accepted"] == USERS, report
    assert report["rows_failed"] == report["rows_rejected"] == report["rows_pending"] == 0
    assert report["http_429"] == 0, "a 429 means the processes together broke the promise"
    dead_letter = folder / "dead_letter.jsonl"
    assert not dead_letter.exists() or dead_letter.read_text() == ""


def _shared_quota_together(tmp_path: Path, shared: dict[str, Any]) -> None:
    with start_sandbox(
        tmp_path, "--rate", str(RATE), "--period", str(PERIOD), "--latency-ms", "20"
    ) as sandbox:
        jobs = [_job(tmp_path, sandbox, i, shared) for i in range(PROCESSES)]
        processes = [_start(job, tmp_path, i) for i, job in enumerate(jobs)]
        try:
            for i, process in enumerate(processes):
                _check_finished(tmp_path, i, process)
        finally:
            for process in processes:
                process.kill()
        arrivals, records = sandbox.arrivals(), sandbox.records()
    for i in range(PROCESSES):
        assert len(_users_of(records, f"p{i}-")) == USERS
    assert max_in_any_window(arrivals, PERIOD) <= RATE  # a stall only delays grants
    pace = _pace(arrivals)
    # About 97 to 98% on a quiet machine. The exact figure (97%) is asserted on the virtual
    # clock: test_quota.py::test_many_limiters_keep_one_window_promise_and_fill_it[local].
    assert pace >= 0.8 * RATE / PERIOD, f"together {pace:.0f}/s, under 80% of {RATE / PERIOD:.0f}"


def _one_killed_midway(
    tmp_path: Path, shared: dict[str, Any], ledger: Callable[[], SharedLedger]
) -> None:
    with start_sandbox(
        tmp_path, "--rate", str(RATE), "--period", str(PERIOD), "--latency-ms", "20"
    ) as sandbox:
        jobs = [_job(tmp_path, sandbox, i, shared) for i in range(PROCESSES)]
        processes = [_start(job, tmp_path, i) for i, job in enumerate(jobs)]
        victim = processes[-1]
        try:
            deadline = time.monotonic() + 30
            while len(_users_of(sandbox.records(), f"p{PROCESSES - 1}-")) < 600:
                assert time.monotonic() < deadline, "the victim never got going"
                time.sleep(0.1)
            os.kill(victim.pid, signal.SIGKILL)
            killed_at = time.time()
            victim.wait()
            for i, process in enumerate(processes[:-1]):
                _check_finished(tmp_path, i, process)
            finished_at = time.time()
        finally:
            for process in processes:
                process.kill()
        arrivals, records = sandbox.arrivals(), sandbox.records()
    for i in range(PROCESSES - 1):
        assert len(_users_of(records, f"p{i}-")) == USERS
    assert len(_users_of(records, f"p{PROCESSES - 1}-")) < USERS  # it really died mid-run
    assert max_in_any_window(arrivals, PERIOD) <= RATE
    # The others went on at (nearly) the full pace: the dead process's released grants freed
    # a period after their release; only what it had in flight waits for its lease. About
    # 100% on a quiet machine; the margin is for a busy one's stalls (the figure is asserted
    # on the virtual clock: test_quota.py::test_a_dead_sharer_holds_only_what_it_had_in_flight).
    pace = _pace(arrivals, since=killed_at)
    assert pace >= 0.75 * RATE / PERIOD, f"after the kill {pace:.0f}/s of {RATE / PERIOD:.0f}"

    # And the quota frees entirely: the dead process's grants expire with their lease.
    terms = QuotaTerms.for_limit(RATE, PERIOD, TIMEOUT)
    # The margin is for the probe, not the ledger: a busy machine may stall it past the moment.
    free_by = max(killed_at + terms.lease_seconds, finished_at + PERIOD + TIMEOUT) + 5

    async def wait_free() -> float:
        probe = ledger()
        try:
            while (occupied := await probe.occupied()) > 0:
                assert time.time() < free_by, f"{occupied} updates still held"
                await asyncio.sleep(0.2)
            return time.time()
        finally:
            await probe.aclose()

    assert asyncio.run(wait_free()) <= free_by


@pytest.mark.redis
@pytest.mark.sandbox
@pytest.mark.subprocess
@requires_redis
@pytest.mark.slow
def test_three_processes_share_one_quota_in_redis(tmp_path: Path) -> None:
    with start_redis(tmp_path) as redis:
        _shared_quota_together(tmp_path, {"backend": "redis", "url": redis.url, "key": QUOTA_KEY})


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_three_processes_share_one_quota_in_a_local_ledger(tmp_path: Path) -> None:
    shared = {"backend": "local", "path": str(tmp_path / "quota"), "key": QUOTA_KEY}
    _shared_quota_together(tmp_path, shared)


@pytest.mark.redis
@pytest.mark.sandbox
@pytest.mark.subprocess
@requires_redis
@pytest.mark.slow
def test_a_killed_process_frees_its_share_in_redis(tmp_path: Path) -> None:
    with start_redis(tmp_path) as redis:
        terms = QuotaTerms.for_limit(RATE, PERIOD, TIMEOUT)
        _one_killed_midway(
            tmp_path,
            {"backend": "redis", "url": redis.url, "key": QUOTA_KEY},
            lambda: RedisLedger(terms, redis.url, QUOTA_KEY),
        )


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_a_killed_process_frees_its_share_in_a_local_ledger(tmp_path: Path) -> None:
    terms = QuotaTerms.for_limit(RATE, PERIOD, TIMEOUT)
    directory = tmp_path / "quota"
    _one_killed_midway(
        tmp_path,
        {"path": str(directory), "key": QUOTA_KEY},  # backend local is the default
        lambda: LocalLedger(terms, QUOTA_KEY, directory),
    )


def _small_job(tmp_path: Path, sandbox: SandboxProcess, shared: dict[str, Any], rows: int) -> Path:
    source = tmp_path / "users.csv"
    source.write_text("user_id,first_name\n" + "".join(f"u{i:05d},n{i}\n" for i in range(rows)))
    job = {
        "api": {"base_url": sandbox.url, "workspace_id": SANDBOX_WORKSPACE, "api_key": SANDBOX_KEY},
        "source": {"path": str(source)},
        "mapping": {"customer_id": "user_id", "attributes": {"first_name": "first_name"}},
        "rate_limit": {"updates": 100, "period_seconds": 1, "shared": shared},
        "output": {
            "dead_letter": str(tmp_path / "out" / "dead_letter.jsonl"),
            "state": str(tmp_path / "out" / "state.db"),
            "report": str(tmp_path / "out" / "report.json"),
        },
    }
    return write_job(tmp_path, job)


def _report(tmp_path: Path) -> dict[str, Any]:
    return dict(json.loads((tmp_path / "out" / "report.json").read_text()))


@pytest.mark.redis
@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize("slow", [False, True], ids=["down", "not-answering"])
@requires_redis
def test_redis_down_or_not_answering_stops_with_rows_pending(tmp_path: Path, slow: bool) -> None:
    rows = 1000
    with start_redis(tmp_path) as redis, start_sandbox(tmp_path) as sandbox:
        shared = {"backend": "redis", "url": redis.url, "timeout_seconds": 1}
        run = _start(_small_job(tmp_path, sandbox, shared, rows), tmp_path, 0)
        deadline = time.monotonic() + 20
        while len(sandbox.records()) < 150:  # well under way: then Redis goes
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.05)
        if slow:
            os.kill(redis.process.pid, signal.SIGSTOP)
        else:
            redis.process.kill()
        stopped_at = time.time()
        try:
            code = run.wait(timeout=30)
        finally:
            if slow:
                os.kill(redis.process.pid, signal.SIGCONT)
        arrivals = sandbox.arrivals()
    stderr = (tmp_path / "job0" / "stderr.txt").read_text()
    assert code == 3, stderr
    assert "shared rate limit is unavailable" in stderr and "Traceback" not in stderr
    report = _report(tmp_path)
    assert report["rows_pending"] > 0 and report["rows_failed"] == 0
    assert report["rows_accepted"] + report["rows_pending"] == rows
    # Never a fallback to sending unshared: nothing was granted once Redis was gone. What
    # lands after the stop, however late on a busy machine, was granted before it and in
    # flight then, and what is in flight never exceeds the limit of one period (100 users);
    # sending on without the ledger would add 100 a second until the run gave up.
    after = sum(a["users"] for a in arrivals if a["t"] > stopped_at)
    assert after <= 100, [a for a in arrivals if a["t"] > stopped_at]


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_a_shared_quota_needs_a_reachable_ledger_from_the_start(tmp_path: Path) -> None:
    with start_sandbox(tmp_path) as sandbox:
        shared = {"backend": "redis", "url": "redis://127.0.0.1:9/0", "timeout_seconds": 1}
        run = _start(_small_job(tmp_path, sandbox, shared, 50), tmp_path, 0)
        assert run.wait(timeout=30) == 3
        assert sandbox.arrivals() == []
    stderr = (tmp_path / "job0" / "stderr.txt").read_text()
    assert "Redis at redis://127.0.0.1:9/0" in stderr
    assert _report(tmp_path)["rows_pending"] == 50


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_shared_settings_are_checked_like_the_rest_of_the_job(tmp_path: Path) -> None:
    with start_sandbox(tmp_path) as sandbox:
        job = _small_job(tmp_path, sandbox, {"backend": "redis"}, 5)
        result = subprocess.run(
            [sys.executable, "-m", "importer", "run", str(job)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    assert result.returncode == 2
    assert "rate_limit.shared" in result.stderr and "needs url" in result.stderr
