"""The report: reasons grouped by rule, counts that add up, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from importer.outputs.report import Report, format_reasons, reason_key


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


def test_reasons_hold_no_value_not_even_an_array_item_or_a_count() -> None:
    keys = {
        reason_key(f"column 'tags': has an item 'user{i}@example.com' that is too long")
        for i in range(50)
    }
    keys |= {
        reason_key(f"column 'tags': has {n} items; an array holds at most 50") for n in (51, 99)
    }
    assert keys == {
        "column 'tags': has an item '…' that is too long",
        "column 'tags': has N items; an array holds at most N",
    }
    assert reason_key("column 'a; b': 'x; y' is bad") == "column 'a; b': '…' is bad"


def test_the_rules_own_numbers_in_its_explanation_stay() -> None:
    from importer.mapping.temporal import EXPECTED_FORMS

    key = reason_key(f"column 'born': '31/02/1990' is not a date ({EXPECTED_FORMS})")
    assert key == f"column 'born': '…' is not a date ({EXPECTED_FORMS})"
    assert "ISO 8601 (2024-03-01" in key
    # Values quoted inside a parenthesis are still blanked; counts outside it still are.
    assert reason_key("column 'n': has 7 items ('a', 'b') (at most 5)") == (
        "column 'n': has N items ('…', '…') (at most 5)"
    )


def test_report_file_is_0600_and_never_written_through_a_symlink(tmp_path: Path) -> None:
    import stat

    import pytest

    path = tmp_path / "report.json"
    Report(rows_read=1).write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    for link in (path, tmp_path / "report.json.tmp"):
        path.unlink(missing_ok=True)
        link.symlink_to(target)
        with pytest.raises(OSError, match="symbolic link"):
            Report(rows_read=1).write(path)
        link.unlink()
    assert target.read_text() == "keep me"


def test_the_summary_gives_a_pace_only_for_a_run_of_a_minute_or_more() -> None:
    from importer.outputs.report import format_summary

    short = Report(rows_read=5, rows_accepted=5)
    short.close(0.1, False, False)
    assert "5 updates in under a minute" in format_summary(short)
    long = Report(rows_read=20_000, rows_accepted=20_000)
    long.close(120.0, False, False)
    assert "10,000 updates/minute" in format_summary(long)
