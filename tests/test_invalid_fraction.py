"""delivery.max_invalid_fraction: the exit code decision, and what notify and metrics say."""

from __future__ import annotations

import pytest

from importer.config import DeliveryConfig
from importer.outputs.metrics import Sample, render
from importer.outputs.notify import payload
from importer.outputs.report import Report


def _closed(allowed: float, **counts: int) -> Report:
    report = Report(max_invalid_fraction=allowed)
    for name, value in counts.items():
        setattr(report, name, value)
    report.close(elapsed=1.0, interrupted=False, input_error=False)
    return report


@pytest.mark.parametrize(
    ("allowed", "counts", "code"),
    [
        (0.0, {"rows_read": 100, "rows_accepted": 97, "rows_invalid": 3}, 1),  # the default
        (0.03, {"rows_read": 100, "rows_accepted": 97, "rows_invalid": 3}, 0),  # at it
        (0.029, {"rows_read": 100, "rows_accepted": 97, "rows_invalid": 3}, 1),  # over it
        # anything rejected or failed still needs someone: exit 1
        (0.5, {"rows_read": 100, "rows_accepted": 96, "rows_invalid": 3, "rows_rejected": 1}, 1),
        (0.5, {"rows_read": 100, "rows_accepted": 96, "rows_invalid": 3, "rows_failed": 1}, 1),
        # rows an earlier run dead-lettered are not this run's to tolerate
        (
            0.5,
            {
                "rows_read": 100,
                "rows_accepted": 97,
                "rows_invalid": 1,
                "rows_skipped": 2,
                "rows_skipped_dead_lettered": 2,
            },
            1,
        ),
        (0.5, {"rows_read": 100, "rows_accepted": 100}, 0),
    ],
)
def test_exit_code(allowed: float, counts: dict[str, int], code: int) -> None:
    report = _closed(allowed, **counts)
    assert report.exit_code == code
    tolerated = counts["rows_invalid"] if code == 0 and counts.get("rows_invalid") else 0
    assert report.rows_invalid_tolerated == tolerated
    assert any("ok with" in w for w in report.warnings) == bool(tolerated)


def test_an_aborted_run_is_never_ok() -> None:
    report = Report(max_invalid_fraction=1.0, rows_read=10, rows_accepted=9, rows_invalid=1)
    report.aborted = "the API was down"
    report.close(elapsed=1.0, interrupted=False, input_error=False)
    assert report.exit_code == 3 and report.rows_invalid_tolerated == 0


def test_notify_and_metrics_say_ok_with_n_invalid_rows() -> None:
    report = _closed(0.05, rows_read=100, rows_accepted=97, rows_invalid=3)
    body = payload(report, "nightly")
    assert body["status"] == "success" and body["rows_invalid_tolerated"] == 3
    assert body["text"].startswith("moe-import nightly: ok with 3 invalid rows (exit 0)")
    sample = Sample(report, 97, False, 0.0, 10.0, 0.0, None)
    text = render("nightly", sample)
    assert "# ok with 3 invalid rows" in text
    assert 'moe_import_rows_invalid_tolerated{job_name="nightly"} 3.0' in text


def test_a_plain_failure_is_still_called_failure() -> None:
    report = _closed(0.0, rows_read=100, rows_accepted=97, rows_invalid=3)
    assert payload(report, "nightly")["text"].startswith("moe-import nightly: failure (exit 1)")
    assert "ok with" not in render("nightly", Sample(report, 97, False, 0.0, 10.0, 0.0, None))


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_the_key_is_a_fraction(value: float) -> None:
    with pytest.raises(ValueError, match="max_invalid_fraction"):
        DeliveryConfig(max_invalid_fraction=value)
