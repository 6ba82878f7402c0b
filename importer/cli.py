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
from importer.config import JobConfig, load_job, redact, with_overrides
from importer.errors import EXIT_ABORTED, EXIT_INTERRUPTED, ImporterError
from importer.outputs.report import dry_run_report_path, format_reasons, format_summary

log = logging.getLogger("importer")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _add_run_options(parser: argparse.ArgumentParser, *, dry_run_flag: bool) -> None:
    parser.add_argument("job", help="the job file (YAML)")
    parser.add_argument("--input", help="input file, directory or glob (overrides source.path)")
    if dry_run_flag:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="map, validate and build every request; send nothing",
        )
    parser.add_argument("--fresh", action="store_true", help="ignore saved progress and start over")
    parser.add_argument(
        "--full",
        action="store_true",
        help="with sync.mode changed: send every valid row anyway, and refresh the snapshot",
    )
    parser.add_argument("--base-url", help="API base URL (overrides api.base_url / data_center)")
    parser.add_argument(
        "--rate", type=_positive_int, help="user updates per period (rate_limit.updates)"
    )
    parser.add_argument("--period", type=float, help="rate limit period in seconds")
    parser.add_argument("--concurrency", type=_positive_int, help="requests in flight")
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
    parser.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow Basic auth over plain http:// to a host that is not this machine",
    )


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moe-import",
        description="Load user profiles from CSV and Parquet into MoEngage, within the rate limit.",
    )
    parser.add_argument("--version", action="version", version=f"moe-import {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="import a job's input")
    _add_run_options(run, dry_run_flag=True)
    validate = commands.add_parser("validate", help="the same as run --dry-run")
    _add_run_options(validate, dry_run_flag=False)
    replay = commands.add_parser("replay", help="send the rows of a dead-letter file again")
    _add_run_options(replay, dry_run_flag=True)
    replay.add_argument(
        "dead_letter_in", metavar="DEAD_LETTER.jsonl", help="the dead-letter file to replay"
    )
    replay.add_argument(
        "--retarget",
        action="store_true",
        help="send lines of another job or workspace to this job's workspace (else refused)",
    )
    for command in (run, replay):
        command.add_argument(
            "--notify",
            metavar="URL",
            help="POST a JSON summary here when the run ends (Slack-webhook compatible)",
        )

    init = commands.add_parser("init", help="print a job file skeleton for an input")
    init.add_argument("input", help="a CSV or Parquet file, a directory, a glob or an s3:// prefix")
    init.add_argument(
        "--events",
        action="store_true",
        help="propose an events job (import: events); automatic when the input has an"
        " event-name and a timestamp column",
    )

    status = commands.add_parser("status", help="what a job's memory holds (no credentials)")
    status.add_argument("job", metavar="JOB.yaml", help="the job file")
    status.add_argument("--json", action="store_true", help="print it as JSON")

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
    """Command-line options win over the job file, and are checked like it."""
    return with_overrides(
        job,
        {
            "api": {
                "base_url": args.base_url,
                "allow_insecure_http": True if args.allow_insecure_http else None,
            },
            "rate_limit": {"updates": args.rate, "period_seconds": args.period},
            "delivery": {"concurrency": args.concurrency},
            "source": {"path": args.input},
            "output": {
                "dead_letter": args.dead_letter,
                "report": args.report,
                "state": args.state,
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
    outcome: Any, args: argparse.Namespace, job: JobConfig, *, validating: bool
) -> None:
    report = outcome.report
    if args.log_format == "json":
        print(json.dumps(report.to_dict()))
        return
    if validating:
        from importer.run.preflight import mapper_for

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


def _run_command(args: argparse.Namespace) -> int:
    from importer import api
    from importer.run import replay
    from importer.state.identity import job_identity

    # Millions of short-lived objects, few cycles: collecting less often costs no memory
    # worth counting and saves a tenth of the mapping time. Frozen: the imported modules.
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)

    validating = args.command == "validate" or bool(getattr(args, "dry_run", False))
    if args.command == "replay":
        # A replay writes beside its input unless told otherwise, never over the job's files.
        dead_letter, report = replay.replay_paths(Path(args.dead_letter_in))
        args.dead_letter = args.dead_letter or str(dead_letter)
        args.report = args.report or str(report)
    # A dry run sends nothing, so it needs no credentials.
    job = apply_overrides(
        load_job(args.job, need_credentials=not validating),
        args,
        need_credentials=not validating,
    )
    if validating:
        # Beside the real report, never over it: a real run's counts survive a validate.
        dry_report = str(dry_run_report_path(job.output.report))
        job = with_overrides(
            job, {"output": {"report": dry_report}}, need_credentials=not validating
        )
    else:
        from importer.run.transport import check_plain_http

        check_plain_http(job.api.resolved_base_url(), job.api.allow_insecure_http)
    options = api.RunOptions(
        dry_run=validating,
        fresh=args.fresh,
        full=args.full,
        progress=False if args.no_progress else None,
        retarget=getattr(args, "retarget", False),
        job=job_identity(args.job, job),
    )
    # Through the library: metrics file and notification come with the run (importer.api).
    outcome = api.execute(
        job,
        options,
        job_name=Path(args.job).stem,
        notify_url=getattr(args, "notify", None),
        replay_from=Path(args.dead_letter_in) if args.command == "replay" else None,
    )
    _print_outcome(outcome, args, job, validating=validating)
    try:
        outcome.report.write(job.output.report)
    except OSError as error:
        # The run itself is done and accounted for, but whoever reads the report cannot
        # tell: a fault of our own (exit 3) unless a stronger code already stands.
        log.error("cannot write the report %s: %s", job.output.report, error.strerror)
        if outcome.report.exit_code in (0, 1):
            return EXIT_ABORTED
    return outcome.report.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "log_format", "text"))
    try:
        if args.command == "sandbox":
            from importer import sandbox

            return sandbox.run_from_args(args)
        if args.command == "status":
            from importer.run.status import status_command

            return status_command(args.job, as_json=args.json)
        if args.command == "init":
            from importer.init.scaffold import scaffold_job

            sys.stdout.write(scaffold_job(args.input, events=args.events))
            return 0
        return _run_command(args)
    except ImporterError as error:  # bad usage (2), or our own files failed us (3)
        _fatal(str(error), args)
        return error.exit_code
    except KeyboardInterrupt:
        _fatal("interrupted", args, prefix="")
        return EXIT_INTERRUPTED
    except OSError as error:
        _fatal(str(error), args)
        return EXIT_ABORTED
    except Exception as error:  # a fault we did not foresee: say so plainly, exit as aborted
        log.debug("unexpected error", exc_info=True)
        _fatal(f"unexpected {type(error).__name__}: {error}", args)
        return EXIT_ABORTED


def _fatal(message: str, args: argparse.Namespace, prefix: str = "error: ") -> None:
    """The error that ends the run, on stderr: a JSON line with --log-format json."""
    message = redact(message)
    if getattr(args, "log_format", "text") == "json":
        record = logging.LogRecord("importer", logging.ERROR, "", 0, message, None, None)
        print(_JsonFormatter().format(record), file=sys.stderr)
    else:
        print(f"moe-import: {prefix}{message}", file=sys.stderr)
