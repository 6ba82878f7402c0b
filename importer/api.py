"""The Python API for orchestrators (Airflow, Dagster, cron wrappers): the CLI's commands.

    from importer import load_job, run_job, replay_job, RunAborted

    report = run_job("jobs/users.yaml")          # or run_job(load_job(path, env=...))
    report.rows_accepted, report.exit_code, report.dead_letter
    run_job(path, dry_run=True)                  # `moe-import validate`: no credentials needed
    replay_job(path, "out/dead_letter.jsonl")    # `moe-import replay`

`run_job` does what `moe-import run` does (saved progress, dead letters, the report file,
`output.metrics`, `output.notify`) and returns the `Report`; `replay_job` what `moe-import
replay` does. `load_job` is the loader the CLI uses (importer.config). A run that cannot do its work
raises; every error carries the exit code the CLI would give:

    ImporterError               base; .exit_code, .report (None before anything ran)
    ├── JobRefused          2   bad job file, input or output paths; nothing was sent
    │                           (a UsageError; load_job's ConfigError is one)
    ├── RowsDeadLettered    1   only with raise_on_dead_letters=True: the run finished
    │                           but rows are in the dead-letter file
    ├── RunAborted          3   stopped with rows pending (credentials refused, outage,
    │                           continuous 429s, shared quota unavailable); rerun once fixed
    └── RunInterrupted    130   SIGINT / SIGTERM; rerun to resume

The whole tree, with the library's own errors in it, is drawn in `importer.errors`.

Exit 1 is not an error by default: the run finished and accounted for every row; check
`report.exit_code` or `report.rows_dead_lettered`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from importer.config import ConfigError, JobConfig, JobRefused, load_job, with_overrides
from importer.errors import (
    EXIT_ABORTED,
    EXIT_DEAD_LETTERED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    ImporterError,
    RowsDeadLettered,
    RunAborted,
    RunInterrupted,
    UsageError,
)
from importer.outputs.location import shown
from importer.outputs.metrics import MetricsWriter
from importer.outputs.notify import notify, payload
from importer.outputs.report import Report
from importer.redaction import Secrets
from importer.remote import RemoteOutputs, remote_outputs
from importer.run.history import remember_run
from importer.run.options import RunOptions as RunOptions  # re-exported: the Python API
from importer.run.options import RunOutcome as RunOutcome
from importer.run.pipeline import Run
from importer.run.preflight import dry_run_outputs, prepare, vet_job_outputs
from importer.run.replay import replay_dead_letter, replay_paths
from importer.run.slices import check_slicing, sliced_outputs
from importer.run.transport import check_plain_http

__all__ = [
    "ConfigError",
    "JobRefused",
    "RunOptions",
    "RunOutcome",
    "execute",
    "load_job",
    "prepared",
    "replay_job",
    "run_job",
]

log = logging.getLogger("importer")
JobOrPath = JobConfig | str | os.PathLike[str]


def run_job(
    job: JobOrPath,
    *,
    dry_run: bool = False,
    full: bool = False,
    fresh: bool = False,
    progress: bool = False,
    job_name: str | None = None,
    notify_url: str | None = None,
    write_report: bool = True,
    raise_on_dead_letters: bool = False,
) -> Report:
    """Run an import as `moe-import run` would and return its report (see the module doc).

    `job` is a loaded job or a job file's path. A dry run (`moe-import validate`) sends
    nothing and needs no credentials; its report goes beside the real one (X.dry-run.json).
    `job_name` names the run in notifications and metrics (default: the job file's name
    without extension, or "job").
    """
    loaded, name = _loaded(job, job_name, need_credentials=not dry_run)
    options = RunOptions(dry_run=dry_run, fresh=fresh, full=full, progress=progress)
    return _command(
        prepared(loaded, dry_run=dry_run),
        options,
        name,
        notify_url,
        write_report,
        raise_on_dead_letters,
    )


def replay_job(
    job: JobOrPath,
    dead_letter: str | os.PathLike[str],
    *,
    dry_run: bool = False,
    fresh: bool = False,
    progress: bool = False,
    job_name: str | None = None,
    notify_url: str | None = None,
    write_report: bool = True,
    raise_on_dead_letters: bool = False,
) -> Report:
    """Send the rows of a dead-letter file again, as `moe-import replay` would.

    Its dead letters and report go beside `dead_letter` (X.replay.jsonl, X.replay.report.json),
    never over the job's own files; a rerun resumes (`fresh`: starts over)."""
    loaded, name = _loaded(job, job_name, need_credentials=not dry_run)
    source = Path(dead_letter)
    options = RunOptions(dry_run=dry_run, fresh=fresh, progress=progress)
    return _command(
        prepared(loaded, dry_run=dry_run, replay_from=source),
        options,
        name,
        notify_url,
        write_report,
        raise_on_dead_letters,
        replay_from=source,
    )


def prepared(
    job: JobConfig,
    *,
    dry_run: bool = False,
    replay_from: Path | None = None,
    dead_letter: str | None = None,
    report: str | None = None,
) -> JobConfig:
    """The job as a command runs it (the CLI's and this API's one rule).

    A replay writes beside its input unless `dead_letter` / `report` say otherwise, never over
    the job's files; a dry run writes only its own files (`X.dry-run.*` beside the real ones,
    or exactly where `dead_letter` / `report` say), never the real run's (its counts and dead
    letters survive a validate); a real run refuses Basic auth over plain http:// to another
    machine before anything starts."""
    need_credentials = not dry_run
    if replay_from is not None:
        beside_dead_letter, beside_report = replay_paths(replay_from)
        output = {"dead_letter": str(beside_dead_letter), "report": str(beside_report)}
        if not dry_run:
            output = {"dead_letter": dead_letter or output["dead_letter"]}
            output["report"] = report or str(beside_report)
        job = with_overrides(job, {"output": output}, need_credentials=need_credentials)
    if dry_run:
        # Only its own files (X.dry-run.*), or exactly where --report / --dead-letter say.
        output = dry_run_outputs(job, dead_letter=dead_letter, report=report)
        job = with_overrides(job, {"output": output}, need_credentials=False)
    else:
        check_plain_http(job.api.resolved_base_url(), job.api.allow_insecure_http)
    if job.slice is not None:  # a slice writes its own files: X.slice-K-of-N.*
        sliced = sliced_outputs(job)
        if replay_from is not None:  # a replay's own files are beside its input already
            sliced = {name: sliced[name] for name in ("state", "metrics") if name in sliced}
        job = with_overrides(job, {"output": sliced}, need_credentials=need_credentials)
    if replay_from is not None:  # the file replayed is an input: no output may be it
        vet_job_outputs(job, [replay_from], dry_run=dry_run)
    return job


def _loaded(
    job: JobOrPath, job_name: str | None, *, need_credentials: bool
) -> tuple[JobConfig, str]:
    if isinstance(job, JobConfig):
        return job, job_name or "job"
    return load_job(job, need_credentials=need_credentials), job_name or Path(job).stem


def _command(
    job: JobConfig,
    options: RunOptions,
    job_name: str,
    notify_url: str | None,
    write_report: bool,
    raise_on_dead_letters: bool,
    replay_from: Path | None = None,
) -> Report:
    secrets = job.secrets()
    try:
        if not options.dry_run and replay_from is None:
            check_slicing(job, fresh=options.fresh)  # s3:// state: before its local copy
        with remote_outputs(job, dry_run=options.dry_run, replay_from=replay_from) as remote:
            outcome = execute(
                remote.job,
                options,
                job_name=job_name,
                notify_url=notify_url,
                replay_from=remote.replay_from,
                remote=remote,
            )
            report = outcome.report
            if write_report and not remote.active:  # a remote one is written by `finish`
                report.write(remote.job.output.report)
    except UsageError as error:
        raise JobRefused(secrets.scrub(str(error))) from error
    except OSError as error:  # a disk full, a file gone: what the CLI exits 3 for
        raise RunAborted(secrets.scrub(f"stopped: {error}")) from error
    return _checked(report, raise_on_dead_letters)


def _checked(report: Report, raise_on_dead_letters: bool) -> Report:
    code = report.exit_code
    if code == EXIT_OK:
        return report
    if code == EXIT_DEAD_LETTERED:
        if raise_on_dead_letters:
            raise RowsDeadLettered(f"rows in the dead-letter file {report.dead_letter}", report)
        return report
    if code == EXIT_INTERRUPTED:
        raise RunInterrupted("interrupted; run again to resume", report)
    if code == EXIT_USAGE:
        raise JobRefused(report.aborted or "the input cannot be imported", report)
    if code == EXIT_ABORTED:
        raise RunAborted(report.aborted or "stopped with rows pending", report)
    error = ImporterError(report.aborted or f"the run ended with exit code {code}", report)
    error.exit_code = code
    raise error


def execute(
    job: JobConfig,
    options: RunOptions,
    *,
    job_name: str,
    notify_url: str | None = None,
    replay_from: Path | None = None,
    observe: Callable[[Run], None] | None = None,
    remote: RemoteOutputs | None = None,
    notifying: bool = True,
) -> RunOutcome:
    """A run with its ops hooks (metrics file, notification): what the CLI and run_job share.

    Its outputs must be local files: a job with s3:// outputs runs inside
    `importer.remote.remote_outputs`, passed as `remote` with its `job`: it sees the run
    start, and before the notification it writes and uploads the report (`finish`, which
    may turn the exit code to 3), so the notification carries the final code and URLs.

    Errors of the job, input or outputs propagate (after a notification) for the caller to
    map; a notification that fails is logged and changes nothing. A slice of `--workers`
    runs with `notifying=False`: its parent sends the one notification of the command.
    """
    scrub = job.secrets()
    if remote is not None:
        options = replace(options, replay_name=remote.urls.get("input0"))
        observe = observe or remote.attach
    try:
        outcome = _run_with_metrics(job, options, job_name, replay_from, observe)
    except Exception as error:
        if notifying:
            notify_end(job, options.dry_run, job_name, notify_url, error=error)
        raise
    _scrub_report(outcome.report, scrub)
    remember_run(job, options, outcome.report, "run" if replay_from is None else "replay")
    report_path = shown(job.output.report)
    if remote is not None:
        remote.finish(outcome.report)
        report_path = remote.shown(job.output.report)
    if notifying:
        notify_end(
            job, options.dry_run, job_name, notify_url, report=outcome.report, path=report_path
        )
    return outcome


def notify_end(
    job: JobConfig,
    dry_run: bool,
    job_name: str,
    notify_url: str | None,
    *,
    report: Report | None = None,
    error: BaseException | None = None,
    path: str | None = None,
) -> None:
    """The end-of-run notification (`--notify`, else `output.notify` unless a dry run): the
    report of a run that ended, or the error that stopped it (refused: exit 2, a fault of
    our own: exit 3)."""
    hook = job.output.notify
    # A dry run (validate) notifies only when asked on the command line, not from the file.
    url = notify_url or (hook.url if hook and not dry_run else None)
    if not url:
        return
    on = hook.on if hook else ["failure", "success"]
    secrets = [job.api.api_key.get_secret_value()]
    if report is None:
        code = error.exit_code if isinstance(error, ImporterError) else EXIT_ABORTED
        failed = Report(dry_run=dry_run, exit_code=code)
        reason = job.secrets()(str(error) or type(error).__name__)
        notify(url, payload(failed, job_name, error=reason, secrets=secrets), on)
        return
    report_path = path or shown(job.output.report)
    notify(url, payload(report, job_name, report_path=report_path, secrets=secrets), on)


def _scrub_report(report: Report, secrets: Secrets) -> None:
    """The report is shown and stored: an abort reason quoting an input path or a server's
    answer must not carry the job's secrets into it."""
    if report.aborted is not None:
        report.aborted = secrets.scrub(report.aborted)
    report.warnings = [secrets.scrub(warning) for warning in report.warnings]


def _run_with_metrics(
    job: JobConfig,
    options: RunOptions,
    job_name: str,
    replay_from: Path | None,
    observe: Callable[[Run], None] | None = None,
) -> RunOutcome:
    def run() -> RunOutcome:
        if replay_from is not None:  # the replay's run is seen as it starts
            return replay_dead_letter(job, replay_from, replace(options, observe=watch))
        return _run_files(job, options, observe=watch)

    live: dict[str, Any] = {}

    def watch(started: Run) -> None:
        live["run"] = started
        if observe is not None:
            observe(started)

    path = job.output.metrics
    if path is None or options.dry_run:
        return run()
    limit = job.rate_limit.updates / job.rate_limit.period_seconds
    with MetricsWriter(path, job_name, limit, _reader(live)) as writer:
        outcome = run()
        writer.finish(outcome.report)
    return outcome


def _run_files(
    job: JobConfig, options: RunOptions, observe: Callable[[Run], None] | None = None
) -> RunOutcome:
    """A run of the job over its source files (`observe` sees the run before it starts)."""
    if not options.dry_run:
        check_slicing(job, fresh=options.fresh)  # a state of another N is not this one's
    paths, mapper = prepare(job)
    run = Run(job, options, paths, mapper)
    if observe is not None:
        observe(run)  # the metrics file reads the live run's counters
    outcome = asyncio.run(run.execute())
    report = outcome.report
    report.slice = job.slice
    report.other_slices_rows = getattr(run.feed, "other_slices_rows", 0)
    read = report.rows_read + report.other_slices_rows  # a slice may hold no row of its own
    if read == 0 and report.exit_code == EXIT_OK and not job.source.allow_empty:
        # An export that failed upstream must not pass unnoticed at 2 a.m.: exit 4.
        report.mark_empty()
        log.warning("%s", report.warnings[-1])
    return outcome


def _reader(live: dict[str, Any]) -> Callable[[], tuple[Report, int]]:
    """Reads the live run's counters (from the metrics thread: plain integer reads)."""

    def read() -> tuple[Report, int]:
        run = live.get("run")
        if run is None:
            return Report(), 0
        report: Report = run.report
        stats = getattr(run, "_stats", None)  # the sender's counters, live during the run
        if stats is None:
            return report, 0
        snapshot = copy.copy(report)
        snapshot.requests, snapshot.retries = stats.requests, stats.retries
        snapshot.http_429 = stats.http_429
        return snapshot, int(stats.users_sent)

    return read
