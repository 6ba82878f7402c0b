"""The report's sender fields: the rate 429s taught and the waits, in the summary too."""

from __future__ import annotations

from importer.outputs.report import Report, format_summary


def test_the_summary_says_the_settled_rate_and_the_waits() -> None:
    report = Report(rows_read=10, rows_accepted=10, http_429=4)
    report.rate_settled_per_minute = 3912.4
    report.rate_limited_wait_seconds = 12.5
    report.outage_seconds = 31.0
    text = format_summary(report)
    assert "settled at about 3,912 updates/minute" in text and "12.5 s paused" in text
    assert "31.0 s paused: the API answered no one" in text


def test_nothing_is_said_without_429s_or_outages() -> None:
    text = format_summary(Report(rows_read=1, rows_accepted=1))
    assert "settled at" not in text and "outage" not in text
    assert Report().to_dict()["rate_settled_per_minute"] is None
