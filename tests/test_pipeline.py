"""The run in-process: stop, abort and resume reached directly, the sandbox in the same loop."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from importer.config import JobConfig, load_job
from importer.run.options import RunOptions, RunOutcome
from importer.run.pipeline import Run
from importer.run.preflight import prepare
from importer.sandbox import SandboxServer, SandboxSettings
from tests.support import SANDBOX_KEY, assert_report_adds_up, job_dict, write_job

MAPPING = {
    "customer_id": "user_id",
    "attributes": {"points": {"column": "points", "type": "integer"}},
}


def _source(tmp_path: Path, count: int, points: int = 0) -> Path:
    path = tmp_path / f"users-{count}-{points}.csv"
    rows = [f"u{i:05d},{i + points}" for i in range(1, count + 1)]
    path.write_text("user_id,points\n" + "\n".join(rows) + "\n")
    return path


def _job(tmp_path: Path, url: str, source: Path, **sections: Any) -> JobConfig:
    settings = job_dict(tmp_path, url, source, MAPPING, **sections)
    return load_job(write_job(tmp_path, settings))


async def _run(
    job: JobConfig,
    options: RunOptions,
    during: Callable[[Run], Coroutine[Any, Any, None]] | None = None,
) -> RunOutcome:
    paths, mapper = prepare(job)
    run = Run(job, options, paths, mapper)
    if during is None:
        return await run.execute()
    watcher = asyncio.create_task(during(run))
    try:
        return await run.execute()
    finally:
        watcher.cancel()


def _serve(tmp_path: Path, **settings: Any) -> SandboxServer:
    return SandboxServer(
        SandboxSettings(
            port=0,
            api_key=SANDBOX_KEY,
            rate=10_000_000,
            record=tmp_path / "record.jsonl",
            **settings,
        )
    )


@pytest.mark.slow
def test_a_gentle_stop_keeps_the_rest_pending_and_a_rerun_resumes(tmp_path: Path) -> None:
    source = _source(tmp_path, 2000)

    async def stop_after_some(run: Run) -> None:
        while run.report.rows_accepted < 200:
            await asyncio.sleep(0.005)
        run.signals.gently(signal.SIGINT)  # what the first Ctrl-C does

    async def scenario() -> tuple[RunOutcome, RunOutcome, int]:
        async with _serve(tmp_path) as server:
            # Paced: 20 users a request, 400 a second, so the stop lands mid-run.
            job = _job(
                tmp_path, server.url, source, rate_limit={"updates": 400, "period_seconds": 1}
            )
            first = await _run(job, RunOptions(progress=False), stop_after_some)
            fast = _job(tmp_path, server.url, source)
            second = await _run(fast, RunOptions(progress=False))
            return first, second, server.counters["users_accepted"]

    first, second, accepted = asyncio.run(scenario())
    stopped = first.report
    assert stopped.exit_code == 130
    assert 200 <= stopped.rows_accepted < 2000 and stopped.rows_pending > 0
    assert_report_adds_up(stopped.to_dict())
    resumed = second.report
    assert resumed.rows_skipped == stopped.rows_accepted
    assert resumed.rows_accepted == stopped.rows_pending
    assert accepted == 2000  # in-flight requests finished: nothing sent twice
    assert resumed.exit_code == 0


def test_a_refused_key_aborts_with_nothing_dead_lettered(tmp_path: Path) -> None:
    source = _source(tmp_path, 300)

    async def scenario() -> RunOutcome:
        async with SandboxServer(SandboxSettings(port=0, api_key="another-key")) as server:
            return await _run(_job(tmp_path, server.url, source), RunOptions(progress=False))

    report = asyncio.run(scenario()).report
    assert report.exit_code == 3 and report.aborted
    # The credential check refuses the key before a row is read (run.credentials).
    assert "before anything was read" in report.aborted and report.rows_read == 0
    assert report.rows_accepted == report.requests == 0
    assert report.rows_rejected == report.rows_failed == 0
    assert not (tmp_path / "out" / "dead_letter.jsonl").read_text()


@pytest.mark.slow  # about half a second or more: not in make test-fast
def test_a_dry_run_plans_the_requests_a_run_sends(tmp_path: Path) -> None:
    source = _source(tmp_path, 1000)

    async def scenario() -> tuple[RunOutcome, RunOutcome]:
        async with _serve(tmp_path) as server:
            job = _job(
                tmp_path, server.url, source, rate_limit={"updates": 2000, "period_seconds": 0.1}
            )
            planned = await _run(job, RunOptions(dry_run=True, progress=False))
            sent = await _run(job, RunOptions(progress=False))
            return planned, sent

    planned, sent = asyncio.run(scenario())
    assert planned.report.requests_planned == sent.report.requests == 10  # 100 users each
    assert planned.report.rows_pending == 1000 and planned.report.exit_code == 0
    assert len(planned.samples) == 3 and planned.samples[0]["customer_id"] == "u00001"


@pytest.mark.slow
def test_changed_mode_records_the_snapshot_with_progress(tmp_path: Path) -> None:
    night_1 = _source(tmp_path, 500)
    night_2 = tmp_path / "night2.csv"
    night_2.write_text(night_1.read_text().replace("u00007,7", "u00007,70"))

    async def scenario() -> tuple[RunOutcome, RunOutcome]:
        async with _serve(tmp_path) as server:
            job = _job(tmp_path, server.url, night_1, sync={"mode": "changed"})
            first = await _run(job, RunOptions(progress=False))
            job = _job(tmp_path, server.url, night_2, sync={"mode": "changed"})
            return first, await _run(job, RunOptions(progress=False))

    first, second = asyncio.run(scenario())
    assert first.report.rows_accepted == 500
    assert second.report.rows_accepted == 1 and second.report.rows_unchanged == 499
    with sqlite3.connect(tmp_path / "out" / "state.db") as db:
        (customers,) = db.execute("SELECT count(*) FROM snapshot").fetchone()
    assert customers == 500


@pytest.mark.slow
def test_a_second_signal_cancels_requests_in_flight_and_a_rerun_sends_their_rows(
    tmp_path: Path,
) -> None:
    source = _source(tmp_path, 2000)
    stopped_at: list[float] = []

    async def stop_twice(run: Run) -> None:
        while run.report.rows_accepted < 100:
            await asyncio.sleep(0.005)
        run.signals.gently(signal.SIGINT)
        # A gentle stop alone would wait out the requests in flight (1.5 s each).
        stopped_at.append(asyncio.get_running_loop().time())
        run.signals.at_once(signal.SIGINT)

    async def scenario() -> tuple[RunOutcome, float, RunOutcome]:
        async with _serve(tmp_path, latency_ms=1500) as slow:
            job = _job(tmp_path, slow.url, source, rate_limit={"updates": 400, "period_seconds": 1})
            first = await _run(job, RunOptions(progress=False), stop_twice)
            took = asyncio.get_running_loop().time() - stopped_at[0]
        # The rerun at the same address (progress belongs to its target), without the wait.
        port = int(slow.url.rsplit(":", 1)[1])
        fast = SandboxServer(SandboxSettings(port=port, api_key=SANDBOX_KEY, rate=10_000_000))
        async with fast:
            unpaced = {"updates": 2000, "period_seconds": 0.1}
            rerun = _job(tmp_path, fast.url, source, rate_limit=unpaced)
            second = await _run(rerun, RunOptions(progress=False))
        return first, took, second

    first, took, second = asyncio.run(scenario())
    stopped = first.report
    assert stopped.exit_code == 130 and took < 0.75
    assert 100 <= stopped.rows_accepted < 2000 and stopped.rows_pending > 0
    assert_report_adds_up(stopped.to_dict())
    resumed = second.report
    assert resumed.rows_skipped == stopped.rows_accepted
    assert resumed.rows_accepted == stopped.rows_pending and resumed.exit_code == 0
