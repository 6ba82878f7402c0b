"""`run --workers N`: slices 0..N-1 of N as processes of one command.

Each slice is `python -m importer` with `--slice K/N` (its own state, dead letters and
report: X.slice-K-of-N.*), started in a session of its own so that a Ctrl-C reaches the
parent alone, which passes one stop on to each slice (a second Ctrl-C, a second stop: at
once). The slices share the job's quota: `rate_limit.shared` when the job sets it, else
the local ledger (quota.local), put in by the slice itself (`WORKER_ENV`). A slice writes
JSON lines on stdout: `{"settled": n}` as rows settle, `{"report": {...}}` at its end;
its log lines go to the parent's stderr as they are.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any

from importer import api
from importer.config import ConfigError, JobConfig, with_overrides
from importer.errors import EXIT_INTERRUPTED
from importer.outputs.merged import merge_reports
from importer.outputs.progress import Progress
from importer.outputs.report import Report
from importer.run.preflight import new_run_id, prepare
from importer.run.slices import check_slicing, sliced_outputs
from importer.sources import DataFile, count_rows

# Set in a slice's environment by its parent: report on stdout, share the local quota.
WORKER_ENV = "MOE_IMPORT_WORKER"
# Options the parent keeps to itself: the slices get --slice and report to it instead.
_PARENT_ONLY = ("--workers", "--notify")
_PARENT_FLAGS = ("--no-progress",)


def is_worker() -> bool:
    return os.environ.get(WORKER_ENV) == "1"


def worker_job(job: JobConfig, *, need_credentials: bool) -> JobConfig:
    """A slice's job: with no `rate_limit.shared`, the slices share the local ledger."""
    if job.rate_limit.shared is not None:
        return job
    shared = {"rate_limit": {"shared": {"backend": "local"}}}
    return with_overrides(job, shared, need_credentials=need_credentials)


def check_workers(job: JobConfig, workers: int, *, fresh: bool, dry_run: bool) -> None:
    """Refusals before any slice starts (exit 2), said once rather than by each slice."""
    if job.slice is not None:
        raise ConfigError(
            f"--workers runs slices 0..{workers - 1} of {workers}: it cannot be combined with"
            f" slice {job.slice} (from --slice or the job's slice:)"
        )
    if job.mapping.customer_id is None:
        raise ConfigError(
            "--workers: an Identity Resolution job (no mapping.customer_id) cannot be split:"
            " slices are made by the hash of customer_id"
        )
    if dry_run:
        return
    for k in range(workers):
        one = with_overrides(job, {"slice": f"{k}/{workers}"}, need_credentials=False)
        check_slicing(
            with_overrides(one, {"output": sliced_outputs(one)}, need_credentials=False),
            fresh=fresh,
        )


def child_argv(argv: Sequence[str], k: int, n: int) -> list[str]:
    """The command line of slice k: the parent's, less its own options, plus --slice."""
    kept: list[str] = []
    words = iter(argv)
    for word in words:
        name = word.split("=", 1)[0]
        if name in _PARENT_ONLY:
            if "=" not in word:
                next(words, None)
            continue
        if name in _PARENT_FLAGS:
            continue
        kept.append(word)
    return [sys.executable, "-m", "importer", *kept, "--slice", f"{k}/{n}", "--no-progress"]


@dataclass
class _Slice:
    name: str
    process: subprocess.Popen[str]
    settled: int = 0
    report: dict[str, Any] | None = None
    reader: threading.Thread | None = None
    errors: list[str] = field(default_factory=list)


def run_slices(
    args: argparse.Namespace, job: JobConfig, *, dry_run: bool
) -> tuple[Report, JobConfig]:
    """`--workers N` from the command line: refusals said once, the input checked once,
    then the slices; the merged report, and the job as prepared (its report path)."""
    workers = int(args.workers)
    check_workers(job, workers, fresh=bool(getattr(args, "fresh", False)), dry_run=dry_run)
    job = api.prepared(job, dry_run=dry_run, dead_letter=args.dead_letter, report=args.report)
    paths, _ = prepare(job)  # the input and its columns checked once, before any slice
    progress = False if args.no_progress else None
    report = run_workers(args.argv, job, workers, paths, progress)
    report.dry_run = dry_run
    return report, job


def run_workers(
    argv: Sequence[str], job: JobConfig, workers: int, paths: list[DataFile], progress: bool | None
) -> Report:
    """Run the slices, show one bar, and give back their merged report."""
    started = time.monotonic()
    env = {**os.environ, WORKER_ENV: "1"}
    slices: list[_Slice] = []
    with _forwarding_stops(slices) as stopped:
        for k in range(workers):
            process = subprocess.Popen(
                child_argv(argv, k, workers),
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env,
                start_new_session=True,  # a terminal's Ctrl-C reaches the parent alone
            )
            one = _Slice(f"{k}/{workers}", process)
            one.reader = threading.Thread(target=_read, args=(one,), daemon=True)
            one.reader.start()
            slices.append(one)
            for _ in stopped:  # a stop that came while the slices were starting
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        _watch(slices, job, paths, progress)
    merged = merge_reports(
        [(one.name, one.process.returncode, one.report) for one in slices],
        time.monotonic() - started,
        new_run_id(),
    )
    if stopped:
        merged.exit_code = EXIT_INTERRUPTED
    return merged


def _read(one: _Slice) -> None:
    stream: IO[str] | None = one.process.stdout
    assert stream is not None
    for line in stream:
        try:
            message = json.loads(line)
        except ValueError:
            continue  # not ours: nothing a slice prints otherwise
        if isinstance(message, dict) and "settled" in message:
            one.settled = int(message["settled"])
        elif isinstance(message, dict) and "report" in message:
            one.report = message["report"]


def _watch(
    slices: list[_Slice], job: JobConfig, paths: list[DataFile], progress: bool | None
) -> None:
    bar = Progress(
        enabled=progress,
        total=count_rows(paths, job.source) if paths else None,
        limit_per_minute=job.rate_limit.updates / job.rate_limit.period_seconds * 60,
    )
    shown = 0
    try:
        while True:
            done = all(one.process.poll() is not None for one in slices)
            settled = sum(one.settled for one in slices)
            if settled > shown:
                bar.advance(settled - shown)
                shown = settled
            else:
                bar.tick()
            if done:
                break
            time.sleep(0.2)
        for one in slices:
            if one.reader is not None:
                one.reader.join(timeout=10)
    finally:
        bar.close()


@contextlib.contextmanager
def _forwarding_stops(slices: list[_Slice]) -> Iterator[list[int]]:
    """SIGINT / SIGTERM to the parent: each is passed on to every slice (the first stops
    them gently, a second at once); the list holds the signals seen."""
    seen: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        seen.append(signum)
        for one in slices:
            if one.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    one.process.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield seen
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
