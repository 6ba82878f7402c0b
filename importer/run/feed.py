"""The work to do: source chunks, mapped and batched, minus the rows already settled.

A `WorkSource` yields `Work` per chunk; the pipeline sends its batches (or, in a dry
run, a planner builds them). `FileFeed` reads the job's source files; replay brings its
own (`replay.ReplayFeed`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
import orjson

from importer import sources
from importer.config import ConfigError, JobConfig
from importer.errors import describe_fault
from importer.mapping import RowMapper
from importer.moengage import Endpoint
from importer.rows import Chunk, InvalidRow, MappedChunk, Row
from importer.run import batching, ordering
from importer.run.exactly_once import EventLedger, unsent
from importer.run.preflight import scope_of
from importer.run.resume import identify
from importer.run.settled import dead_in_prefix, drop_settled_rows, resend_filter
from importer.run.slices import job_filter
from importer.run.sync import CustomerKeys, SyncDiff
from importer.state import RunState, SettledRows, StateError, StateFault, peek_snapshot

log = logging.getLogger("importer")

# Chunks mapped at once: the arrow kernels release the GIL, so two threads use two cores.
MAPPING_THREADS = 2

# A slice's chunks are read this many times `chunk_rows` at most (see FileFeed._chunks).
SLICE_READ_FACTOR = 2

# Requests per period at the least: smaller batches keep pacing smooth under a small limit.
MIN_REQUESTS_PER_PERIOD = 20

# source as named in rows -> (state key, fingerprint of the file)
Fingerprints = dict[str, tuple[str, str]]


@dataclass(slots=True)
class Batch:
    """The rows of one request (`pool[start:end]`), and the customers it holds."""

    pool: Sequence[Row]
    start: int
    end: int
    customers: frozenset[str]

    @property
    def rows(self) -> list[Row]:
        """Row objects, made only when the batch is sent (a dry run needs none)."""
        return list(self.pool[self.start : self.end])

    @property
    def encoded(self) -> Sequence[bytes]:
        return batching.encoded_of(self.pool)[self.start : self.end]


@dataclass
class Work:
    """What the reader thread hands the event loop for one chunk."""

    rows_read: int
    rows_skipped: tuple[int, int]  # (skipped, of which dead-lettered by an earlier run)
    invalid: list[InvalidRow]
    batches: list[Batch]  # to send, in this order
    warnings: list[str] = field(default_factory=list)  # for the summary; no cell values
    source: str = ""
    unchanged: list[int] = field(default_factory=list)  # sync: rows MoEngage holds already
    already_sent: list[int] = field(default_factory=list)  # events the ledger holds
    uncertain: list[Row] = field(default_factory=list)  # events an earlier run left in flight


class Batcher:
    """Requests for a chunk's valid rows, a customer at most once a request.

    A customer's rows merge into one element where that keeps the end state, else they
    go to later rounds (see `ordering.sequence`).
    """

    def __init__(self, job: JobConfig, max_element_bytes: int) -> None:
        self.limits = (job.delivery.max_batch_bytes, max_items_per_request(job), job.api.endpoint)
        self.max_element_bytes = max_element_bytes
        self.tally = ordering.CustomerTally()

    def __call__(
        self,
        rows_read: int,
        skipped: tuple[int, int],
        valid: Sequence[Row],
        invalid: list[InvalidRow],
    ) -> Work:
        ids = ordering.customer_ids(valid)
        self.tally.add(ids)
        rounds = ordering.sequence(valid, self.max_element_bytes) or [valid]
        batches = []
        for round_rows in rounds:
            round_ids = ids if round_rows is valid else ordering.customer_ids(round_rows)
            for start, end in batching.row_spans(round_rows, *self.limits):
                held = frozenset(round_ids[start:end])
                customers = cast("frozenset[str]", held - {None} if None in held else held)
                batches.append(Batch(round_rows, start, end, customers))
        return Work(rows_read, skipped, invalid, batches)


class WorkSource(Protocol):
    """Where a run's rows come from."""

    # Whether the run keeps progress for these rows (replay's progress is its input file).
    keeps_progress: bool
    fingerprints: Fingerprints  # filled as sources are opened; dead-letter lines name them

    def work(self, state: RunState | None, batch: Batcher) -> Iterator[Work]: ...

    def absent(self) -> tuple[int, int] | None:
        """(snapshot customers not seen, snapshot size) once the whole input was read and
        compared; None when that is not known (no snapshot kept, rows skipped)."""


class ReadFailed(Exception):
    """Reading the work stopped the run: the message says why, without cell values.

    `bad_input`: the input itself cannot be imported (a SourceError or ConfigError found
    mid-run), not a fault of the machine or of our own saved progress."""

    def __init__(self, message: str, *, bad_input: bool = False) -> None:
        super().__init__(message)
        self.bad_input = bad_input


async def next_work(work_items: Iterator[Work]) -> Work | None:
    """The next work, read and mapped on a thread off the event loop; None at the end.

    Raises ReadFailed for any fault reading it."""
    try:
        return await asyncio.to_thread(next, work_items, None)
    except (sources.SourceError, ConfigError) as error:
        # Bad input found mid-run: stop cleanly; the report and progress are kept.
        raise ReadFailed(str(error), bad_input=True) from None
    except StateFault as fault:  # reading saved progress failed
        raise ReadFailed(str(fault)) from None
    except Exception as error:  # a fault reading input (a file gone, a disk error)
        log.debug("reading stopped", exc_info=True)
        raise ReadFailed(f"reading the input stopped: {describe_fault(error)}") from None


class Planner:
    """A dry run's consumer of the work: builds every request body, sends nothing."""

    def __init__(self, endpoint: str, sample_size: int) -> None:
        self.endpoint = endpoint
        self.sample_size = sample_size
        self.planned = 0
        self.samples: list[dict[str, Any]] = []

    def plan(self, batch: Batch) -> None:
        encoded = batch.encoded
        batching.encoded_body(encoded, self.endpoint)  # built, never sent
        self.planned += 1
        for element in encoded[: max(self.sample_size - len(self.samples), 0)]:
            self.samples.append(orjson.loads(element))


def max_items_per_request(job: JobConfig) -> int:
    if job.api.endpoint == Endpoint.CUSTOMER:
        return 1
    return max(1, job.rate_limit.updates // MIN_REQUESTS_PER_PERIOD)


class FileFeed:
    """The job's source files, chunk by chunk, skipping rows an earlier run settled."""

    keeps_progress = True

    def __init__(
        self,
        job: JobConfig,
        paths: list[sources.DataFile],
        mapper: RowMapper,
        *,
        full: bool = False,
        job_id: str | None = None,
        ledger: EventLedger | None = None,
    ) -> None:
        self.job = job
        self.scope = scope_of(job, job_id)
        self.ledger = ledger  # events: what was accepted before is not sent again
        self.paths = paths
        self.mapper = mapper
        self.full = full
        self.fingerprints: Fingerprints = {}
        self.diff: SyncDiff | None = None
        self._warned_scope = False
        self._skipped_any = False
        self.slicing = job.slice_parts()  # (K, N): only the rows of slice K are mapped
        self.other_slices_rows = 0  # rows read that belong to other slices
        self._count_lock = threading.Lock()

    def work(self, state: RunState | None, batch: Batcher) -> Iterator[Work]:
        snapshot: Future[SyncDiff] | None = None
        if self.job.sync.mode == "changed":
            # Loaded while the first chunks are read and mapped (sqlite lets go of the GIL).
            pool = ThreadPoolExecutor(1, thread_name_prefix="snapshot")
            snapshot = pool.submit(self._load_snapshot)
            pool.shutdown(wait=False)  # the thread ends with the load
        for path in self.paths:
            yield from self._file(path, state, batch, snapshot)

    def _load_snapshot(self) -> SyncDiff:
        """The snapshot of this target and mapping, through a read-only connection of its
        own (a dry run takes no lock and never writes; a run holds the lock, and writes
        nothing to the snapshot before this is loaded)."""
        try:
            state = self.job.output.state
            keys, prints, elsewhere = peek_snapshot(state, self.scope.key)
            if not len(keys) and self.scope.key != self.scope.legacy:
                # Saved before jobs were part of the key: a run claims it (state.scopes).
                keys, prints, elsewhere = peek_snapshot(state, self.scope.legacy)
        except StateError as error:
            # A dry run reports what it can: the real run refuses the file itself.
            log.warning("cannot read the snapshot (%s); comparing with none", error)
            keys = prints = np.empty(0, dtype=np.int64)
            elsewhere = False
        if elsewhere:
            log.warning(
                "the snapshot in %s was made for another target or mapping; this run sends"
                " every valid row and starts a new one",
                self.job.output.state,
            )
        elif self.full:
            log.info("--full: sending every valid row and refreshing the snapshot")
        elif len(keys):
            log.info("comparing with the snapshot of %s customers", f"{len(keys):,}")
        return SyncDiff(keys, prints, CustomerKeys(self.job.mapping.identifiers), self.full)

    def absent(self) -> tuple[int, int] | None:
        if self.diff is None or self._skipped_any or not len(self.diff.seen):
            return None
        return self.diff.absent(), len(self.diff.seen)

    def _file(
        self,
        path: sources.DataFile,
        state: RunState | None,
        batch: Batcher,
        snapshot: Future[SyncDiff] | None,
    ) -> Iterator[Work]:
        name = str(path)
        key = path.state_key  # ./x.csv and x.csv are one file; s3:// keeps its URL
        fingerprint = identify(state, key, path)  # carries an appended file's progress over
        settled = SettledRows([])
        if state is not None:
            if state.changed_sources(key, fingerprint):
                log.warning(
                    "%s changed since the last run; its earlier progress does not apply", name
                )
            settled = state.settled(key, fingerprint)
            # Said only while this target and mapping have no progress of their own here:
            # once they do, the other progress changes nothing.
            if not settled.ranges and not self._warned_scope and state.other_scope(key):
                self._warned_scope = True
                log.warning(
                    "saved progress in %s was made for another target or mapping; it does"
                    " not apply to this run, which sends every row",
                    state.path,
                )
        self.fingerprints[name] = (key, fingerprint)
        prefix = settled.contiguous_through
        self._skipped_any |= bool(settled.ranges)
        if prefix:
            yield Work(prefix, (prefix, dead_in_prefix(settled, prefix)), [], [])
        rest = SettledRows(
            [r for r in settled.ranges if r[0] > prefix],
            [r for r in settled.dead if r[0] > prefix],
            settled.retry,
        )
        chunks = self._chunks(path, prefix + 1)
        # Rows resent after a delivery failure must not end older than the customer's
        # later rows, accepted before: those are resent after them (see resend_filter).
        resent: set[str] | None = set() if rest.retry else None
        for rows_read, skipped, mapped in self._map_ahead(chunks, rest, resent is None):
            valid, invalid = mapped.valid, mapped.invalid
            if resent is not None:
                valid, invalid, skipped = resend_filter(mapped, rest, resent)
            unchanged: list[int] = []
            if snapshot is not None and self.diff is None:
                self.diff = snapshot.result()
            if self.diff is not None:
                self.diff.see([row.customer_id for row in invalid])  # read, so not absent
                diff = self.diff.compare(valid)
                valid, unchanged = diff.send, diff.unchanged
            valid, already, uncertain = unsent(self.ledger, valid)  # events: exactly once
            work = batch(rows_read, skipped, valid, invalid)
            work.warnings = mapped.warnings
            work.source = name
            work.unchanged, work.already_sent, work.uncertain = unchanged, already, uncertain
            yield work

    def _chunks(self, path: sources.DataFile, start_row: int) -> Iterator[Chunk]:
        """The file's chunks from `start_row`; a slice's hold only its own rows."""
        source, row_filter = self.job.source, job_filter(self.job)
        if row_filter is not None and self.slicing is not None:
            # A slice of 2 reads chunks of twice `chunk_rows`, so it maps chunks of about
            # `chunk_rows` rather than twice as many half ones (each has a fixed cost). Not
            # more: what a chunk holds before its rows are filtered is read memory.
            rows = source.chunk_rows * min(self.slicing[1], SLICE_READ_FACTOR)
            source = source.model_copy(update={"chunk_rows": rows})
        return sources.iter_chunks(path, source, self.mapper.columns, start_row, row_filter)

    def _map_ahead(
        self, chunks: Iterator[Chunk], settled: SettledRows, drop_settled: bool = True
    ) -> Iterator[tuple[int, tuple[int, int], MappedChunk]]:
        """Map chunks on MAPPING_THREADS threads, in order, a few chunks ahead of the reader.

        The arrow kernels that do most of mapping release the GIL, so a second thread uses
        the second core; the look-ahead is bounded, so memory stays flat.
        """

        def prepare(chunk: Chunk) -> tuple[int, tuple[int, int], MappedChunk]:
            if chunk.other_rows:  # other slices' rows, left out by the reader: counted only
                with self._count_lock:
                    self.other_slices_rows += chunk.other_rows
            rows_read = len(chunk.frame) + len(chunk.malformed)
            skipped = drop_settled_rows(chunk, settled) if drop_settled else (0, 0)
            return rows_read, skipped, self.mapper.map_chunk(chunk)

        with ThreadPoolExecutor(MAPPING_THREADS, thread_name_prefix="map") as pool:
            ahead: deque[Future[tuple[int, tuple[int, int], MappedChunk]]] = deque()
            for chunk in chunks:
                ahead.append(pool.submit(prepare, chunk))
                if len(ahead) > MAPPING_THREADS:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
