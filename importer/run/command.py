"""The `run`, `validate` and `replay` commands, from a parsed command line to an exit code.

The CLI (`importer.cli`) parses and reports errors; this module loads the job, applies the
command line's overrides, and runs it: in this process, as the slices of `--workers`
(`run.workers`), or as one of those slices (its report on stdout for the parent). Outputs
in object storage are local files during the run (`importer.remote`), uploaded after it.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
from collections.abc import Callable
from pathlib import Path

from importer import api
from importer.config import JobConfig
from importer.errors import EXIT_ABORTED, ImporterError
from importer.outputs.load_notify import notify_load_failure
from importer.outputs.location import object_url
from importer.outputs.report import Report
from importer.redaction import Secrets
from importer.remote import remote_outputs
from importer.remote.store import RemoteStore
from importer.run.options import RunOutcome
from importer.run.slices import check_slicing, slice_in_name
from importer.run.workers import Entry, is_worker, run_slices, worker_job

log = logging.getLogger("importer")

# How the CLI applies its flags to a loaded job, and prints a run's outcome.
Overrides = Callable[[JobConfig, argparse.Namespace, bool], JobConfig]
Printer = Callable[[RunOutcome, argparse.Namespace, JobConfig, bool], None]


def run_command(
    args: argparse.Namespace,
    secrets: Secrets,
    overrides: Overrides,
    show: Printer,
    entry: Entry,
) -> int:
    """run, validate and replay; the job's secrets go into `secrets` for the error message.
    `entry` is the CLI's main, which the slices of `--workers` run (forked)."""
    # Millions of short-lived objects, few cycles: collecting less often costs no memory
    # worth counting and saves a tenth of the mapping time. Frozen: the imported modules.
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)

    validating = args.command == "validate" or bool(getattr(args, "dry_run", False))
    replay_from = Path(args.dead_letter_in) if args.command == "replay" else None
    job = _loaded(args, validating, secrets, overrides)
    if getattr(args, "workers", None) not in (None, 1):
        return _workers(args, job, validating, show, entry)
    if is_worker():
        job = worker_job(job, need_credentials=not validating)
    job = api.prepared(
        job,
        dry_run=validating,
        replay_from=replay_from,
        dead_letter=args.dead_letter,
        report=args.report,
    )
    options = api.RunOptions(
        dry_run=validating,
        fresh=getattr(args, "fresh", False),
        full=getattr(args, "full", False),
        progress=False if args.no_progress or is_worker() else None,
        retarget=getattr(args, "retarget", False),
        progress_pipe=is_worker(),
    )
    # Through the library: metrics file and notification come with the run (importer.api);
    # s3:// outputs are local files during the run (importer.remote), uploaded after it.
    if not validating and replay_from is None:
        _check_remote_slicing(job, args, fresh=options.fresh)
    with remote_outputs(job, dry_run=validating, replay_from=replay_from) as remote:
        outcome = api.execute(
            remote.job,
            options,
            job_name=Path(args.job).stem,
            notify_url=getattr(args, "notify", None),
            replay_from=remote.replay_from,
            remote=remote,  # uploads the report (written here too) before the notification
            notifying=not is_worker(),  # the parent of the slices sends the one notification
        )
        code = write_report(outcome.report, remote.job)
    if is_worker():  # the parent prints one summary of the slices
        print(json.dumps({"report": outcome.report.to_dict()}), flush=True)
    else:
        show(outcome, args, job, validating)
    return code


def _check_remote_slicing(job: JobConfig, args: argparse.Namespace, *, fresh: bool) -> None:
    """The other-N check of a state in object storage: its objects' LastModified, before the
    run's local copy is made (a refusal is notified, as a run's would be)."""
    if object_url(job.output.state) is None:
        return  # a local state is checked as the run starts (api)
    try:
        check_slicing(job, fresh=fresh)
    except ImporterError as error:
        url = getattr(args, "notify", None)
        api.notify_end(job, False, Path(args.job).stem, url, error=error)
        raise


def _loaded(
    args: argparse.Namespace, validating: bool, secrets: Secrets, overrides: Overrides
) -> JobConfig:
    """The job file, loaded (a dry run sends nothing: no credentials needed), with the
    command line's overrides; a replay of a slice's dead letters takes that slice's state."""
    try:
        job = api.load_job(args.job, need_credentials=not validating)
    except ImporterError as error:  # exit 2 at load: the webhook the file names still hears
        if not validating:
            notify_load_failure(Path(args.job), error, getattr(args, "notify", None))
        raise
    secrets.update(job.secrets())
    if args.command == "replay" and args.slice is None and job.slice is None:
        args.slice = slice_in_name(Path(args.dead_letter_in))
    return overrides(job, args, not validating)


def _workers(
    args: argparse.Namespace, job: JobConfig, validating: bool, show: Printer, entry: Entry
) -> int:
    """`--workers N`: the slices' merged report, written, shown, and notified once (the
    slices send none)."""
    name, url = Path(args.job).stem, getattr(args, "notify", None)
    try:
        report, job = run_slices(args, job, entry, dry_run=validating)
    except Exception as error:
        api.notify_end(job, validating, name, url, error=error)
        raise
    show(RunOutcome(report), args, job, False)
    code = write_report(report, job)
    report.exit_code = code  # a report that could not be written is the command's exit 3
    api.notify_end(job, validating, name, url, report=report)
    return code


def write_report(report: Report, job: JobConfig) -> int:
    """The exit code, once the report is written (to its object, for the merged report of
    `--workers` in object storage; the slices upload their own)."""
    path = job.output.report
    url = object_url(path)
    try:
        if url is not None:
            RemoteStore(job.output.storage).put(url, report.to_json())
        else:
            report.write(path)
    except (OSError, ImporterError) as error:
        # The run itself is done and accounted for, but whoever reads the report cannot
        # tell: a fault of our own (exit 3) unless a stronger code already stands.
        log.error("cannot write the report %s: %s", url or path, getattr(error, "strerror", error))
        if report.exit_code in (0, 1):
            return EXIT_ABORTED
    return report.exit_code
