"""A run's summary saved in the job's state file at its end (what `status` lists)."""

from __future__ import annotations

import logging

from importer.config import JobConfig
from importer.outputs.report import Report
from importer.run.options import RunOptions
from importer.run.preflight import scope_of
from importer.state import StateError, StateFault
from importer.state.history import record_run

log = logging.getLogger("importer")

# What a run's entry keeps of its report: counts only, never a value of a row.
RUN_COUNTS = (
    "rows_read",
    "rows_accepted",
    "rows_skipped",
    "rows_unchanged",
    "rows_invalid",
    "rows_rejected",
    "rows_failed",
    "rows_pending",
)


def remember_run(job: JobConfig, options: RunOptions, report: Report, command: str) -> None:
    """Save the run's id, exit code and counts; a dry run leaves the state file alone. A
    failure to save is a warning: the run itself is done and its report says all."""
    if options.dry_run or report.run_id is None:
        return
    counts = {name: int(getattr(report, name, 0) or 0) for name in RUN_COUNTS}
    try:
        record_run(
            job.output.state,
            scope_of(job, options.job),
            command,
            report.run_id,
            report.exit_code,
            counts,
        )
    except (StateError, StateFault, OSError) as error:
        log.warning("cannot record the run in %s: %s", job.output.state, error)
