"""A run's outputs (run lock, state store, dead-letter writer, progress), opened onto an
`AsyncExitStack` so each is closed whatever happened to the others."""

from __future__ import annotations

import contextlib
import errno
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from importer.config import JobConfig
from importer.outputs.deadletter import DeadLetterFault, DeadLetterWriter
from importer.outputs.ownership import claim
from importer.outputs.progress import Progress
from importer.outputs.report import Report
from importer.rows import RowCount
from importer.run.carry_over import carry_over
from importer.run.first_sync import check_first_sync
from importer.run.preflight import (
    check_output_paths,
    is_dry_run_file,
    scope_of,
    vet_job_outputs,
)
from importer.sources import DataFile, count_rows
from importer.state import RunLock, RunState, StateError, StateFault, StateStore

log = logging.getLogger("importer")

# Errors writing our own files that are the machine's, not the job file's (exit 3, not 2).
_DISK_FAULTS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EIO, errno.EDQUOT, errno.EROFS})


class OpenAborted(Exception):
    """Opening the outputs failed in a way that stops the run (already reported, exit 3)."""


class RunOutputs:
    """Opens the outputs of one run; a failure to close one is exit 3, no traceback.

    `abort` records a fault of our own (exit 3); `healthy` says whether the state store
    may still be compacted on the way out (not after a failed write)."""

    def __init__(
        self,
        job: JobConfig,
        report: Report,
        abort: Callable[[str], None],
        healthy: Callable[[], bool],
    ) -> None:
        self.job = job
        self.report = report
        self.abort = abort
        self.healthy = healthy
        self.job_id: str | None = None  # the job's identity (None: its job file's)

    def open(
        self,
        stack: contextlib.AsyncExitStack,
        *,
        dry_run: bool,
        use_state: bool,
        fresh: bool,
        inputs: Sequence[Path] = (),
        open_state: Callable[[], RunState] | None = None,
    ) -> tuple[RunState | None, DeadLetterWriter]:
        """`open_state`: how replay opens the job's state (its own progress and the job's).

        Before anything is opened, the output paths are vetted (none is an input, the job
        file, another output, a file of another kind or another job's: exit 2); a dry run
        writes only its own files (see `importer.api.prepared`) and no ownership mark."""
        job = self.job
        dead_letter_path = job.output.dead_letter
        check_output_paths(job, dead_letter_path, with_state=use_state)
        vet_job_outputs(job, inputs, dry_run=dry_run)
        state: RunState | None = None
        try:
            resuming = False
            if use_state:
                state = self._open_state(stack, fresh, open_state)
                resuming = state.has_progress()
            # A dry run's own file is rewritten; a real one is kept, renamed (see deadletter).
            rewrite = dry_run and is_dry_run_file(dead_letter_path)
            writer = DeadLetterWriter(dead_letter_path, append=resuming, rewrite=rewrite)
            writer.origin = scope_of(job, self.job_id).origin()
            stack.callback(self._close_writer, writer)
            if writer.previous is not None:
                self.report.dead_letter_previous = str(writer.previous)
            if not dry_run:
                claim_outputs(job)
        except StateFault as fault:
            # Ours to fix (another process holds the database), not the input's: exit 3.
            self.abort(str(fault))
            raise OpenAborted from None
        except OSError as error:
            message = f"cannot open {error.filename or 'an output file'}: {error.strerror}"
            if error.errno in _DISK_FAULTS:  # a fault of our own: rerun once fixed
                self.abort(message)
                raise OpenAborted from None
            # Output paths are the user's to fix, and nothing has been sent yet.
            raise StateError(message) from None
        self.report.dead_letter = str(dead_letter_path)
        self.report.state = None if state is None else str(job.output.state)
        if open_state is None:
            self._say_first_sync()
        return state, writer

    def _open_state(
        self,
        stack: contextlib.AsyncExitStack,
        fresh: bool,
        open_state: Callable[[], RunState] | None,
    ) -> RunState:
        """The run lock, then the state (an old default one carried over first)."""
        job = self.job
        lock = RunLock(job.output.state)
        lock.acquire()
        stack.callback(_release, lock)
        if open_state is not None:
            state = open_state()
            stack.callback(self._close_state, state)
            return state
        carry_over(job)
        scope = scope_of(job, self.job_id)
        store = StateStore(job.output.state, scope.key, fresh=fresh)
        stack.callback(self._close_state, store)
        if store.claim(scope):
            log.info("progress saved before jobs were named is now job %s's", scope.job)
        if fresh:
            store.reset()
        return store

    def _say_first_sync(self) -> None:
        """A changed-mode run with no snapshot says so before sending (log, report)."""
        first = check_first_sync(self.job)
        if first is None:
            return
        self.report.first_sync = True
        for note in first.notes():
            log.warning("%s", note)
            self.report.warn(note)

    @contextlib.contextmanager
    def progress(
        self, paths: list[DataFile], enabled: bool | None, pipe: bool = False
    ) -> Iterator[Progress]:
        job = self.job
        total = count_rows(paths, job.source) if paths else None
        slicing = job.slice_parts()
        if slicing is not None and total is not None:  # a slice settles about 1/N of the rows
            total = RowCount(total.rows // slicing[1], exact=False)
        progress = Progress(
            enabled=enabled,
            total=total,
            limit_per_minute=job.rate_limit.updates / job.rate_limit.period_seconds * 60,
            pipe=sys.stdout if pipe else None,
        )
        try:
            yield progress
        finally:
            progress.close()
            self.report.wait_seconds = progress.wait_seconds()

    def _close_writer(self, writer: DeadLetterWriter) -> None:
        try:
            writer.close()
        except DeadLetterFault as fault:
            self.abort(str(fault))

    def _close_state(self, state: RunState) -> None:
        if self.healthy():  # a failing database is left alone
            with contextlib.suppress(StateFault):
                state.compact()
        try:
            state.close()
        except StateFault as fault:
            self.abort(str(fault))


def claim_outputs(job: JobConfig) -> None:
    """Mark the report and dead-letter file as this job's (a real run)."""
    claim(job.output.report, job)
    claim(job.output.dead_letter, job)


def _release(lock: RunLock) -> None:
    with contextlib.suppress(OSError):
        lock.release()
