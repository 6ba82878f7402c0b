"""`run --workers N`: slices 0..N-1 of N as processes of one command.

Each slice is this command line with `--slice K/N` (its own state, dead letters and
report: X.slice-K-of-N.*), run by a process forked from the parent: it starts with the
parent's modules already imported (a second of CPU a slice saved, and as much of the wall
time before it reads a row), before the parent has started a thread or an event loop. It
runs in a session of its own so that a Ctrl-C reaches the parent alone, which passes one
stop on to each slice (a second Ctrl-C, a second stop: at once). The slices share the
job's quota: `rate_limit.shared` when the job sets it, else the local ledger (quota.local),
put in by the slice itself (`WORKER_ENV`). A slice writes JSON lines on stdout:
`{"settled": n}` as rows settle, `{"report": {...}}` at its end; its log lines go to the
parent's stderr as they are.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any, NoReturn

from importer import api
from importer.config import ConfigError, JobConfig, with_overrides
from importer.errors import EXIT_ABORTED, EXIT_INTERRUPTED
from importer.outputs.merged import merge_reports
from importer.outputs.progress import Progress
from importer.outputs.report import Report
from importer.run.preflight import new_run_id, prepare
from importer.run.slices import check_slicing, sliced_outputs
from importer.sources import DataFile, count_rows

log = logging.getLogger("importer")

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
    """The arguments of slice k: the parent's, less its own options, plus --slice."""
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
    return [*kept, "--slice", f"{k}/{n}", "--no-progress"]


# The CLI's entry point (`importer.cli.main`), which a forked slice runs with its arguments.
Entry = Callable[[Sequence[str]], int]


class _Forked:
    """A slice forked from this process: what the parent needs of it (a Popen's poll,
    returncode, send_signal and stdout), and the CPU it used once it ended."""

    def __init__(self, pid: int, stdout: IO[str]) -> None:
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None
        self.cpu_seconds = 0.0

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                self.cpu_seconds = usage.ru_utime + usage.ru_stime
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)


def fork_slice(argv: Sequence[str], entry: Entry) -> _Forked:
    """Slice `argv` in a forked process: its stdout a pipe to the parent, its stdin
    /dev/null, its stderr the parent's, its signals its own again."""
    read_end, write_end = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # nothing the parent has not written yet is written twice
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the slice; its outcome is what the tests check)
        os.close(read_end)
        _be_the_slice(argv, entry, write_end)
    os.close(write_end)
    return _Forked(pid, os.fdopen(read_end, "r", encoding="utf-8"))


def _be_the_slice(argv: Sequence[str], entry: Entry, stdout: int) -> NoReturn:
    code = EXIT_ABORTED
    try:
        os.setsid()  # a terminal's Ctrl-C reaches the parent alone
        os.dup2(stdout, 1)
        os.close(stdout)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.environ[WORKER_ENV] = "1"
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        code = entry(list(argv))
    except SystemExit as error:  # argparse's refusals
        code = error.code if isinstance(error.code, int) else EXIT_ABORTED
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


@dataclass
class _Slice:
    name: str
    process: _Forked
    settled: int = 0
    report: dict[str, Any] | None = None
    reader: threading.Thread | None = None
    errors: list[str] = field(default_factory=list)


def run_slices(
    args: argparse.Namespace, job: JobConfig, entry: Entry, *, dry_run: bool
) -> tuple[Report, JobConfig]:
    """`--workers N` from the command line: refusals said once, the input checked once,
    then the slices; the merged report, and the job as prepared (its report path)."""
    workers = int(args.workers)
    check_workers(job, workers, fresh=bool(getattr(args, "fresh", False)), dry_run=dry_run)
    job = api.prepared(job, dry_run=dry_run, dead_letter=args.dead_letter, report=args.report)
    paths, _ = prepare(job)  # the input and its columns checked once, before any slice
    progress = False if args.no_progress else None
    report = run_workers(args.argv, job, workers, paths, progress, entry)
    report.dry_run = dry_run
    return report, job


def run_workers(
    argv: Sequence[str],
    job: JobConfig,
    workers: int,
    paths: list[DataFile],
    progress: bool | None,
    entry: Entry,
) -> Report:
    """Run the slices, show one bar, and give back their merged report."""
    started = time.monotonic()
    slices: list[_Slice] = []
    with _forwarding_stops(slices) as stopped:
        # Every slice is forked before the parent starts a thread (a forked child has only
        # the thread that forked it: a lock another thread held would stay held in it).
        for k in range(workers):
            process = fork_slice(child_argv(argv, k, workers), entry)
            slices.append(_Slice(f"{k}/{workers}", process))
            for _ in stopped:  # a stop that came while the slices were starting
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for one in slices:
            one.reader = threading.Thread(target=_read, args=(one,), daemon=True)
            one.reader.start()
        _watch(slices, job, paths, progress)
    log.info(
        "slices: %s",
        ", ".join(
            f"{one.name} exit {one.process.returncode} ({one.process.cpu_seconds:.1f} s CPU)"
            for one in slices
        ),
    )
    merged = merge_reports(
        [(one.name, _code(one.process), one.report) for one in slices],
        time.monotonic() - started,
        new_run_id(),
    )
    if stopped:
        merged.exit_code = EXIT_INTERRUPTED
    return merged


def _code(process: _Forked) -> int:
    return EXIT_ABORTED if process.returncode is None else process.returncode


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
