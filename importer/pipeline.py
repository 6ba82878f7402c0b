"""Wires the stages: source -> mapping -> batches -> rate limit -> delivery -> outcome.

The loop that settles rows lives here once (`Settler`): a row is accepted when the
request holding it got a 2xx, or written to the dead-letter file (flushed) before it is
marked settled in the state store, so a crash at any point loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from importer import batching, sources
from importer.config import ConfigError, JobConfig
from importer.deadletter import DeadLetter, DeadLetterWriter
from importer.mapping import Mapper
from importer.moengage import BULK_PREFIX, BULK_SUFFIX
from importer.progress import Progress
from importer.ratelimit import WindowLimiter
from importer.report import Report, count_reasons
from importer.rows import Chunk, InvalidRow, MappedChunk, Row
from importer.sources import SourceError
from importer.state import RunLock, SettledRows, StateError, StateStore

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


@dataclass
class Work:
    """What the reader thread hands the event loop for one chunk."""

    rows_read: int
    rows_skipped: tuple[int, int]  # (skipped, of which dead-lettered by an earlier run)
    invalid: list[InvalidRow]
    batches: list[list[Row]]  # to send
    planned: int = 0  # dry run: requests built, not sent
    samples: list[dict[str, Any]] = field(default_factory=list)  # dry run: elements to show
    warnings: list[str] = field(default_factory=list)  # for the summary; no cell values


WorkSource = Callable[[StateStore | None], Iterator[Work]]


@dataclass
class RunOutcome:
    report: Report
    samples: list[dict[str, Any]] = field(default_factory=list)


def max_items_per_request(job: JobConfig) -> int:
    if job.api.endpoint == "customer":
        return 1
    return max(1, job.rate_limit.updates // MIN_REQUESTS_PER_PERIOD)


def mapper_for(job: JobConfig) -> Mapper:
    """A mapper that refuses elements too large for one request of this job."""
    frame = 0 if job.api.endpoint == "customer" else len(BULK_PREFIX) + len(BULK_SUFFIX)
    return Mapper(job.mapping, max_element_bytes=job.delivery.max_batch_bytes - frame)


def discover_sources(job: JobConfig) -> list[sources.DataFile]:
    if not job.source.path:
        raise ConfigError("source.path: no input given; set source.path or pass --input")
    return sources.discover(job.source.path, job.source.format, job.source.storage)


def check_sources(job: JobConfig, mapper: Mapper, paths: list[sources.DataFile]) -> None:
    """Every mapped column is in some file (parts of an export may differ; a part lacking a
    column reads it as empty): refused before anything is sent."""
    where = (
        str(paths[0]) if len(paths) == 1 else f"any of the {len(paths)} files of {job.source.path}"
    )
    mapper.check_columns(sources.union_columns(paths, job.source), where)


class Settler:
    """The one place rows end: accepted, dead-lettered, or counted as skipped."""

    def __init__(
        self,
        report: Report,
        writer: DeadLetterWriter | None,
        state: StateStore | None,
        fingerprints: dict[str, tuple[str, str]],
        progress: Progress,
    ) -> None:
        self.report = report
        self.writer = writer
        self.state = state
        self.fingerprints = fingerprints
        self.progress = progress
        self.reasons: Counter[str] = Counter()

    def _mark(self, source: str, rows: list[int], dead_lettered: bool = False) -> None:
        if self.state is not None and rows:
            self.state.mark_settled(*self.fingerprints[source], rows, dead_lettered=dead_lettered)
        self.progress.advance(len(rows))

    def skipped(self, count: int, dead_lettered: int) -> None:
        self.report.rows_skipped += count
        self.report.rows_skipped_dead_lettered += dead_lettered
        self.progress.advance(count)

    def accepted(self, rows: list[Row]) -> None:
        self.report.rows_accepted += len(rows)
        for source, numbers in _by_source((r.source, r.row) for r in rows).items():
            self._mark(source, numbers)

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
                line=r.line,
                lines=r.lines,
            )
            for r in rows
        ]
        for r in rows:
            count_reasons(self.reasons, r.error)
        self._dead_letter(letters)
        self.report.rows_invalid += len(rows)

    def refused(self, refusals: list[Refusal]) -> None:
        if not refusals:
            return
        letters = [
            DeadLetter(
                f.row.source,
                f.row.row,
                f.stage,
                f.error,
                f.status,
                f.row.customer_id,
                f.row.record(),
                f.row.element,
                line=f.row.line(),
            )
            for f in refusals
        ]
        self._dead_letter(letters)
        for f in refusals:
            if f.stage == "rejected":
                self.report.rows_rejected += 1
            else:
                self.report.rows_failed += 1

    def _dead_letter(self, letters: list[DeadLetter]) -> None:
        if self.writer is None:
            return
        for letter in letters:
            self.writer.write(letter)
        self.writer.flush()  # durable before the rows count as settled
        for source, numbers in _by_source((d.source, d.row) for d in letters).items():
            self._mark(source, numbers, dead_lettered=True)


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


async def _tick(progress: Progress, every: float = 1.0) -> None:
    while True:
        await asyncio.sleep(every)
        progress.tick()


def _unreachable(result: Any) -> bool:
    """Every row refused in delivery without one HTTP answer (connection errors only)."""
    return bool(result.refused) and all(
        refusal.stage == "delivery" and refusal.status is None for refusal in result.refused
    )


def _dead_in_prefix(settled: SettledRows, prefix: int) -> int:
    return sum(min(last, prefix) - first + 1 for first, last in settled.dead if first <= prefix)


def dry_run_sibling(path: Path) -> Path:
    return path.with_name(f"{path.name.removesuffix('.jsonl')}.dry-run.jsonl")


def _has_saved_progress(state_path: Path) -> bool:
    if not state_path.exists():
        return False
    store = StateStore(state_path)
    try:
        return store.has_progress()
    finally:
        store.close()


class Run:
    """One import (or dry run) of a job over its source files."""

    def __init__(
        self,
        job: JobConfig,
        options: RunOptions,
        paths: list[sources.DataFile],
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
        self.report = Report(dry_run=options.dry_run, sources=[str(p) for p in paths])
        self.samples: list[dict[str, Any]] = []
        self.interrupted = False
        self._signals = 0
        self._stopping = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._producer: asyncio.Task[None] | None = None
        self._batches: asyncio.Queue[list[Row] | None] | None = None
        self._stats: Any = None
        self._sender: Any = None
        self._reached_api = False
        self._input_error = False

    # --- reading and mapping, off the event loop thread ---------------------------------

    def _work(self, state: StateStore | None) -> Iterator[Work]:
        source_cfg = self.job.source
        for path in self.paths:
            name = str(path)
            key = path.state_key
            fingerprint = sources.fingerprint(path)
            settled = SettledRows([])
            if state is not None:
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
            )
            chunks = sources.iter_chunks(
                path, source_cfg, self.mapper.columns, start_row=prefix + 1
            )
            for rows_read, skipped, mapped in self._map_ahead(chunks, rest):
                work = self.batched(rows_read, skipped, mapped.valid, mapped.invalid)
                work.warnings = mapped.warnings
                yield work

    def _map_ahead(
        self, chunks: Iterator[Chunk], settled: SettledRows
    ) -> Iterator[tuple[int, tuple[int, int], MappedChunk]]:
        """Map chunks on MAPPING_THREADS threads, in order, a few chunks ahead of the reader.

        The arrow kernels that do most of mapping release the GIL, so a second thread uses
        the second core; the look-ahead is bounded, so memory stays flat.
        """

        def prepare(chunk: Chunk) -> tuple[int, tuple[int, int], MappedChunk]:
            rows_read = len(chunk.frame) + len(chunk.malformed)
            skipped = _drop_settled(chunk, settled)
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
        """Requests for a chunk's valid rows: Row lists to send, or, in a dry run, built bodies."""
        job = self.job
        limits = (job.delivery.max_batch_bytes, max_items_per_request(job), job.api.endpoint)
        if not self.options.dry_run:
            return Work(rows_read, skipped, invalid, list(batching.pack(valid, *limits)))
        # A dry run builds each body from the encoded elements: no Row objects needed.
        spans = batching.row_spans(valid, *limits)
        encoded = batching.encoded_of(valid)
        for start, end in spans:
            batching.encoded_body(encoded[start:end], job.api.endpoint)  # built, never sent
        wanted = max(self.options.sample_size - len(self.samples), 0)
        samples = [row.element for row in valid[:wanted]]
        return Work(rows_read, skipped, invalid, [], len(spans), samples)

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
        try:
            try:
                if self._use_state:
                    lock = RunLock(job.output.state)
                    lock.acquire()
                    state = StateStore(job.output.state)
                    if options.fresh:
                        state.reset()
                    resuming = state.has_progress()
                else:
                    resuming = False
                writer = DeadLetterWriter(dead_letter_path, append=resuming)
            except OSError as error:
                # Output paths are the user's to fix, and nothing has been sent yet.
                raise StateError(
                    f"cannot open {error.filename or 'an output file'}: {error.strerror}"
                ) from None
            self.report.dead_letter = str(dead_letter_path)
            self.report.state = None if state is None else str(job.output.state)
            progress = Progress(
                enabled=options.progress,
                total=sources.count_rows(self.paths, job.source) if self.paths else None,
                limit_per_minute=job.rate_limit.updates / job.rate_limit.period_seconds * 60,
            )
            settler = Settler(self.report, writer, state, self._fingerprints, progress)
            ticker = asyncio.create_task(_tick(progress))
            try:
                await self._pipeline(settler, state)
            finally:
                ticker.cancel()
                progress.close()
                self.report.invalid_reasons = dict(settler.reasons.most_common())
        finally:
            if writer is not None:
                writer.close()
            if state is not None:
                with contextlib.suppress(Exception):
                    state.compact()
                state.close()
            if lock is not None:
                lock.release()
            elapsed = time.monotonic() - started
            self.report.elapsed_seconds = round(elapsed, 3)
            # Over at least a minute: a 4-second run's 5,000 updates are 5,000 in that minute,
            # not a pace of 75,000 a minute that no minute ever saw.
            minutes = max(elapsed, 60.0) / 60
            self.report.updates_per_minute = round(self.report.rows_accepted / minutes, 1)
            self.report.settle_pending()
            self.report.finish_exit_code(self.interrupted, input_error=self._input_error)
        return RunOutcome(self.report, self.samples)

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
        from importer.delivery import DeliveryStats, Sender, make_session

        job = self.job
        stats = DeliveryStats()
        self._stats = stats
        batches: asyncio.Queue[list[Row] | None] = asyncio.Queue(
            maxsize=job.delivery.concurrency * 2
        )
        self._batches = batches
        limiter = WindowLimiter(job.rate_limit.updates, job.rate_limit.period_seconds)
        try:
            async with make_session(job.delivery) as session:
                sender = Sender(job.api, job.delivery, limiter, session, stats)
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

    async def _produce(
        self,
        settler: Settler,
        state: StateStore | None,
        batches: asyncio.Queue[list[Row] | None] | None,
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
            except Exception as error:  # a fault reading input (a file gone, a disk error)
                log.debug("reading stopped", exc_info=True)
                self._abort(f"reading the input stopped: {error}")
                return
            if work is None:
                return
            self.report.rows_read += work.rows_read
            for warning in work.warnings:
                if self.report.warn(warning):
                    log.warning("%s", warning)
            if work.rows_skipped[0]:
                settler.skipped(*work.rows_skipped)
            settler.invalid(work.invalid)
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
        self, sender: Any, batches: asyncio.Queue[list[Row] | None], settler: Settler
    ) -> None:
        from importer.delivery import ApiAbort, SendResult

        while True:
            batch = await batches.get()
            if batch is None or self._stopping.is_set():
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
                if result.accepted:
                    self._reached_api = True
                elif not self._reached_api and _unreachable(result):
                    # Never one answer from the API: a wrong URL or a network down, not bad
                    # rows. Stop rather than dead-letter everything; the rows stay pending.
                    self._abort(f"cannot reach the API at {sender.url}: {result.refused[0].error}")
                    result.refused.clear()
                settler.accepted(result.accepted)
                settler.refused(result.refused)

    async def _wait_workers(self) -> None:
        if not self._workers:
            return
        pending = set(self._workers)
        stop = asyncio.create_task(self._stopping.wait())
        try:
            # Until the workers finish, or a stop: then they get the grace of one request.
            while not stop.done() and any(not task.done() for task in pending):
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

    def _abort(self, message: str) -> None:
        if self.report.aborted is None:
            self.report.aborted = message
            log.error("stopping: %s", message)
        self._stop(cancel_in_flight=True)

    def _stop(self, *, cancel_in_flight: bool) -> None:
        self._stopping.set()
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


def prepare(job: JobConfig) -> tuple[list[sources.DataFile], Mapper]:
    """Everything that can refuse a job before anything is sent (exit 2)."""
    paths = discover_sources(job)
    mapper = mapper_for(job)
    check_sources(job, mapper, paths)
    return paths, mapper


def run_job(job: JobConfig, options: RunOptions) -> RunOutcome:
    paths, mapper = prepare(job)
    run = Run(job, options, paths, mapper)
    return asyncio.run(run.execute())
