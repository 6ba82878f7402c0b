"""Wires the stages: source -> mapping -> batches -> rate limit -> delivery -> outcome.

The producer takes `Work` from a feed (read and mapped off the event loop) and queues its
batches; workers send them and hand each answer to the `Settler`. A dry run plans the
same work instead of sending it. A failure of our own writes (disk full, database
locked) stops the run at once (exit 3), never hangs it. Rows of one customer are sent in
file order (see `ordering`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from importer import quota
from importer.config import JobConfig
from importer.errors import ApiAbort, RunAborted, UsageError
from importer.mapping import RowMapper
from importer.mapping.unset import unset_names
from importer.outputs.progress import ticking
from importer.outputs.report import Report
from importer.rows import Row
from importer.run import deletes
from importer.run.credentials import checked_before_reading
from importer.run.delivery import Sender, open_transport
from importer.run.exactly_once import EventLedger
from importer.run.feed import Batch, Batcher, FileFeed, Planner, ReadFailed, WorkSource, next_work
from importer.run.options import RunOptions, RunOutcome
from importer.run.ordering import CustomerGate
from importer.run.outcome import SettleFault, Settler, record_delivery
from importer.run.preflight import new_run_id
from importer.run.resources import OpenAborted, RunOutputs
from importer.run.results import DeliveryStats, SendResult
from importer.run.signals import TwoStageStop
from importer.run.sync import CustomerKeys
from importer.run.transport import Transport
from importer.sources import DataFile
from importer.state import RunState

log = logging.getLogger("importer")


class Run:
    """One import (or dry run) of a job over its source files."""

    def __init__(
        self,
        job: JobConfig,
        options: RunOptions,
        paths: list[DataFile],
        mapper: RowMapper,
        feed: WorkSource | None = None,
        open_state: Callable[[], RunState] | None = None,
    ) -> None:
        self.job = job
        self.options = options
        self.paths = paths
        self.mapper = mapper
        # Events: the ledger keeps what was accepted from being sent again (exactly_once).
        events = job.import_ == "events"
        # A replay brings the one its feed filters by (an accepted event is never resent).
        ledger = getattr(feed, "ledger", None) if feed is not None else None
        self.ledger = ledger or (EventLedger(job, replay=feed is not None) if events else None)
        self.feed: WorkSource = feed or FileFeed(
            job, paths, mapper, full=options.full, job_id=options.job, ledger=self.ledger
        )
        # Replay opens the job's state its own way (its progress and the job's, see replay).
        self._open_state = open_state
        self._use_state = (
            self.feed.keeps_progress or open_state is not None
        ) and not options.dry_run
        self.run_id = new_run_id()
        self.report = Report(
            dry_run=options.dry_run, sources=[str(p) for p in paths], run_id=self.run_id
        )
        self.report.max_invalid_fraction = job.delivery.max_invalid_fraction
        self.batcher = Batcher(job, mapper.max_element_bytes)
        self.planner = Planner(job.api.endpoint, options.sample_size)
        self.signals = TwoStageStop(self._stop)  # the first Ctrl-C stops gently, the second not
        self._stopping = asyncio.Event()
        self._stop_future: asyncio.Future[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._producer: asyncio.Task[None] | None = None
        self._batches: asyncio.Queue[Batch | None] | None = None
        self._stats: DeliveryStats | None = None
        self._sender: Sender | None = None
        self._input_error = False
        self._gate = CustomerGate()
        self._settler: Settler | None = None
        # replay: customer ids of dead-letter lines of stage delete, to delete again
        self.replay_deletes: list[str] = []
        # Awaited before each request goes: False holds it (a remote state, importer.remote).
        self.before_send: Callable[[list[Row]], Awaitable[bool]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def samples(self) -> list[dict[str, Any]]:
        return self.planner.samples

    # --- the run ------------------------------------------------------------------------

    async def execute(self) -> RunOutcome:
        started = time.monotonic()
        self._loop = asyncio.get_running_loop()
        if self.options.observe is not None:
            self.options.observe(self)
        outputs = RunOutputs(self.job, self.report, self._abort, self._state_healthy)
        outputs.job_id = self.options.job
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    state, writer = outputs.open(
                        stack,
                        dry_run=self.options.dry_run,
                        use_state=self._use_state,
                        fresh=self.options.fresh,
                        inputs=[path.local for path in self.paths if path.local is not None],
                        open_state=self._open_state,
                    )
                except OpenAborted:
                    return RunOutcome(self.report, self.samples)
                progress = stack.enter_context(
                    outputs.progress(self.paths, self.options.progress, self.options.progress_pipe)
                )
                changed = self.job.sync.mode == "changed"  # the snapshot moves with progress
                keys = CustomerKeys(self.job.mapping.identifiers) if changed else None
                settler = Settler(
                    self.report, writer, state, self.feed.fingerprints, progress, self.run_id, keys,
                    ledger=self.ledger,
                )  # fmt: skip
                if self.ledger is not None:
                    stack.callback(self.ledger.close)
                    if state is not None:
                        self.ledger.prune()  # the user's horizon, before the first lookup
                        self.ledger.open_writer()  # events in flight are marked
                self._settler = settler
                settler.keep_ids = self.job.sync.delete_absent.enabled
                settler.counts_unsets = bool(unset_names(self.job.mapping))
                # Before the state closes (the stack unwinds last-in first): one more try
                # at the progress marks a failed write left unsaved.
                stack.callback(settler.finish)
                stack.callback(self._summarise, settler)
                stack.enter_context(ticking(progress))
                await self._pipeline(settler, state)
        finally:
            interrupted = self.signals.interrupted
            self.report.close(time.monotonic() - started, interrupted, self._input_error)
        return RunOutcome(self.report, self.samples)

    def abort_from_thread(self, message: str) -> None:
        """Stops the run with rows pending (exit 3) from any thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._abort, message)

    def _state_healthy(self) -> bool:
        return self._settler is None or self._settler.fault is None

    def _summarise(self, settler: Settler) -> None:
        settler.summarise(self.batcher.tally.duplicates, self.planner.planned)

    async def _pipeline(self, settler: Settler, state: RunState | None) -> None:
        with self.signals.intercepting(asyncio.get_running_loop()):
            if self.options.dry_run:
                self._producer = asyncio.create_task(
                    self._produce(settler, state, self.planner.plan)
                )
                with contextlib.suppress(asyncio.CancelledError):
                    await self._producer
            else:
                if self.job.sync.delete_absent.enabled and self.feed.keeps_progress:
                    deletes.expire_deletes(self.job)  # before the snapshot is read
                await self._send_all(settler, state)
            await self._delete(settler)

    async def _delete(self, settler: Settler) -> None:
        """sync.delete_absent once the read and the updates are done (and a replay's
        deletes); a tripped guard is exit 2, a refusal of the credentials exit 3."""
        report, dry_run, writer = self.report, self.options.dry_run, settler.writer
        try:
            if self.replay_deletes and not dry_run and not self._stopping.is_set():
                ids, stop = self.replay_deletes, self._stopping
                await deletes.replay_deletes(self.job, report, writer, self.run_id, ids, stop)
            if not (self.job.sync.delete_absent.enabled and self.feed.keeps_progress):
                return
            stopped = report.aborted or ("interrupted" if self.signals.interrupted else None)
            read = deletes.ReadState(
                getattr(self.feed, "diff", None),
                stopped,
                0 if dry_run else report.rows_read - report.rows_settled,
                resumed=report.rows_skipped > 0,
            )
            stop = self._stopping
            await deletes.delete_absent(
                self.job, report, writer, self.run_id, read, dry_run=dry_run, stopping=stop
            )
        except deletes.DeleteRefused as refused:
            if report.aborted or self.signals.interrupted:  # the run's own end stands
                report.warn(str(refused))
                return
            self._input_error = True  # exit 2: nothing deleted
            self._abort(str(refused))
        except (RunAborted, UsageError) as error:
            self._abort(str(error))
        except OSError as error:  # the dry run's list of ids could not be written
            self._abort(f"cannot write {error.filename or 'the list of deletes'}: {error.strerror}")

    async def _send_all(self, settler: Settler, state: RunState | None) -> None:
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
                if not await self._reachable(transport):
                    return
                events = job.import_ == "events"
                sender = Sender(job.api, job.delivery, limiter, transport, stats, events=events)
                self._sender = sender
                settler.progress.watch(sender, limiter)  # what the run waits on, shown
                self._workers = [
                    asyncio.create_task(self._deliver(sender, batches, settler))
                    for _ in range(job.delivery.concurrency)
                ]
                self._producer = asyncio.create_task(self._produce(settler, state, batches.put))
                with contextlib.suppress(asyncio.CancelledError):
                    await self._producer
                if not self._stopping.is_set():
                    for _ in self._workers:
                        await batches.put(None)
                await self._wait_workers()
        finally:
            record_delivery(self.report, stats)
            await quota.close_limiter(limiter)  # the other sharers get our last grants back

    async def _reachable(self, transport: Transport) -> bool:
        """The credentials and the host checked before a row is read (run.credentials)."""
        refused = await checked_before_reading(self.job, transport, self._stopping)
        if refused is not None:
            self._abort(refused)
        return refused is None and not self._stopping.is_set()

    async def _produce(
        self,
        settler: Settler,
        state: RunState | None,
        consume: Callable[[Batch], Awaitable[None] | None],
    ) -> None:
        """Take work off the reader thread; settle what needs no request; hand on batches.

        `consume` is the queue's `put` (a run) or the planner's `plan` (a dry run)."""
        work_items = self.feed.work(state, self.batcher)
        while not self._stopping.is_set():
            try:
                work = await next_work(work_items)
            except ReadFailed as failed:
                if failed.bad_input:  # exit 2 if nothing was sent yet
                    self._input_error = self._stats is None or self._stats.requests == 0
                self._abort(str(failed))
                return
            if work is None:
                absent = self.feed.absent()
                if absent is not None:
                    settler.absent(*absent)
                return
            try:
                settler.work_read(work)
            except SettleFault as fault:
                self._abort(str(fault))
                return
            for batch in work.batches:
                if self._stopping.is_set():
                    return
                planned = consume(batch)
                if planned is not None:
                    await planned

    async def _deliver(
        self, sender: Sender, batches: asyncio.Queue[Batch | None], settler: Settler
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

    async def _send_one(self, sender: Sender, batch: list[Row], settler: Settler) -> None:
        if self._stopping.is_set():
            return
        # Filled as each row's fate is known, so an abort or a cancel mid-split still
        # settles the halves that were answered.
        result = SendResult()
        try:
            if self.ledger is not None:
                self.ledger.sending(batch)  # a kill from here on leaves them "in flight"
            if self.before_send is not None and not await self.before_send(batch):
                return  # the run is stopping: these rows stay pending
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
            try:
                settler.answered(result)
            except SettleFault as fault:
                # Our own writes failed (exit 3). Requests in flight finish: their answers
                # are counted, and saved if the disk allows.
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

    # --- stopping -----------------------------------------------------------------------

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
