"""Commands: parses arguments, calls the library, maps errors to exit codes."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from importer import __version__
from importer.config import JobConfig, with_overrides
from importer.errors import EXIT_ABORTED, EXIT_INTERRUPTED, ImporterError
from importer.outputs.logs import JsonFormatter, configure_logging
from importer.outputs.report import format_reasons, format_summary
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


def _add_slicing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--slice", metavar="K/N", help="only customers of hash slice K of N (K: 0 to N-1)"
    )
    parser.add_argument(
        "--workers", type=_positive_int, metavar="N", help="run slices 0..N-1 as N processes"
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
    for add in (_add_input, _add_dry_run, _add_fresh, _add_full, _add_slicing):
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
    _add_slicing(validate)
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
    replay.add_argument(
        "--slice",
        metavar="K/N",
        help="the lines are slice K of N's (its state); default: as the file's name says",
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
            "slice": given("slice"),
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
    """run, validate and replay (importer.run.command)."""
    from importer.run.command import run_command  # here: `sandbox` and `init` start without it

    def overrides(job: JobConfig, args: argparse.Namespace, need_credentials: bool) -> JobConfig:
        return apply_overrides(job, args, need_credentials=need_credentials)

    def show(outcome: RunOutcome, args: argparse.Namespace, job: JobConfig, dry: bool) -> None:
        _print_outcome(outcome, args, job, validating=dry)

    return run_command(args, secrets, overrides, show, main)  # main: what a slice runs


def _verify_command(args: argparse.Namespace, secrets: Secrets) -> int:
    from importer import api, verify  # here: as `api` in _run_command
    from importer.remote import remote_view
    from importer.run.slices import slice_jobs, slicing_of

    job = api.load_job(args.job)
    secrets.update(job.secrets())
    job = apply_overrides(job, args)
    report = Path(args.report) if args.report else None
    n = slicing_of(job)  # a sliced job: the sample is drawn across its slices' states
    with contextlib.ExitStack() as stack:  # s3:// state read from a copy
        copy = stack.enter_context(remote_view(job, upload=True, report=report))
        report = copy.local_of(report)
        slices = None
        if n is not None:
            views = [remote_view(one) for one in slice_jobs(job, n, need_credentials=True)]
            slices = [stack.enter_context(view).job for view in views]
        outcome = verify.verify_job(
            copy.job, sample=args.sample, seed=args.seed, report=report, slices=slices
        )
    print(verify.format_table(outcome.comparison))
    print(f"read back at {outcome.export_limit}; report: {copy.shown(outcome.report_path)}")
    return outcome.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # --workers: the slices' base
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
        print(JsonFormatter().format(record), file=sys.stderr)
    else:
        print(f"moe-import: {prefix}{message}", file=sys.stderr)
