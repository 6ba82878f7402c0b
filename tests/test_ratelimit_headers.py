"""MoEngage's rate-limit headers only ever slow the run, before any 429 (virtual clock)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from importer import moengage
from importer.quota.headers import learn_from_headers
from importer.quota.window import WindowLimiter
from importer.sandbox.windows import max_in_window
from tests.sandbox_proc import start_sandbox
from tests.support import job_dict, read_report, run_cli, write_job
from tests.virtual_clock import VirtualTimeLoop, run_virtual


def _send(limiter: WindowLimiter, loop: VirtualTimeLoop, seconds: float) -> list[tuple[float, int]]:
    """Ten users a request, one request at a time, answered at once, for `seconds`."""

    async def main() -> list[tuple[float, int]]:
        arrivals: list[tuple[float, int]] = []
        end = loop.time() + seconds
        while loop.time() < end:
            permit = await limiter.acquire(10)
            arrivals.append((loop.time(), 10))
            permit.release()
        return arrivals

    return loop.run_until_complete(main())


def test_a_lower_limit_header_caps_the_pace_for_the_run() -> None:
    def run(loop: VirtualTimeLoop) -> list[tuple[float, int]]:
        limiter = WindowLimiter(10_000, 60, clock=loop.time)
        learnt = learn_from_headers(limiter, {moengage.RATE_LIMIT_LIMIT_HEADER: "1200"})
        assert learnt == 1200
        return _send(limiter, loop, 300)

    loop = VirtualTimeLoop()
    try:
        arrivals = run(loop)
    finally:
        loop.close()
    steady = [(t, n) for t, n in arrivals if t >= arrivals[0][0] + 60]
    assert max_in_window(steady, 60) <= 1200 + 20  # the pacer's own small bucket
    assert sum(n for _, n in steady) >= 0.95 * 1200 * 4  # and it keeps the pipe full under it


def test_a_higher_limit_header_changes_nothing() -> None:
    async def main(loop: VirtualTimeLoop) -> float:
        limiter = WindowLimiter(600, 60, clock=loop.time)
        assert learn_from_headers(limiter, {moengage.RATE_LIMIT_LIMIT_HEADER: "60000"}) is None
        return limiter.adaptive.rate()

    assert run_virtual(main) == 10.0


def test_nothing_left_pauses_until_the_reset() -> None:
    async def main(loop: VirtualTimeLoop) -> float:
        limiter = WindowLimiter(10_000, 60, clock=loop.time)
        headers = {
            moengage.RATE_LIMIT_REMAINING_HEADER: "0",
            moengage.RATE_LIMIT_RESET_HEADER: str(int(time.time()) + 20),
        }
        learn_from_headers(limiter, headers)
        start = loop.time()
        (await limiter.acquire(1)).release()
        return loop.time() - start

    waited = run_virtual(main)
    assert 18 <= waited <= 21


def test_garbage_headers_are_ignored() -> None:
    async def main(loop: VirtualTimeLoop) -> float:
        limiter = WindowLimiter(600, 60, clock=loop.time)
        bad = {
            moengage.RATE_LIMIT_LIMIT_HEADER: "nan",
            moengage.RATE_LIMIT_REMAINING_HEADER: "soon",
            moengage.RATE_LIMIT_RESET_HEADER: "-5",
        }
        assert learn_from_headers(limiter, bad) is None
        return limiter.paused_until

    assert run_virtual(main) <= 1_000.0


@pytest.mark.sandbox
def test_the_summary_says_which_limit_it_learnt(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    source.write_text("user_id,name\n" + "".join(f"u{i},N{i}\n" for i in range(1, 61)))
    mapping = {"customer_id": "user_id", "attributes": {"name": "name"}}
    with start_sandbox(tmp_path, "--rate", "300", "--period", "60", "--ratelimit-headers") as sb:
        job = job_dict(tmp_path, sb.url, source, mapping, rate_limit={"updates": 30_000})
        result = run_cli("run", str(write_job(tmp_path, job)), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "limit learnt    MoEngage's rate-limit headers say 300 updates/minute" in result.stdout
    report = read_report(tmp_path)
    assert report["rate_limit_learned_per_minute"] == 300 and report["http_429"] == 0
