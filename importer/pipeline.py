"""Wires the stages: source -> mapping -> batches -> rate limit -> delivery -> outcome.

The loop that settles rows lives here once (`Settler`): a row is accepted when the
request holding it got a 2xx, or written to the dead-letter file (flushed) before it is
marked settled in the state store, so a crash at any point loses nothing. A failure of
those writes (disk full, database locked) stops the run at once (exit 3), never hangs it.
Rows of one customer are sent in file order (see `ordering`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import secrets
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from importer import batching, ordering, quota, sources
from importer.config import ConfigError, JobConfig
from importer.deadletter import DeadLetter, DeadLetterFault, DeadLetterWriter
from importer.events import EventMapper, is_event
from importer.mapping import Mapper
from importer.moengage import BULK_PREFIX, BULK_SUFFIX
from importer.progress import Progress
from importer.report import EXIT_OK, Report, count_reasons, report_tmp
from importer.rows import Chunk, InvalidRow, MappedChunk, Row, ValidRows
from importer.sources import SourceError
from importer.state import (
    RunLock,
    SettledRows,
    StateError,
    StateFault,
    StateStore,
    progress_scope,
    refuse_symlink,
)

if TYPE_CHECKING:
    from importer.delivery import Refusal

log = logging.getLogger("importer")

# Chunks mapped at once: the arrow kernels release the GIL, so two threads use two cores.
MAPPING_THREADS = 2

# Requests per period at the least: smaller batches keep pacing smooth under a small limit.
MIN_REQUESTS_PER_PERIOD = 20


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    fresh: bool = False
    progress: bool | None = None  # None: a bar on a terminal, log lines otherwise
    sample_size: int = 3


@dataclass(slots=True)
class Batch:
    """The rows of one request, and the customers it holds (for per-customer order)."""

    rows: list[Row]
    customers: frozenset[str]


@dataclass
class Work:
    """What the reader thread hands the event loop for one chunk."""

    rows_read: int
    rows_skipped: tuple[int, int]  # (skipped, of which dead-lettered by an earlier run)
    invalid: list[InvalidRow]
    batches: list[Batch]  # to send, in this order
    planned: int = 0  # dry run: requests built, not sent
    samples: list[dict[str, Any]] = field(default_factory=list)  # dry run: elements to show
    warnings: list[str] = field(default_factory=list)  # for the summary; no cell values


WorkSource = Callable[[StateStore | None], Iterator[Work]]


@dataclass
class RunOutcome:
    report: Report
    samples: list[dict[str, Any]] = field(default_factory=list)


# Errors writing our own files that are the machine's, not the job file's (exit 3, not 2).
_DISK_FAULTS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EIO, errno.EDQUOT, errno.EROFS})


def new_run_id() -> str:
    """Time-sortable and unique enough: 20261129T034512Z-3f9a1c."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def job_scope(job: JobConfig) -> str:
    """What saved progress belongs to: the target and the mapping (see state.progress_scope)."""
    api = job.api
    target = {
        "url": api.resolved_base_url().rstrip("/"),
        "workspace_id": api.workspace_id,
        "project_code": api.project_code,
        "endpoint": api.endpoint,
    }
    return progress_scope(target, job.mapping.model_dump(mode="json"))


def check_output_paths(job: JobConfig, dead_letter: Path, *, with_state: bool) -> None:
    """No output is written through a symlink in its last component: refused up front
    (StateError, exit 2); the writers open with O_NOFOLLOW as well."""
    refuse_symlink(dead_letter, "dead-letter file")
    refuse_symlink(job.output.report, "report file")
    refuse_symlink(report_tmp(job.output.report), "report temporary file")
    if with_state:
        state = job.output.state
        for path in (state, *(state.with_name(state.name + s) for s in ("-wal", "-shm"))):
            refuse_symlink(path, "state file")
        refuse_symlink(RunLock(state).path, "lock file")


def max_items_per_request(job: JobConfig) -> int:
    if job.api.endpoint == "customer":
        return 1
    return max(1, job.rate_limit.updates // MIN_REQUESTS_PER_PERIOD)


def mapper_for(job: JobConfig) -> Mapper:
    """A mapper that refuses elements too large for one request of this job."""
    frame = 0 if job.api.endpoint == "customer" else len(BULK_PREFIX) + len(BULK_SUFFIX)
    kind = EventMapper if job.import_ == "events" else Mapper
    return kind(job.mapping, max_element_bytes=job.delivery.max_batch_bytes - frame)


def discover_sources(job: JobConfig) -> list[Path]:
    if not job.source.path:
        raise ConfigError("source.path: no input given; set source.path or pass --input")
    return sources.discover(job.source.path, job.source.format)


def check_sources(job: JobConfig, mapper: Mapper, paths: list[Path]) -> None:
    """Every file has every mapped column: refused before anything is sent."""
    for path in paths:
        mapper.check_columns(sources.read_columns(path, job.source), str(path))


class SettleFault(Exception):
    """Recording an outcome failed (disk full, state locked): the run stops, exit 3."""


class Settler:
    """The one place rows end: accepted, dead-lettered, or counted as skipped.

    When a write fails, the rows the API answered are still counted in the report;
    progress marks that could not be saved are kept and tried once more at `finish`, and
    rows whose dead-letter line could not be written stay pending.
    """

    def __init__(
        self,
        report: Report,
        writer: DeadLetterWriter | None,
        state: StateStore | None,
        fingerprints: dict[str, tuple[str, str]],
        progress: Progress,
        run_id: str | None = None,
    ) -> None:
        self.report = report
        self.writer = writer
        self.state = state
        self.fingerprints = fingerprints
        self.progress = progress
        self.run_id = run_id
        self.reasons: Counter[str] = Counter()
        self.fault: str | None = None
        # (source, rows, dead_lettered, retry_later) not saved because the state failed
        self._unsaved: list[tuple[str, list[int], bool, bool]] = []

    def _fail(self, error: Exception) -> SettleFault:
        if self.fault is None:
            self.fault = str(error)
        return SettleFault(self.fault)

    def _mark(
        self, source: str, rows: list[int], dead_lettered: bool = False, retry_later: bool = False
    ) -> None:
        self.progress.advance(len(rows))
        if self.state is None or not rows:
            return
        if self.fault is not None:
            self._unsaved.append((source, rows, dead_lettered, retry_later))
            return
        try:
            self.state.mark_settled(
                *self.fingerprints[source],
                rows,
                dead_lettered=dead_lettered,
                retry_later=retry_later,
            )
        except StateFault as error:
            self._unsaved.append((source, rows, dead_lettered, retry_later))
            raise self._fail(error) from None

    def skipped(self, count: int, dead_lettered: int) -> None:
        self.report.rows_skipped += count
        self.report.rows_skipped_dead_lettered += dead_lettered
        self.progress.advance(count)

    def accepted(self, rows: list[Row]) -> None:
        """Counted first: the API took them, whatever happens to our own records after."""
        numbered = [(r.source, number) for r in rows for number in r.numbers]
        self.report.rows_accepted += len(numbered)
        fault: SettleFault | None = None
        for source, numbers in _by_source(numbered).items():
            try:
                self._mark(source, numbers)
            except SettleFault as error:
                fault = error
        if fault is not None:
            raise fault

    def invalid(self, rows: list[InvalidRow]) -> None:
        if not rows:
            return
        letters = [
            DeadLetter(
                r.source,
                r.row,
                "validation",
                r.error,
                None,
                r.customer_id,
                r.record,
                r.payload,
                run_id=self.run_id,
                fingerprint=self._fingerprint(r.source),
                line=r.line,
                lines=r.lines,
            )
            for r in rows
        ]
        self._dead_letter(letters, self._count_invalid)

    def refused(self, refusals: list[Refusal]) -> None:
        if not refusals:
            return
        letters = [
            DeadLetter(
                row.source,
                row.row,
                f.stage,
                f.error,
                f.status,
                row.customer_id,
                row.record(),
                row.element,
                run_id=self.run_id,
                fingerprint=self._fingerprint(row.source),
                line=row.line(),
            )
            for f in refusals
            for row in f.row.split()  # a merged element: a line per row it was made of
        ]
        self._dead_letter(letters, self._count_refused)

    def _count_invalid(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            count_reasons(self.reasons, letter.error)
        self.report.rows_invalid += len(letters)

    def _count_refused(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            if letter.stage == "rejected":
                self.report.rows_rejected += 1
            else:
                self.report.rows_failed += 1

    def _fingerprint(self, source: str) -> str | None:
        known = self.fingerprints.get(source)
        return known[1] if known else None

    def _dead_letter(
        self, letters: list[DeadLetter], count: Callable[[list[DeadLetter]], None]
    ) -> None:
        """Written and flushed, then counted (a row in the file is dead-lettered, whatever
        happens to the progress mark after), then marked settled."""
        if self.writer is None:
            count(letters)
            return
        if self.writer.failed:
            raise SettleFault(self.fault or "the dead-letter file cannot be written")
        try:
            for letter in letters:
                self.writer.write(letter)
            self.writer.flush()  # durable before the rows count as settled
        except DeadLetterFault as error:
            raise self._fail(error) from None
        count(letters)
        fault: SettleFault | None = None
        for stage in ("validation", "rejected", "delivery"):
            pairs = ((d.source, d.row) for d in letters if d.stage == stage)
            for source, numbers in _by_source(pairs).items():
                try:
                    # Delivery failures were never refused for their data: a rerun resends them.
                    self._mark(source, numbers, True, retry_later=stage == "delivery")
                except SettleFault as error:
                    fault = error
        if fault is not None:
            raise fault

    def finish(self) -> None:
        """One more try at saving the progress marks a failed write left unsaved."""
        if self.state is None or not self._unsaved:
            return
        while self._unsaved:
            source, rows, dead_lettered, retry_later = self._unsaved[0]
            try:
                self.state.mark_settled(
                    *self.fingerprints[source],
                    rows,
                    dead_lettered=dead_lettered,
                    retry_later=retry_later,
                )
            except StateFault:
                break  # still failing: each further try would only wait out the same lock
            self._unsaved.pop(0)
        if self._unsaved:
            lost = sum(len(rows) for _, rows, _, _ in self._unsaved)
            log.error(
                "progress of %s settled rows could not be saved; a rerun sends them again",
                f"{lost:,}",
            )


def _by_source(pairs: Any) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for source, row in pairs:
        grouped.setdefault(source, []).append(row)
    return grouped


def _within(numbers: np.ndarray, ranges: list[tuple[int, int]]) -> np.ndarray:
    inside = np.zeros(len(numbers), dtype=bool)
    for first, last in ranges:
        inside |= (numbers >= first) & (numbers <= last)
    return inside


def _drop_settled(chunk: Chunk, settled: SettledRows) -> tuple[int, int]:
    """Remove rows an earlier run settled (beyond the contiguous prefix already skipped).

    Returns (rows skipped, of which dead-lettered by that earlier run)."""
    if not settled.ranges:
        return 0, 0
    numbers = np.concatenate(
        [chunk.frame.index.to_numpy(dtype=np.int64), np.array([m[0] for m in chunk.malformed])]
    ).astype(np.int64)
    done = _within(numbers, settled.ranges)
    if not done.any():
        return 0, 0
    rows = len(chunk.frame)
    chunk.frame = chunk.frame[~done[:rows]]
    chunk.malformed = [m for m, gone in zip(chunk.malformed, done[rows:], strict=True) if not gone]
    return int(done.sum()), int((done & _within(numbers, settled.dead)).sum())


def _resend_filter(
    mapped: MappedChunk, settled: SettledRows, resent: set[str]
) -> tuple[Sequence[Row], list[InvalidRow], tuple[int, int]]:
    """A chunk's rows for a rerun that resends delivery failures, in file order.

    Rows not settled are sent, and their customers noted in `resent`; a row accepted by an
    earlier run is sent again when its customer has an earlier row being resent (else the
    resent older row would end up the last update applied); other settled rows are skipped.
    Returns (valid rows to send, invalid rows to dead-letter, (skipped, of which dead)).
    """
    valid = mapped.valid
    numbers = np.asarray(_numbers_of(valid), dtype=np.int64)
    done = _within(numbers, settled.ranges)
    dead = _within(numbers, settled.dead)
    ids = ordering.customer_ids(valid)
    # Events have no end state to restore: an accepted one sent again would count twice.
    users = not (len(valid) and is_event(batching.encoded_of(valid)[0]))
    keep: list[int] = []
    for position, customer in enumerate(ids):
        if not done[position]:
            keep.append(position)
            if customer is not None:
                resent.add(customer)
        elif users and not dead[position] and customer in resent:
            keep.append(position)
    invalid_numbers = np.array([r.row for r in mapped.invalid], dtype=np.int64)
    invalid_done = _within(invalid_numbers, settled.ranges)
    invalid = [r for r, gone in zip(mapped.invalid, invalid_done, strict=True) if not gone]
    skipped = len(valid) - len(keep) + int(invalid_done.sum())
    skipped_dead = int(dead.sum()) + int(
        (invalid_done & _within(invalid_numbers, settled.dead)).sum()
    )
    if len(keep) == len(valid):
        return valid, invalid, (skipped, skipped_dead)
    encoded = batching.encoded_of(valid)
    rows = ValidRows(
        mapped.source,
        [int(numbers[p]) for p in keep],
        [ids[p] for p in keep],
        [encoded[p] for p in keep],
        valid.chunk if isinstance(valid, ValidRows) else valid[0].chunk,
    )
    return rows, invalid, (skipped, skipped_dead)


def _describe_fault(error: BaseException) -> str:
    """A reader fault without its message: a parser's message can quote the input's text
    (personal data), which belongs in the dead-letter file only."""
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror or type(error).__name__}{where}"
    return f"{type(error).__name__} (its message is not shown: it may quote the input)"


def _numbers_of(rows: Sequence[Row]) -> list[int]:
    return rows.numbers if isinstance(rows, ValidRows) else [row.row for row in rows]


async def _tick(progress: Progress, every: float = 1.0) -> None:
    while True:
        await asyncio.sleep(every)
        progress.tick()


def _dead_in_prefix(settled: SettledRows, prefix: int) -> int:
    return sum(min(last, prefix) - first + 1 for first, last in settled.dead if first <= prefix)


def dry_run_sibling(path: Path) -> Path:
    return path.with_name(f"{path.name.removesuffix('.jsonl')}.dry-run.jsonl")


def _has_saved_progress(state_path: Path) -> bool:
    if not state_path.exists():
        return False
    try:
        store = StateStore(state_path)
    except (StateError, StateFault):
        return True  # a file a rerun would have to deal with: keep the dry run apart
    try:
        return store.has_progress()
    except StateFault:
        return True
    finally:
        with contextlib.suppress(StateFault):
            store.close()


class Run:
    """One import (or dry run) of a job over its source files."""

    def __init__(
        self,
        job: JobConfig,
        options: RunOptions,
        paths: list[Path],
        mapper: Mapper,
        work: WorkSource | None = None,
    ) -> None:
        self.job = job
        self.options = options
        self.paths = paths
        self.mapper = mapper
        # Replay brings its own rows and keeps no progress: the dead-letter file is its input.
        self._work_source: WorkSource = work or self._work
        self._use_state = work is None and not options.dry_run
        # source as named in rows -> (state key, fingerprint)
        self._fingerprints: dict[str, tuple[str, str]] = {}
        self.run_id = new_run_id()
        self.report = Report(
            dry_run=options.dry_run, sources=[str(p) for p in paths], run_id=self.run_id
        )
        self._tally = ordering.CustomerTally()
        self._gate = ordering.CustomerGate()
        self._stop_future: asyncio.Future[None] | None = None
        self._warned_scope = False
        self.samples: list[dict[str, Any]] = []
        self.interrupted = False
        self._signals = 0
        self._stopping = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._producer: asyncio.Task[None] | None = None
        self._batches: asyncio.Queue[Batch | None] | None = None
        self._stats: Any = None
        self._sender: Any = None
        self._input_error = False

    def known_fingerprint(self, source: str, fingerprint: str) -> None:
        """A source's fingerprint for dead-letter lines, when no read of it gave one (replay)."""
        self._fingerprints.setdefault(source, (source, fingerprint))

    # --- reading and mapping, off the event loop thread ---------------------------------

    def _work(self, state: StateStore | None) -> Iterator[Work]:
        source_cfg = self.job.source
        for path in self.paths:
            name = str(path)
            # Progress is keyed by the absolute path: ./x.csv and x.csv are one file.
            key = str(path.resolve())
            fingerprint = sources.fingerprint(path)
            settled = SettledRows([])
            if state is not None:
                if not self._warned_scope and state.other_scope(key):
                    self._warned_scope = True
                    log.warning(
                        "saved progress in %s was made for another target or mapping; it does"
                        " not apply to this run, which sends every row",
                        state.path,
                    )
                if state.changed_sources(key, fingerprint):
                    log.warning(
                        "%s changed since the last run; its earlier progress does not apply", name
                    )
                settled = state.settled(key, fingerprint)
            self._fingerprints[name] = (key, fingerprint)
            prefix = settled.contiguous_through
            if prefix:
                yield Work(prefix, (prefix, _dead_in_prefix(settled, prefix)), [], [])
            rest = SettledRows(
                [r for r in settled.ranges if r[0] > prefix],
                [r for r in settled.dead if r[0] > prefix],
                settled.retry,
            )
            chunks = sources.iter_chunks(
                path, source_cfg, self.mapper.columns, start_row=prefix + 1
            )
            # Rows resent after a delivery failure must not end older than the customer's
            # later rows, accepted before: those are resent after them (see _resend_filter).
            resent: set[str] | None = set() if rest.retry else None
            for rows_read, skipped, mapped in self._map_ahead(chunks, rest, resent is None):
                valid, invalid = mapped.valid, mapped.invalid
                if resent is not None:
                    valid, invalid, skipped = _resend_filter(mapped, rest, resent)
                work = self.batched(rows_read, skipped, valid, invalid)
                work.warnings = mapped.warnings
                yield work

    def _map_ahead(
        self, chunks: Iterator[Chunk], settled: SettledRows, drop_settled: bool = True
    ) -> Iterator[tuple[int, tuple[int, int], MappedChunk]]:
        """Map chunks on MAPPING_THREADS threads, in order, a few chunks ahead of the reader.

        The arrow kernels that do most of mapping release the GIL, so a second thread uses
        the second core; the look-ahead is bounded, so memory stays flat.
        """

        def prepare(chunk: Chunk) -> tuple[int, tuple[int, int], MappedChunk]:
            rows_read = len(chunk.frame) + len(chunk.malformed)
            skipped = _drop_settled(chunk, settled) if drop_settled else (0, 0)
            return rows_read, skipped, self.mapper.map_chunk(chunk)

        with ThreadPoolExecutor(MAPPING_THREADS, thread_name_prefix="map") as pool:
            ahead: deque[Future[tuple[int, tuple[int, int], MappedChunk]]] = deque()
            for chunk in chunks:
                ahead.append(pool.submit(prepare, chunk))
                if len(ahead) > MAPPING_THREADS:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()

    def batched(
        self,
        rows_read: int,
        skipped: tuple[int, int],
        valid: Sequence[Row],
        invalid: list[InvalidRow],
    ) -> Work:
        """Requests for a chunk's valid rows: Row lists to send, or, in a dry run, built bodies.

        A customer appears at most once a request; its rows merge into one element where
        that keeps the end state, else they go to later rounds (see `ordering.sequence`).
        """
        job = self.job
        limits = (job.delivery.max_batch_bytes, max_items_per_request(job), job.api.endpoint)
        ids = ordering.customer_ids(valid)
        self._tally.add(ids)
        rounds = ordering.sequence(valid, self.mapper.max_element_bytes) or [valid]
        if not self.options.dry_run:
            batches = []
            for round_rows in rounds:
                round_ids = ids if round_rows is valid else ordering.customer_ids(round_rows)
                for start, end in batching.row_spans(round_rows, *limits):
                    held = frozenset(round_ids[start:end])
                    customers = cast("frozenset[str]", held - {None} if None in held else held)
                    batches.append(Batch(list(round_rows[start:end]), customers))
            return Work(rows_read, skipped, invalid, batches)
        # A dry run builds each body from the encoded elements: no Row objects needed.
        planned = 0
        for round_rows in rounds:
            spans = batching.row_spans(round_rows, *limits)
            encoded = batching.encoded_of(round_rows)
            for start, end in spans:
                batching.encoded_body(encoded[start:end], job.api.endpoint)  # built, never sent
            planned += len(spans)
        wanted = max(self.options.sample_size - len(self.samples), 0)
        samples = [row.element for row in valid[:wanted]]
        return Work(rows_read, skipped, invalid, [], planned, samples)

    # --- the run ------------------------------------------------------------------------

    async def execute(self) -> RunOutcome:
        job, options = self.job, self.options
        started = time.monotonic()
        state: StateStore | None = None
        lock: RunLock | None = None
        writer: DeadLetterWriter | None = None
        dead_letter_path = job.output.dead_letter
        if (
            options.dry_run
            and dead_letter_path.exists()
            and (_has_saved_progress(job.output.state) or RunLock(job.output.state).is_held())
        ):
            # The dead-letter file belongs to a run that a rerun will resume, or that is
            # running now: a dry run must not write into it.
            dead_letter_path = dry_run_sibling(dead_letter_path)
            log.warning(
                "a run of this job can be resumed; the dry run writes its dead letters to %s",
                dead_letter_path,
            )
        check_output_paths(job, dead_letter_path, with_state=self._use_state)
        settler: Settler | None = None
        try:
            try:
                if self._use_state:
                    lock = RunLock(job.output.state)
                    lock.acquire()
                    state = StateStore(job.output.state, job_scope(job), fresh=options.fresh)
                    if options.fresh:
                        state.reset()
                    resuming = state.has_progress()
                else:
                    resuming = False
                writer = DeadLetterWriter(dead_letter_path, append=resuming)
            except StateFault as fault:
                # Ours to fix (another process holds the database), not the input's: exit 3.
                self._abort(str(fault))
                return RunOutcome(self.report, self.samples)
            except OSError as error:
                message = f"cannot open {error.filename or 'an output file'}: {error.strerror}"
                if error.errno in _DISK_FAULTS:  # a fault of our own: rerun once fixed
                    self._abort(message)
                    return RunOutcome(self.report, self.samples)
                # Output paths are the user's to fix, and nothing has been sent yet.
                raise StateError(message) from None
            self.report.dead_letter = str(dead_letter_path)
            self.report.state = None if state is None else str(job.output.state)
            progress = Progress(
                enabled=options.progress,
                total=sources.count_rows(self.paths, job.source) if self.paths else None,
                limit_per_minute=job.rate_limit.updates / job.rate_limit.period_seconds * 60,
            )
            settler = Settler(self.report, writer, state, self._fingerprints, progress, self.run_id)
            ticker = asyncio.create_task(_tick(progress))
            try:
                await self._pipeline(settler, state)
            finally:
                ticker.cancel()
                progress.close()
                self.report.invalid_reasons = dict(settler.reasons.most_common())
                self.report.duplicate_customers = self._tally.duplicates
        finally:
            self._close_outputs(settler, writer, state, lock)
            elapsed = time.monotonic() - started
            self.report.elapsed_seconds = round(elapsed, 3)
            # Over at least a minute: a 4-second run's 5,000 updates are 5,000 in that minute,
            # not a pace of 75,000 a minute that no minute ever saw.
            minutes = max(elapsed, 60.0) / 60
            self.report.updates_per_minute = round(self.report.rows_accepted / minutes, 1)
            self.report.settle_pending()
            self.report.finish_exit_code(self.interrupted, input_error=self._input_error)
        return RunOutcome(self.report, self.samples)

    def _close_outputs(
        self,
        settler: Settler | None,
        writer: DeadLetterWriter | None,
        state: StateStore | None,
        lock: RunLock | None,
    ) -> None:
        """Each output closed whatever happened to the others; a failure is exit 3, no traceback."""
        if writer is not None:
            try:
                writer.close()
            except DeadLetterFault as fault:
                self._abort(str(fault))
        if state is not None:
            if settler is not None:
                settler.finish()
            if settler is None or settler.fault is None:  # a failing database is left alone
                with contextlib.suppress(StateFault):
                    state.compact()
            try:
                state.close()
            except StateFault as fault:
                self._abort(str(fault))
        if lock is not None:
            with contextlib.suppress(OSError):
                lock.release()

    async def _pipeline(self, settler: Settler, state: StateStore | None) -> None:
        loop = asyncio.get_running_loop()
        self._install_signal_handlers(loop)
        try:
            if self.options.dry_run:
                self._producer = asyncio.create_task(self._produce(settler, state, None))
                with contextlib.suppress(asyncio.CancelledError):
                    await self._producer
                return
            await self._send_all(settler, state)
        finally:
            self._remove_signal_handlers(loop)

    async def _send_all(self, settler: Settler, state: StateStore | None) -> None:
        # Imported here: a dry run never needs the HTTP stack, and starts faster without it.
        from importer.delivery import DeliveryStats, Sender, open_transport

        job = self.job
        stats = DeliveryStats()
        self._stats = stats
        batches: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=job.delivery.concurrency * 2)
        self._batches = batches
        limiter = quota.open_limiter(job)  # a WindowLimiter, shared if rate_limit.shared says so
        self._stop_future = asyncio.get_running_loop().create_future()
        if self._stopping.is_set():
            self._stop_future.set_result(None)
        try:
            async with open_transport(job.api, job.delivery) as transport:
                sender = Sender(
                    job.api, job.delivery, limiter, transport, stats, events=job.import_ == "events"
                )
                self._sender = sender
                self._workers = [
                    asyncio.create_task(self._deliver(sender, batches, settler))
                    for _ in range(job.delivery.concurrency)
                ]
                self._producer = asyncio.create_task(self._produce(settler, state, batches))
                with contextlib.suppress(asyncio.CancelledError):
                    await self._producer
                if not self._stopping.is_set():
                    for _ in self._workers:
                        await batches.put(None)
                await self._wait_workers()
        finally:
            self.report.requests = stats.requests
            self.report.retries = stats.retries
            self.report.http_429 = stats.http_429
            self.report.status_counts = {str(k): v for k, v in sorted(stats.by_status.items())}
            self.report.rate_settled_per_minute = stats.rate_settled_per_minute()
            self.report.outage_seconds = round(stats.outage_seconds, 1)
            self.report.rate_limited_wait_seconds = round(stats.rate_limited_wait_seconds, 1)
            await quota.close_limiter(limiter)  # the other sharers get our last grants back

    async def _produce(
        self,
        settler: Settler,
        state: StateStore | None,
        batches: asyncio.Queue[Batch | None] | None,
    ) -> None:
        work_items = self._work_source(state)
        while not self._stopping.is_set():
            try:
                work = await asyncio.to_thread(next, work_items, None)
            except (SourceError, ConfigError) as error:
                # Bad input found mid-run: stop cleanly; the report and progress are kept.
                self._input_error = self._stats is None or self._stats.requests == 0
                self._abort(str(error))
                return
            except StateFault as fault:  # reading saved progress failed
                self._abort(str(fault))
                return
            except Exception as error:  # a fault reading input (a file gone, a disk error)
                log.debug("reading stopped", exc_info=True)
                self._abort(f"reading the input stopped: {_describe_fault(error)}")
                return
            if work is None:
                return
            self.report.rows_read += work.rows_read
            for warning in work.warnings:
                if self.report.warn(warning):
                    log.warning("%s", warning)
            if work.rows_skipped[0]:
                settler.skipped(*work.rows_skipped)
            try:
                settler.invalid(work.invalid)
            except SettleFault as fault:
                self._abort(str(fault))
                return
            # Dry run: every request was built; the rows stay pending.
            self.report.requests_planned += work.planned
            self.samples += work.samples[: max(self.options.sample_size - len(self.samples), 0)]
            if batches is None:
                continue
            for batch in work.batches:
                if self._stopping.is_set():
                    return
                await batches.put(batch)

    async def _deliver(
        self, sender: Any, batches: asyncio.Queue[Batch | None], settler: Settler
    ) -> None:
        while True:
            batch = await batches.get()
            if batch is None or self._stopping.is_set():
                return
            held, earlier = self._gate.take(batch.customers)
            try:
                # File order per customer: wait for earlier requests holding one of ours.
                if earlier and not await self._until_done(earlier):
                    return  # stopped while waiting: the rows stay pending
                await self._send_one(sender, batch.rows, settler)
            finally:
                self._gate.release(held)

    async def _until_done(self, futures: list[asyncio.Future[None]]) -> bool:
        """Wait for `futures`; False if the run stops first."""
        stop = self._stop_future
        while True:
            pending = [f for f in futures if not f.done()]
            if not pending:
                return not self._stopping.is_set()
            if stop is None:
                await asyncio.wait(pending)
                continue
            if stop.done():
                return False
            await asyncio.wait([*pending, stop], return_when=asyncio.FIRST_COMPLETED)

    async def _send_one(self, sender: Any, batch: list[Row], settler: Settler) -> None:
        from importer.delivery import ApiAbort, SendResult

        if self._stopping.is_set():
            return
        # Filled as each row's fate is known, so an abort or a cancel mid-split still
        # settles the halves that were answered.
        result = SendResult()
        try:
            await sender.send(batch, result)
        except ApiAbort as abort:
            self._abort(str(abort))
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a fault no retry can mend: stop, keep what is settled
            log.debug("delivery failed", exc_info=True)
            self._abort(f"delivery stopped by an unexpected error: {error!r}")
            return
        finally:
            self._settle(settler, result)

    def _settle(self, settler: Settler, result: Any) -> None:
        """Record a send's outcome; a failure of our own writes stops the run (exit 3)."""
        fault: SettleFault | None = None
        for settle, rows in (
            (settler.accepted, result.accepted),
            (settler.refused, result.refused),
        ):
            try:
                settle(rows)
            except SettleFault as error:
                fault = error
        if fault is not None:
            # Requests in flight finish: their answers are counted, and saved if the disk allows.
            self._abort(str(fault), cancel_in_flight=False)

    async def _wait_workers(self) -> None:
        if not self._workers:
            return
        pending = set(self._workers)
        stop = asyncio.create_task(self._stopping.wait())
        try:
            # Until the workers finish, or a stop: then they get the grace of one request.
            while not stop.done():
                # Finished workers leave the set: a done task would end every wait at once.
                pending = {task for task in pending if not task.done()}
                if not pending:
                    break
                await asyncio.wait(pending | {stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        pending = {task for task in pending if not task.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self.job.delivery.timeout_seconds)
        if pending:
            # In-flight requests had their grace; their rows stay pending for the next run.
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for task in self._workers:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    def _abort(self, message: str, *, cancel_in_flight: bool = True) -> None:
        if self.report.aborted is None:
            self.report.aborted = message
            log.error("stopping: %s", message)
        self._stop(cancel_in_flight=cancel_in_flight)

    def _stop(self, *, cancel_in_flight: bool) -> None:
        self._stopping.set()
        if self._stop_future is not None and not self._stop_future.done():
            self._stop_future.set_result(None)
        if self._sender is not None:
            self._sender.stop()  # no new attempts; unanswered rows stay pending
        if self._producer is not None:
            self._producer.cancel()
        # Queued batches are dropped (their rows stay pending); idle workers get a stop mark.
        batches = self._batches
        if batches is not None:
            while not batches.empty():
                batches.get_nowait()
            for _ in self._workers:
                batches.put_nowait(None)
        if cancel_in_flight:
            for task in self._workers:
                if task is not asyncio.current_task():
                    task.cancel()

    # --- signals ------------------------------------------------------------------------

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def _remove_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        self.interrupted = True
        if self._signals == 1:
            log.warning(
                "%s: stopping; letting requests in flight finish (again to stop at once)",
                sig.name,
            )
            self._stop(cancel_in_flight=False)
        else:
            log.warning(
                "%s again: stopping now; unsettled rows will be resent by the next run", sig.name
            )
            self._stop(cancel_in_flight=True)


def prepare(job: JobConfig) -> tuple[list[Path], Mapper]:
    """Everything that can refuse a job before anything is sent (exit 2)."""
    paths = discover_sources(job)
    mapper = mapper_for(job)
    check_sources(job, mapper, paths)
    return paths, mapper


def run_job(
    job: JobConfig, options: RunOptions, observe: Callable[[Run], None] | None = None
) -> RunOutcome:
    paths, mapper = prepare(job)
    run = Run(job, options, paths, mapper)
    if observe is not None:
        observe(run)  # the metrics file reads the live run's counters
    outcome = asyncio.run(run.execute())
    report = outcome.report
    if report.rows_read == 0 and report.exit_code == EXIT_OK and not job.source.allow_empty:
        # An export that failed upstream must not pass unnoticed at 2 a.m.: exit 4.
        report.mark_empty()
        log.warning("%s", report.warnings[-1])
    return outcome
