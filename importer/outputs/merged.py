"""One report for the slices of a `--workers N` run: counts summed, the worst exit code.

Every row of the input is in exactly one slice's `rows_*` (rows with no id and malformed
records are slice 0's), so the sums add up to the input as one run's report would.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from importer.exitcodes import (
    EXIT_ABORTED,
    EXIT_DEAD_LETTERED,
    EXIT_EMPTY,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
)
from importer.outputs.report import MAX_WARNINGS, Report

# Worst first: a fault that left rows pending, a refusal, an interruption, dead letters, an
# empty input, success. Any other code (a slice that died) counts as a fault (3).
SEVERITY = (EXIT_ABORTED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_DEAD_LETTERED, EXIT_EMPTY, EXIT_OK)
# Times are the longest slice's (they waited side by side).
_LONGEST = ("outage_seconds", "rate_limited_wait_seconds")
_KEPT = ("dry_run", "max_invalid_fraction", "sources", "state")


def worst_exit(codes: list[int]) -> int:
    known = [code if code in SEVERITY else EXIT_ABORTED for code in codes]
    return min(known, key=SEVERITY.index) if known else EXIT_OK


def merge_reports(
    slices: list[tuple[str, int, dict[str, Any] | None]], elapsed: float, run_id: str
) -> Report:
    """The merged report of (K/N, exit code, report dict or None if the slice wrote none)."""
    merged = Report(run_id=run_id, elapsed_seconds=round(elapsed, 3))
    sent = 0.0
    dead_letters: list[str] = []
    for name, code, report in slices:
        if report is None:
            merged.warn(f"slice {name} ended with exit code {code} before writing a report")
            continue
        _add(merged, report)
        sent += float(report.get("updates_per_minute", 0.0)) * float(report["elapsed_seconds"])
        if report.get("dead_letter") and _dead_lettered(report):
            dead_letters.append(str(report["dead_letter"]))
        if report.get("aborted") and merged.aborted is None:
            merged.aborted = f"slice {name}: {report['aborted']}"
    merged.updates_per_minute = round(sent / elapsed, 1) if elapsed > 0 else 0.0
    merged.dead_letter = ", ".join(dead_letters) or None
    merged.exit_code = worst_exit([code for _, code, _ in slices])
    return merged


def _dead_lettered(report: dict[str, Any]) -> bool:
    return bool(
        report.get("rows_invalid") or report.get("rows_rejected") or report.get("rows_failed")
    )


def _add(merged: Report, report: dict[str, Any]) -> None:
    for spec in fields(Report):
        name, value = spec.name, report.get(spec.name)
        if value is None or name in ("exit_code", "elapsed_seconds", "other_slices_rows"):
            continue
        current = getattr(merged, name)
        if name in _KEPT:
            setattr(merged, name, current or value)
        elif name in _LONGEST:
            setattr(merged, name, max(current, value))
        elif isinstance(current, bool):
            setattr(merged, name, current or bool(value))
        elif isinstance(current, int) and isinstance(value, int):
            setattr(merged, name, current + value)
        elif isinstance(current, dict):
            _add_map(name, current, value)
        elif name == "warnings":
            for warning in value[:MAX_WARNINGS]:
                merged.warn(warning)


def _add_map(name: str, current: dict[str, Any], value: dict[str, Any]) -> None:
    """Counts by reason or status add up; wait times are the longest slice's."""
    for key, amount in value.items():
        before = current.get(key, 0)
        current[key] = max(before, amount) if name == "wait_seconds" else before + amount
