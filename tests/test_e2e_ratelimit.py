"""The window promise, checked from the sandbox's arrival log: never over, the pipe kept full."""

from __future__ import annotations

from pathlib import Path

import pytest

from importer.sandbox.windows import max_in_any_window
from tests.sandbox_proc import start_sandbox
from tests.support import assert_report_adds_up, job_dict, read_report, run_cli, write_job

RATE, PERIOD, ROWS = 600, 6.0, 3000


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_no_window_exceeds_the_limit_and_pace_is_near_it(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    lines = ["user_id,first_name,points"] + [f"u{i:05d},name{i},{i}" for i in range(ROWS)]
    source.write_text("\n".join(lines) + "\n")
    mapping = {
        "customer_id": "user_id",
        "attributes": {
            "first_name": "first_name",
            "points": {"column": "points", "type": "integer"},
        },
    }
    # The sandbox enforces the same limit: a single 429 would mean we broke the promise.
    with start_sandbox(
        tmp_path, "--rate", str(RATE), "--period", str(PERIOD), "--latency-ms", "20"
    ) as sandbox:
        job = job_dict(
            tmp_path,
            sandbox.url,
            source,
            mapping,
            rate_limit={"updates": RATE, "period_seconds": PERIOD},
        )
        result = run_cli("run", str(write_job(tmp_path, job)), "--no-progress", timeout=120)
        arrivals = sandbox.arrivals()
        recorded = sandbox.records()
    assert result.returncode == 0, result.stderr
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_accepted"] == ROWS and report["http_429"] == 0
    assert len({r["customer_id"] for r in recorded}) == ROWS

    # The promise holds however busy the machine: a stall only delays grants.
    assert max_in_any_window(arrivals, PERIOD) <= RATE
    # Steady pace: users after the first request, over the time they took to arrive.
    times = sorted(a["t"] for a in arrivals)
    first_users = min(arrivals, key=lambda a: a["t"])["users"]
    pace = (ROWS - first_users) / (times[-1] - times[0])
    # About 100% on a quiet machine; every stall of a busy one is pace lost, so this bound
    # only says the CLI keeps the limiter fed (5 s of stalls in the 30 s run would not break
    # it). The exact figure, at least 97% of this limit and latency, is asserted on the
    # virtual clock: test_delivery_pace.py::test_senders_never_exceed_the_window_and_keep_it_full.
    assert pace >= 0.8 * RATE / PERIOD, f"pace {pace:.1f}/s is under 80% of {RATE / PERIOD:.1f}/s"
