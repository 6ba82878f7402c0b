"""sync.delete_absent: customers this job delivered that tonight's complete read lacks are
deleted through MoEngage's Delete User API, one user a request, at its own limit.

Nothing is deleted unless every guard passes, each checked before the first request: the
read was complete (no source error, no stop, no rows pending, no row without a readable
customer_id), the export was not empty, and
the absent customers are at most `max_fraction` of the snapshot and at most `max_count`.
A tripped guard is exit 2 with the numbers. A run that skipped rows settled by an
earlier run (a resume) did not read them, so it deletes nothing and says so. A dry run
writes the ids it would delete to `X.dry-run.deletes.txt` beside its report (mode 0600).
A failed delete goes to the dead-letter file at stage `delete`; `replay` sends it again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from importer import moengage
from importer.config import JobConfig
from importer.outputs.deadletter import DeadLetter, DeadLetterWriter
from importer.outputs.report import Report
from importer.quota.window import WindowLimiter
from importer.run.preflight import job_scope
from importer.run.sync import SyncDiff, keyed_ids
from importer.run.transport import AiohttpTransport, Transport
from importer.run.users_api import UsersApiClient
from importer.state.customer_store import CustomerIds

log = logging.getLogger("importer")

# Deleted customers are taken out of the snapshot this many at a time (a crash between
# a delete and its record only means the next run's delete finds the user gone: done).
FORGET_EVERY = 500
# What a dead-letter line of a delete names as its source.
DELETE_SOURCE = "sync.delete_absent"


class DeleteRefused(Exception):
    """A guard tripped: nothing was deleted (exit 2); the message has the numbers."""


@dataclass
class ReadState:
    """How tonight's read ended, as the delete guards need it."""

    diff: SyncDiff | None  # the comparison with the snapshot (None: no chunk was read)
    stopped: str | None  # why the run stopped early (abort, interrupt), if it did
    rows_pending: int
    resumed: bool  # rows were skipped as settled by an earlier run


def deletes_path(dry_run_report: Path) -> Path:
    """Where a dry run lists the ids it would delete: beside its report `X.dry-run.json`,
    `X.dry-run.deletes.txt`."""
    return dry_run_report.with_name(f"{dry_run_report.stem}.deletes.txt")


def choose(job: JobConfig, report: Report, read: ReadState) -> np.ndarray:
    """The keys of the customers to delete; DeleteRefused when a guard trips."""
    if read.stopped:
        raise DeleteRefused(f"deletes not sent: the run stopped early ({read.stopped})")
    if read.rows_pending:
        raise DeleteRefused(f"deletes not sent: {read.rows_pending:,} rows are still pending")
    diff = read.diff
    if report.rows_read == 0 or diff is None:
        raise DeleteRefused("deletes not sent: the export is empty (no row read)")
    if diff.unidentified:
        raise DeleteRefused(
            f"deletes not sent: {diff.unidentified:,} rows read have no readable customer_id"
            " (malformed or invalid), so who is absent is not known"
        )
    absent = diff.absent_keys()
    of = len(diff.seen)
    settings = job.sync.delete_absent
    if len(absent) > settings.max_fraction * of:
        raise DeleteRefused(
            f"deletes not sent: {len(absent):,} of the {of:,} customers in the snapshot"
            f" ({len(absent) / of:.1%}) are absent, more than"
            f" sync.delete_absent.max_fraction ({settings.max_fraction:.1%}): a truncated export?"
        )
    if settings.max_count is not None and len(absent) > settings.max_count:
        raise DeleteRefused(
            f"deletes not sent: {len(absent):,} customers are absent, more than"
            f" sync.delete_absent.max_count ({settings.max_count:,})"
        )
    return absent


def targets(job: JobConfig, report: Report, keys: np.ndarray, *, dry_run: bool) -> dict[int, str]:
    """The ids of `keys` this job kept; customers delivered before delete_absent was on
    have none and are left alone (a run with --full records them)."""
    store = CustomerIds(job.output.state, job_scope(job), read_only=dry_run)
    try:
        ids = store.ids_of(keys)
    finally:
        store.close()
    unknown = len(keys) - len(ids)
    if unknown:
        warning = (
            f"{unknown:,} absent customers have no recorded customer_id (delivered before"
            " sync.delete_absent was on) and were not deleted; a run with --full records them"
        )
        if report.warn(warning):
            log.warning("%s", warning)
    return ids


def write_plan(path: Path, ids: list[str]) -> None:
    """The ids a dry run would delete, one a line, mode 0600 (they are personal data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.writelines(f"{customer_id}\n" for customer_id in ids)


class Deleter:
    """Sends deletes, `concurrency` in flight, paced by rate_limit.deletes; records each
    end: deleted customers leave the snapshot, failures go to the dead-letter file."""

    def __init__(
        self,
        job: JobConfig,
        report: Report,
        writer: DeadLetterWriter | None,
        run_id: str,
        transport: Transport,
        store: CustomerIds | None,
        stopping: asyncio.Event | None = None,
    ) -> None:
        limits = job.rate_limit.deletes
        self.client = UsersApiClient(
            job.api,
            transport,
            limiter=WindowLimiter(limits.requests, limits.period_seconds),
            in_transit_seconds=job.delivery.timeout_seconds,
        )
        self.report = report
        self.writer = writer
        self.run_id = run_id
        self.store = store
        self.concurrency = job.delivery.concurrency
        self.stopping = stopping or asyncio.Event()  # set: no new delete is started
        self._done: list[int] = []

    async def send(self, pending: list[tuple[int, str]]) -> None:
        queue: asyncio.Queue[tuple[int, int, str]] = asyncio.Queue()
        for number, (key, customer_id) in enumerate(pending, start=1):
            queue.put_nowait((number, key, customer_id))
        workers = [asyncio.create_task(self._work(queue)) for _ in range(self.concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            self._forget()

    async def _work(self, queue: asyncio.Queue[tuple[int, int, str]]) -> None:
        while not queue.empty() and not self.stopping.is_set():
            number, key, customer_id = queue.get_nowait()
            result = await self.client.delete(customer_id)
            if result.ok:
                self.report.customers_deleted += 1
                self._done.append(key)
                if len(self._done) >= FORGET_EVERY:
                    self._forget()
                continue
            self._dead_letter(number, customer_id, result.status, result.error or "failed")

    def _forget(self) -> None:
        done, self._done = self._done, []
        if self.store is not None and done:
            self.store.forget(done)

    def _dead_letter(self, number: int, customer_id: str, status: int | None, error: str) -> None:
        self.report.deletes_failed += 1
        if self.writer is None:
            return
        body = {"identity_type": moengage.DELETE_IDENTITY_TYPE, "identity_value": customer_id}
        self.writer.write(
            DeadLetter(
                DELETE_SOURCE,
                number,
                "delete",
                f"delete failed: {error}",
                status,
                customer_id,
                {},
                body,
                run_id=self.run_id,
            )
        )
        self.writer.flush()


def open_delete_transport(job: JobConfig) -> AiohttpTransport:
    return AiohttpTransport(
        timeout_seconds=job.delivery.timeout_seconds,
        concurrency=job.delivery.concurrency,
        ca_bundle=job.api.ca_bundle,
    )


async def delete_absent(
    job: JobConfig,
    report: Report,
    writer: DeadLetterWriter | None,
    run_id: str,
    read: ReadState,
    *,
    dry_run: bool,
    stopping: asyncio.Event | None = None,
) -> None:
    """After a run's read and delivery: delete the absent customers (a dry run lists them).

    Raises DeleteRefused when a guard trips (nothing deleted)."""
    if read.resumed:
        # Not a guard: rows settled by an earlier run (a resumed run, or the same export
        # again) were skipped unread, so who is absent is not known tonight.
        warning = (
            "absent customers not deleted: rows settled by an earlier run were skipped, so"
            " this run did not read the whole export (the next complete read deletes them)"
        )
        if report.warn(warning):
            log.warning("%s", warning)
        return
    keys = choose(job, report, read)
    ids = targets(job, report, keys, dry_run=dry_run) if len(keys) else {}
    pending = sorted(ids.items(), key=lambda item: item[1])
    if dry_run:
        path = deletes_path(job.output.report)
        write_plan(path, [customer_id for _, customer_id in pending])
        report.customers_deleted = len(pending)
        log.info("%s absent customers would be deleted; their ids are in %s", len(pending), path)
        return
    if pending:
        log.info("deleting %s absent customers", f"{len(pending):,}")
        await _send(job, report, writer, run_id, pending, stopping)


async def replay_deletes(
    job: JobConfig,
    report: Report,
    writer: DeadLetterWriter | None,
    run_id: str,
    ids: list[str],
    stopping: asyncio.Event | None = None,
) -> None:
    """Dead-letter lines of stage `delete` sent again (their customers were judged absent
    by the run that wrote them)."""
    if ids:
        await _send(job, report, writer, run_id, delivered_keys(ids), stopping)


def delivered_keys(ids: list[str]) -> list[tuple[int, str]]:
    """(snapshot key, id) of each id once."""
    return keyed_ids(list(dict.fromkeys(ids)))


async def _send(
    job: JobConfig,
    report: Report,
    writer: DeadLetterWriter | None,
    run_id: str,
    pending: list[tuple[int, str]],
    stopping: asyncio.Event | None,
) -> None:
    store = CustomerIds(job.output.state, job_scope(job))
    transport = open_delete_transport(job)
    try:
        deleter = Deleter(job, report, writer, run_id, transport, store, stopping)
        await deleter.send(pending)
    finally:
        await transport.close()
        store.close()


def expire_deletes(job: JobConfig) -> None:
    """At run start: customers sent again within MoEngage's hard-delete window of their
    delete lost that update; the first run after the window sends them in full again."""
    store = CustomerIds(job.output.state, job_scope(job))
    try:
        again = store.expire(job.sync.delete_absent.window_seconds)
    finally:
        store.close()
    if again:
        log.info(
            "%s customers came back within a day of their delete; they are sent in full again",
            f"{again:,}",
        )
