"""The report: reasons grouped by rule, counts that add up, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from importer.report import Report, format_reasons, reason_key


def test_reasons_group_by_rule_and_keep_the_column() -> None:
    a = reason_key("column 'points': '2.5' is not an integer")
    b = reason_key("column 'points': 'x7' is not an integer")
    assert a == b == "column 'points': '…' is not an integer"
    assert reason_key("column 'vip': 'maybe' is not a boolean; column 'n': \"it's\" is bad") == (
        "column 'vip': '…' is not a boolean; column 'n': '…' is bad"
    )
    text = format_reasons({a: 3, "customer_id (column 'id') is empty": 5})
    assert text.splitlines()[1].strip().startswith("5  customer_id")


def test_pending_is_what_was_read_and_not_settled(tmp_path: Path) -> None:
    report = Report(rows_read=10, rows_accepted=4, rows_skipped=1, rows_invalid=2, rows_failed=1)
    report.settle_pending()
    assert report.rows_pending == 2
    assert report.finish_exit_code(interrupted=False) == 1
    assert report.finish_exit_code(interrupted=True) == 130
    report.aborted = "401 bad credentials"
    assert report.finish_exit_code(interrupted=False) == 3
    report.write(tmp_path / "r" / "report.json")
    written = json.loads((tmp_path / "r" / "report.json").read_text())
    for key in (
        "rows_read",
        "rows_pending",
        "requests",
        "retries",
        "http_429",
        "elapsed_seconds",
        "updates_per_minute",
        "dead_letter",
        "exit_code",
    ):
        assert key in written


def test_clean_run_exits_zero() -> None:
    report = Report(rows_read=3, rows_accepted=2, rows_skipped=1)
    report.settle_pending()
    assert report.finish_exit_code(interrupted=False) == 0
    assert report.finish_exit_code(interrupted=False, input_error=True) == 2
