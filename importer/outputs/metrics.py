"""Prometheus text-format metrics for node exporter's textfile collector, written atomically.

The file is rewritten every `METRICS_INTERVAL_SECONDS` while a run goes on and once at its
end, always whole (a temporary file renamed over the old one), so the collector never reads
half a file. `moe_import_last_success_timestamp_seconds` is carried over from the previous
file, so "no success for a day" can be alerted on across runs.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from importer.errors import EXIT_OK
from importer.outputs.atomic import write_atomically
from importer.outputs.report import Report

log = logging.getLogger("importer")

METRICS_INTERVAL_SECONDS = 30.0
PREFIX = "moe_import_"

ROW_OUTCOMES = ("accepted", "skipped", "unchanged", "invalid", "rejected", "failed")


@dataclass
class Sample:
    """What a metrics file says about a run at one moment."""

    report: Report
    users_sent: int  # user updates attempted so far, retries included
    running: bool
    rate: float  # user updates sent per second since the previous sample
    limit_per_second: float
    started_at: float  # unix time
    last_success: float | None  # unix time of the end of the last run that exited 0


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(job_name: str, sample: Sample) -> str:
    """The metrics in Prometheus' text exposition format."""
    report = sample.report
    job = f'job_name="{_label(job_name)}"'
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, values: list[tuple[str, float]]) -> None:
        # The classic text format names a counter with its _total in HELP and TYPE too.
        full = PREFIX + name + ("_total" if kind == "counter" else "")
        lines.append(f"# HELP {full} {help_text}")
        lines.append(f"# TYPE {full} {kind}")
        for labels, value in values:
            inner = ",".join(filter(None, [job, labels]))
            lines.append(f"{full}{{{inner}}} {float(value)!r}")

    metric("rows_read", "counter", "Input rows read.", [("", report.rows_read)])
    metric(
        "rows",
        "counter",
        "Rows settled, by outcome (invalid, rejected, failed: in the dead-letter file).",
        [(f'outcome="{o}"', getattr(report, f"rows_{o}", 0)) for o in ROW_OUTCOMES],
    )
    metric("rows_pending", "gauge", "Rows read and not settled yet.", [("", _pending(report))])
    for name, help_text, values in _clear_and_delete(report):
        metric(name, "counter", help_text, values)
    metric("requests", "counter", "HTTP requests sent, retries included.", [("", report.requests)])
    metric("retries", "counter", "Requests that repeated an earlier one.", [("", report.retries)])
    metric("http_429", "counter", "Requests answered 429 (rate limited).", [("", report.http_429)])
    metric(
        "updates_sent", "counter", "User updates sent, retries included.", [("", sample.users_sent)]
    )
    metric("rate_updates_per_second", "gauge", "Current sending rate.", [("", sample.rate)])
    metric(
        "rate_limit_updates_per_second",
        "gauge",
        "The configured limit (rate_limit.updates / period_seconds).",
        [("", sample.limit_per_second)],
    )
    metric("running", "gauge", "1 while the run goes on.", [("", 1 if sample.running else 0)])
    metric(
        "run_start_timestamp_seconds", "gauge", "When the run started.", [("", sample.started_at)]
    )
    if not sample.running:
        for name, help_text, values in _ending(report):
            metric(name, "gauge", help_text, values)
        if report.rows_invalid_tolerated:
            lines.append(f"# ok with {report.rows_invalid_tolerated:,} invalid rows")
    if sample.last_success is not None:
        metric(
            "last_success_timestamp_seconds",
            "gauge",
            "When a run of this job last ended with exit code 0.",
            [("", sample.last_success)],
        )
    return "\n".join(lines) + "\n"


def _ending(report: Report) -> list[tuple[str, str, list[tuple[str, float]]]]:
    """What only an ended run has: its exit code, duration and the invalid rows it tolerated."""
    return [
        ("exit_code", "The run's exit code.", [("", report.exit_code)]),
        ("elapsed_seconds", "The run's duration.", [("", report.elapsed_seconds)]),
        (
            "rows_invalid_tolerated",
            "Invalid rows a run exiting 0 tolerated (delivery.max_invalid_fraction).",
            [("", report.rows_invalid_tolerated)],
        ),
    ]


def _clear_and_delete(report: Report) -> list[tuple[str, str, list[tuple[str, float]]]]:
    """Attributes cleared (on_empty: unset) and absent customers deleted (delete_absent)."""
    return [
        ("unsets_sent", "Attributes cleared (on_empty: unset).", [("", report.unsets_sent)]),
        (
            "customers_deleted",
            "Absent customers deleted, by outcome (failed: in the dead-letter file).",
            [
                ('outcome="deleted"', report.customers_deleted),
                ('outcome="failed"', report.deletes_failed),
            ],
        ),
    ]


def _pending(report: Report) -> int:
    return max(report.rows_read - report.rows_settled, 0)


def write_metrics(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # 0644: the collector runs as another user.
    write_atomically(path, text.encode("utf-8"), mode=0o644)


_LAST_SUCCESS = re.compile(rf"^{PREFIX}last_success_timestamp_seconds\{{.*\}} (\S+)$", re.M)


def previous_last_success(path: Path) -> float | None:
    """The last success recorded by an earlier run's file, if any."""
    try:
        match = _LAST_SUCCESS.search(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
    return float(match.group(1)) if match else None


class MetricsWriter:
    """Rewrites the metrics file on a timer from a thread, and once more at the end.

    `read` returns the live report and the updates sent so far; it is called from the
    writer's thread, which only reads counters the run updates.
    """

    def __init__(
        self,
        path: Path,
        job_name: str,
        limit_per_second: float,
        read: Callable[[], tuple[Report, int]],
        interval: float | None = None,
    ) -> None:
        self.path = path
        self.job_name = job_name
        self.limit_per_second = limit_per_second
        self.read = read
        self.interval = METRICS_INTERVAL_SECONDS if interval is None else interval
        self.started_at = time.time()
        self.last_success = previous_last_success(path)
        self._last = (time.monotonic(), 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics", daemon=True)
        self._warned = False

    def __enter__(self) -> MetricsWriter:
        self.write(running=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def finish(self, report: Report) -> None:
        """The final file, with the exit code (and the new last success when it is 0)."""
        if report.exit_code == EXIT_OK and not report.dry_run:
            self.last_success = time.time()
        self.write(running=False, report=report)

    def write(self, running: bool, report: Report | None = None) -> None:
        live, users_sent = self.read()
        now = time.monotonic()
        then, sent_then = self._last
        rate = (users_sent - sent_then) / (now - then) if running and now > then else 0.0
        self._last = (now, users_sent)
        sample = Sample(
            report=report or live,
            users_sent=users_sent,
            running=running,
            rate=max(rate, 0.0),
            limit_per_second=self.limit_per_second,
            started_at=self.started_at,
            last_success=self.last_success,
        )
        try:
            write_metrics(self.path, render(self.job_name, sample))
        except OSError as error:
            if not self._warned:  # metrics never stop an import
                self._warned = True
                log.warning("cannot write metrics to %s: %s", self.path, error.strerror)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.write(running=True)
