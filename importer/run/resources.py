"""A run's outputs (run lock, state store, dead-letter writer, progress), opened onto an
`AsyncExitStack` so each is closed whatever happened to the others."""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Callable, Iterator

from importer.config import JobConfig
from importer.outputs.deadletter import DeadLetterFault, DeadLetterWriter
from importer.outputs.progress import Progress
from importer.outputs.report import Report
from importer.run.preflight import (
    check_output_paths,
    dry_run_sibling,
    has_saved_progress,
    scope_of,
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
        self.job_id = ""  # the job's identity: its memory and dead-letter lines carry it

    def open(
        self,
        stack: contextlib.AsyncExitStack,
        *,
        dry_run: bool,
        use_state: bool,
        fresh: bool,
        open_state: Callable[[], RunState] | None = None,
    ) -> tuple[RunState | None, DeadLetterWriter]:
        """`open_state`: how replay opens the job's state (its own progress and the job's)."""
        job = self.job
        dead_letter_path = job.output.dead_letter
        if (
            dry_run
            and dead_letter_path.exists()
            and (has_saved_progress(job.output.state) or RunLock(job.output.state).is_held())
        ):
            # The dead-letter file belongs to a run that a rerun will resume, or that is
            # running now: a dry run must not write into it.
            dead_letter_path = dry_run_sibling(dead_letter_path)
            log.warning(
                "a run of this job can be resumed; the dry run writes its dead letters to %s",
                dead_letter_path,
            )
        check_output_paths(job, dead_letter_path, with_state=use_state)
        state: RunState | None = None
        try:
            resuming = False
            if use_state:
                lock = RunLock(job.output.state)
                lock.acquire()
                stack.callback(_release, lock)
                if open_state is not None:
                    state = open_state()
                    stack.callback(self._close_state, state)
                else:
                    scope = scope_of(job, self.job_id)
                    store = StateStore(job.output.state, scope.key, fresh=fresh)
                    stack.callback(self._close_state, store)
                    if store.claim(scope):
                        log.info("progress saved before jobs were named is now job %s's", scope.job)
                    if fresh:
                        store.reset()
                    state = store
                resuming = state.has_progress()
            writer = DeadLetterWriter(dead_letter_path, append=resuming)
            writer.origin = scope_of(job, self.job_id).origin()
            stack.callback(self._close_writer, writer)
            if writer.previous is not None:
                self.report.dead_letter_previous = str(writer.previous)
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
        return state, writer

    @contextlib.contextmanager
    def progress(self, paths: list[DataFile], enabled: bool | None) -> Iterator[Progress]:
        job = self.job
        progress = Progress(
            enabled=enabled,
            total=count_rows(paths, job.source) if paths else None,
            limit_per_minute=job.rate_limit.updates / job.rate_limit.period_seconds * 60,
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


def _release(lock: RunLock) -> None:
    with contextlib.suppress(OSError):
        lock.release()
