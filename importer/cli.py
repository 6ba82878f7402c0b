"""Commands: parses arguments, calls the library, maps errors to exit codes."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from importer import __version__
from importer.config import JobConfig, with_overrides
from importer.errors import EXIT_ABORTED, EXIT_INTERRUPTED, ImporterError
from importer.outputs.load_notify import notify_load_failure
from importer.outputs.report import Report, format_reasons, format_summary
from importer.redaction import Secrets
from importer.run.options import RunOutcome

log = logging.getLogger("importer")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


# Each command takes the options it uses, built from these groups (validate and replay
# take run's options where they apply). A dry run sends nothing: the pace of sending
# (--period, --concurrency), --allow-insecure-http and --fresh (it keeps no progress) do not
# apply to it; a replay reads no source (--input) and compares with no snapshot (--full).


def _add_input(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", help="input file, directory or glob (overrides source.path)")


def _add_dry_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run", action="store_true", help="map, validate and build every request; send nothing"
    )


def _add_fresh(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fresh", action="store_true", help="ignore saved progress and start over")


def _add_full(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--full",
        action="store_true",
        help="with sync.mode changed: send every valid row anyway, and refresh the snapshot",
    )


def _add_target(parser: argparse.ArgumentParser, *, sending: bool) -> None:
    parser.add_argument("--base-url", help="API base URL (overrides api.base_url / data_center)")
    parser.add_argument(
        "--rate", type=_positive_int, help="user updates per period (rate_limit.updates)"
    )
    if sending:
        parser.add_argument("--period", type=float, help="rate limit period in seconds")
        parser.add_argument("--concurrency", type=_positive_int, help="requests in flight")


def _add_outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dead-letter", help="dead-letter file (overrides output.dead_letter)")
    parser.add_argument("--report", help="report file (overrides output.report)")
    parser.add_argument("--state", help="progress file (overrides output.state)")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar or progress lines"
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: log lines and errors as JSON lines, the summary as the report's JSON",
    )


def _add_insecure_http(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow Basic auth over plain http:// to a host that is not this machine",
    )


def _add_notify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--notify",
        metavar="URL",
        help="POST a JSON summary here when the run ends (Slack-webhook compatible)",
    )


def _add_run(commands: Any) -> None:
    run = commands.add_parser("run", help="import a job's input")
    run.add_argument("job", help="the job file (YAML)")
    for add in (_add_input, _add_dry_run, _add_fresh, _add_full):
        add(run)
    _add_target(run, sending=True)
    _add_outputs(run)
    _add_insecure_http(run)
    _add_notify(run)


def _add_validate(commands: Any) -> None:
    validate = commands.add_parser("validate", help="the same as run --dry-run")
    validate.add_argument("job", help="the job file (YAML)")
    _add_input(validate)
    _add_full(validate)
    _add_target(validate, sending=False)
    _add_outputs(validate)


def _add_replay(commands: Any) -> None:
    replay = commands.add_parser("replay", help="send the rows of a dead-letter file again")
    replay.add_argument("job", help="the job file (YAML)")
    _add_dry_run(replay)
    _add_fresh(replay)
    _add_target(replay, sending=True)
    _add_outputs(replay)
    _add_insecure_http(replay)
    replay.add_argument(
        "dead_letter_in", metavar="DEAD_LETTER.jsonl", help="the dead-letter file to replay"
    )
    replay.add_argument(
        "--retarget",
        action="store_true",
        help="send lines of another job or workspace to this job's workspace (else refused)",
    )
    _add_notify(replay)


def _add_init(commands: Any) -> None:
    init = commands.add_parser("init", help="print a job file skeleton for an input")
    init.add_argument("input", help="a CSV or Parquet file, a directory, a glob or an s3:// prefix")
    init.add_argument(
        "--events",
        action="store_true",
        help="propose an events job (import: events); automatic when the input has an"
        " event-name and a timestamp column",
    )


def _add_status(commands: Any) -> None:
    status = commands.add_parser("status", help="what a job's memory holds (no credentials)")
    status.add_argument("job", metavar="JOB.yaml", help="the job file")
    status.add_argument("--json", action="store_true", help="print it as JSON")


def _add_verify(commands: Any) -> None:
    verify = commands.add_parser(
        "verify", help="read back a sample of the job's customers and compare with the input"
    )
    verify.add_argument("job", help="the job file (YAML)")
    verify.add_argument(
        "--sample", type=_positive_int, default=100, help="customers to check (default 100)"
    )
    verify.add_argument("--seed", type=int, default=0, help="picks the sample (default 0)")
    verify.add_argument("--report", help="where the JSON report goes (default: X.verify.json)")
    _add_input(verify)
    verify.add_argument("--base-url", help="API base URL (overrides api.base_url / data_center)")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moe-import",
        description="Load user profiles from CSV and Parquet into MoEngage, within the rate limit.",
    )
    parser.add_argument("--version", action="version", version=f"moe-import {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_run, _add_validate, _add_replay, _add_init, _add_status, _add_verify):
        add(commands)
    serve = commands.add_parser("sandbox", help="run the MoEngage-compatible server on loopback")
    words = sys.argv[1:] if argv is None else argv
    if "sandbox" in words:
        # Only then: the server's options pull in aiohttp.web, which other commands do without.
        from importer import sandbox

        sandbox.add_arguments(serve)
    return parser


def apply_overrides(
    job: JobConfig, args: argparse.Namespace, *, need_credentials: bool = True
) -> JobConfig:
    """Command-line options win over the job file, and are checked like it.

    A command without an option (validate has no --period) leaves the job's value. A dry
    run's --dead-letter / --report are its own files, not the job's: `api.prepared` puts
    them in, knowing the real ones."""
    dry_run = args.command == "validate" or bool(getattr(args, "dry_run", False))

    def given(name: str) -> Any:
        if dry_run and name in ("dead_letter", "report"):
            return None
        return getattr(args, name, None)

    return with_overrides(
        job,
        {
            "api": {
                "base_url": given("base_url"),
                "allow_insecure_http": True if given("allow_insecure_http") else None,
            },
            "rate_limit": {"updates": given("rate"), "period_seconds": given("period")},
            "delivery": {"concurrency": given("concurrency")},
            "source": {"path": given("input")},
            "output": {
                "dead_letter": given("dead_letter"),
                "report": given("report"),
                "state": given("state"),
            },
        },
        need_credentials=need_credentials,
    )


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(
            {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
                "level": record.levelname.lower(),
                "message": record.getMessage(),
            }
        ).decode()


def configure_logging(log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("moe-import: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def _print_outcome(
    outcome: RunOutcome, args: argparse.Namespace, job: JobConfig, *, validating: bool
) -> None:
    report = outcome.report
    if args.log_format == "json":
        print(json.dumps(report.to_dict()))
        return
    if validating:
        from importer.run.preflight import mapper_for  # here: as `api` above (no cycle)

        print("attributes:")
        for attribute, column, kind in mapper_for(job).describe():
            print(f"  {attribute:<30} <- {column:<30} {kind}")
        reasons = format_reasons(report.invalid_reasons)
        if reasons:
            print(reasons)
        if outcome.samples:
            print(f"sample of {len(outcome.samples)} built elements:")
            for element in outcome.samples:
                print("  " + orjson.dumps(element).decode())
    print(format_summary(report))


def _run_command(args: argparse.Namespace, secrets: Secrets) -> int:
    """run, validate and replay; the job's secrets go into `secrets` for the error message."""
    from importer import api  # here: `sandbox` and `init` start without the run's modules
    from importer.remote import remote_outputs  # here: as `api`

    # Millions of short-lived objects, few cycles: collecting less often costs no memory
    # worth counting and saves a tenth of the mapping time. Frozen: the imported modules.
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)

    validating = args.command == "validate" or bool(getattr(args, "dry_run", False))
    replay_from = Path(args.dead_letter_in) if args.command == "replay" else None
    # A dry run sends nothing, so it needs no credentials.
    try:
        job = api.load_job(args.job, need_credentials=not validating)
    except ImporterError as error:  # exit 2 at load: the webhook the file names still hears
        if not validating:
            notify_load_failure(Path(args.job), error, getattr(args, "notify", None))
        raise
    secrets.update(job.secrets())
    job = apply_overrides(job, args, need_credentials=not validating)
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
        progress=False if args.no_progress else None,
        retarget=getattr(args, "retarget", False),
    )
    # Through the library: metrics file and notification come with the run (importer.api);
    # s3:// outputs are local files during the run (importer.remote), uploaded after it.
    with remote_outputs(job, dry_run=validating, replay_from=replay_from) as remote:
        outcome = api.execute(
            remote.job,
            options,
            job_name=Path(args.job).stem,
            notify_url=getattr(args, "notify", None),
            replay_from=remote.replay_from,
            remote=remote,  # uploads the report (written here too) before the notification
        )
        code = _write_report(outcome.report, remote.job.output.report)
    _print_outcome(outcome, args, job, validating=validating)
    return code


def _verify_command(args: argparse.Namespace, secrets: Secrets) -> int:
    from importer import api, remote, verify  # here: as `api` in _run_command

    job = api.load_job(args.job)
    secrets.update(job.secrets())
    job = apply_overrides(job, args)
    report = Path(args.report) if args.report else None
    with remote.remote_view(job, upload=True, report=report) as copy:  # s3:// read from a copy
        report = copy.local_of(report)
        outcome = verify.verify_job(copy.job, sample=args.sample, seed=args.seed, report=report)
    print(verify.format_table(outcome.comparison))
    print(f"read back at {outcome.export_limit}; report: {copy.shown(outcome.report_path)}")
    return outcome.exit_code


def _write_report(report: Report, path: Path) -> int:
    """The exit code, once the report is written."""
    try:
        report.write(path)
    except OSError as error:
        # The run itself is done and accounted for, but whoever reads the report cannot
        # tell: a fault of our own (exit 3) unless a stronger code already stands.
        log.error("cannot write the report %s: %s", path, error.strerror)
        if report.exit_code in (0, 1):
            return EXIT_ABORTED
    return report.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "log_format", "text"))
    secrets = Secrets()
    try:
        if args.command == "sandbox":
            from importer import sandbox  # here: its aiohttp.web only for this command

            return sandbox.run_from_args(args)
        if args.command == "init":
            from importer.init.scaffold import scaffold_job  # here: the run starts without it

            sys.stdout.write(scaffold_job(args.input, events=args.events))
            return 0
        if args.command == "status":
            from importer.run.status import status_command  # here: as `api` (no run modules)

            return status_command(args.job, as_json=args.json)
        if args.command == "verify":
            return _verify_command(args, secrets)
        return _run_command(args, secrets)
    except ImporterError as error:  # bad usage (2), or our own files failed us (3)
        _fatal(secrets.scrub(str(error)), args)
        return error.exit_code
    except KeyboardInterrupt:
        _fatal("interrupted", args, prefix="")
        return EXIT_INTERRUPTED
    except OSError as error:
        _fatal(secrets.scrub(str(error)), args)
        return EXIT_ABORTED
    except Exception as error:  # a fault we did not foresee: say so plainly, exit as aborted
        log.debug("unexpected error", exc_info=True)
        _fatal(secrets.scrub(f"unexpected {type(error).__name__}: {error}"), args)
        return EXIT_ABORTED


def _fatal(message: str, args: argparse.Namespace, prefix: str = "error: ") -> None:
    """The error that ends the run, on stderr (scrubbed by the caller): a JSON line with
    --log-format json."""
    if getattr(args, "log_format", "text") == "json":
        record = logging.LogRecord("importer", logging.ERROR, "", 0, message, None, None)
        print(_JsonFormatter().format(record), file=sys.stderr)
    else:
        print(f"moe-import: {prefix}{message}", file=sys.stderr)
