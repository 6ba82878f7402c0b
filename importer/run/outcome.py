"""The outcome stage: the one place a row ends (accepted, unchanged, dead-lettered, skipped).

A row is accepted when the request holding it got a 2xx, or written to the dead-letter
file (flushed) before it is marked settled in the state store, so a crash at any point
loses nothing. `Settler` is the only writer of the report's `rows_*` counts.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from importer.mapping.unset import count_unsets
from importer.outputs.deadletter import DeadLetter, DeadLetterFault, DeadLetterWriter
from importer.outputs.progress import Progress
from importer.outputs.report import Report, count_reasons
from importer.rows import InvalidRow, Row
from importer.run.exactly_once import LEFT_IN_FLIGHT, EventLedger
from importer.run.feed import Work
from importer.run.results import DeliveryStats, Refusal, SendResult
from importer.run.sync import ABSENT_WARNING_SHARE, CustomerKeys, delivered_ids
from importer.state import DeliveredIds, RunState, SnapshotEntries, StateFault
from importer.state.events_ledger import LedgerKeys

log = logging.getLogger("importer")


@dataclass(frozen=True)
class _Mark:
    """Progress (and snapshot entries) to save in one transaction."""

    source: str
    rows: list[int]
    dead_lettered: bool = False
    retry_later: bool = False
    snapshot: SnapshotEntries = ()
    delivered: DeliveredIds = ()
    ledger: LedgerKeys = ()


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
        state: RunState | None,
        fingerprints: dict[str, tuple[str, str]],
        progress: Progress,
        run_id: str | None = None,
        customer_keys: CustomerKeys | None = None,
        ledger: EventLedger | None = None,
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
        self._unsaved: list[_Mark] = []
        # sync.mode changed: who accepted rows are about, for the snapshot (None: no snapshot)
        self.customer_keys = customer_keys
        # sync.delete_absent: the ids of accepted customers are kept beside the snapshot.
        self.keep_ids = False
        # on_empty: unset in the mapping: accepted elements' unsets are counted.
        self.counts_unsets = True
        # events: the keys of accepted rows, saved with their progress (see exactly_once)
        self.ledger = ledger

    def read(self, count: int) -> None:
        self.report.rows_read += count

    def work_read(self, work: Work) -> None:
        """What a chunk settles before any request: rows read, skipped, invalid, unchanged."""
        self.read(work.rows_read)
        for warning in work.warnings:
            if self.report.warn(warning):
                log.warning("%s", warning)
        if work.rows_skipped[0]:
            self.skipped(*work.rows_skipped)
        self.invalid(work.invalid)
        if work.unchanged:
            self.unchanged(work.source, work.unchanged)
        if self.report.dry_run and self.counts_unsets:  # what a run would clear, as planned
            for batch in work.batches:
                self.report.unsets_sent += sum(map(count_unsets, batch.encoded))
        if work.already_sent:
            self.already_sent(work.source, work.already_sent)
        if work.uncertain:  # events an earlier run left in flight (on_lost_answer dead_letter)
            self.refused([Refusal(r, "uncertain", None, LEFT_IN_FLIGHT) for r in work.uncertain])

    def answered(self, result: SendResult) -> None:
        """A send's outcome, both halves recorded even when the first fails to save; then
        the fault, if any, is raised (SettleFault: the run stops, exit 3)."""
        fault: SettleFault | None = None
        try:
            self.accepted(result.accepted)
        except SettleFault as error:
            fault = error
        try:
            self.refused(result.refused)
        except SettleFault as error:
            fault = error
        if fault is not None:
            raise fault

    def _fail(self, error: Exception) -> SettleFault:
        if self.fault is None:
            self.fault = str(error)
        return SettleFault(self.fault)

    def _mark(
        self,
        source: str,
        rows: list[int],
        dead_lettered: bool = False,
        retry_later: bool = False,
        snapshot: SnapshotEntries = (),
        delivered: DeliveredIds = (),
        ledger: LedgerKeys = (),
    ) -> None:
        self.progress.advance(len(rows))
        if self.state is None or not rows:
            return
        mark = _Mark(source, rows, dead_lettered, retry_later, snapshot, delivered, ledger)
        if self.fault is not None:
            self._unsaved.append(mark)
            return
        try:
            self._save(mark)
        except StateFault as error:
            self._unsaved.append(mark)
            raise self._fail(error) from None

    def _save(self, mark: _Mark) -> None:
        assert self.state is not None
        self.state.mark_settled(
            *self.fingerprints[mark.source],
            mark.rows,
            dead_lettered=mark.dead_lettered,
            retry_later=mark.retry_later,
            snapshot=mark.snapshot,
            delivered=mark.delivered,
            ledger=mark.ledger,
        )

    def skipped(self, count: int, dead_lettered: int) -> None:
        self.report.rows_skipped += count
        self.report.rows_skipped_dead_lettered += dead_lettered
        self.progress.advance(count)

    def unchanged(self, source: str, rows: list[int]) -> None:
        """Rows whose element MoEngage holds already: settled like accepted rows, so a
        resumed run does not compare them again with a snapshot its later rows moved on."""
        self.report.rows_unchanged += len(rows)
        self._mark(source, rows)

    def already_sent(self, source: str, rows: list[int]) -> None:
        """Events the ledger holds as accepted (by an earlier run, or earlier in this one):
        settled, never sent again."""
        self.report.rows_already_sent += len(rows)
        self._mark(source, rows)

    def accepted(self, rows: list[Row]) -> None:
        """Counted first: the API took them, whatever happens to our own records after.

        Their progress and, in changed mode, their snapshot entries are saved in one
        transaction per source file."""
        self.report.rows_accepted += sum(len(r.numbers) for r in rows)
        if self.counts_unsets:
            self.report.unsets_sent += sum(count_unsets(r.encoded) for r in rows)
        by_source: dict[str, list[Row]] = {}
        for row in rows:
            by_source.setdefault(row.source, []).append(row)
        fault: SettleFault | None = None
        for source, group in by_source.items():
            numbers = [number for row in group for number in row.numbers]
            keys = self.customer_keys
            snapshot = keys.of_rows(group) if keys is not None and self.state else ()
            delivered = delivered_ids(group) if snapshot and self.keep_ids else ()
            ledger = self.ledger.take(group) if self.ledger is not None else ()
            try:
                self._mark(source, numbers, snapshot=snapshot, delivered=delivered, ledger=ledger)
            except SettleFault as error:
                fault = error
        if fault is not None:
            raise fault

    def absent(self, absent: int, of: int) -> None:
        """Snapshot customers a run that read its whole input did not see."""
        self.report.customers_absent = absent
        if of and absent > ABSENT_WARNING_SHARE * of:
            warning = (
                f"{absent:,} of the {of:,} customers in the snapshot ({absent / of:.0%}) were"
                " not in this input: a truncated export? (they were not changed in MoEngage)"
            )
            if self.report.warn(warning):
                log.warning("%s", warning)

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
        if self.ledger is not None:
            self.ledger.forget(refusals)
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
        for stage in ("validation", "rejected", "delivery", "uncertain"):
            pairs = ((d.source, d.row) for d in letters if d.stage == stage)
            for source, numbers in _by_source(pairs).items():
                try:
                    # Delivery failures were never refused for their data: a rerun resends them.
                    self._mark(source, numbers, True, retry_later=stage == "delivery")
                except SettleFault as error:
                    fault = error
        if fault is not None:
            raise fault

    def summarise(self, duplicate_customers: int, requests_planned: int) -> None:
        """The report's summary of the rows: invalid reasons, duplicates, planned requests."""
        self.report.invalid_reasons = dict(self.reasons.most_common())
        self.report.duplicate_customers = duplicate_customers
        self.report.requests_planned = requests_planned
        if self.ledger is not None:  # resent after an earlier run was killed mid-request
            self.report.events_possibly_duplicated += self.ledger.possibly_duplicated

    def finish(self) -> None:
        """One more try at saving the progress marks a failed write left unsaved."""
        if self.state is None or not self._unsaved:
            return
        while self._unsaved:
            try:
                self._save(self._unsaved[0])
            except StateFault:
                break  # still failing: each further try would only wait out the same lock
            self._unsaved.pop(0)
        if self._unsaved:
            lost = sum(len(mark.rows) for mark in self._unsaved)
            log.error(
                "progress of %s settled rows could not be saved; a rerun sends them again",
                f"{lost:,}",
            )


def record_delivery(report: Report, stats: DeliveryStats) -> None:
    """The requests side of the report: attempts, retries, statuses, waits."""
    report.requests = stats.requests
    report.retries = stats.retries
    report.http_429 = stats.http_429
    report.status_counts = {str(k): v for k, v in sorted(stats.by_status.items())}
    report.rate_settled_per_minute = stats.rate_settled_per_minute()
    report.outage_seconds = round(stats.outage_seconds, 1)
    report.rate_limited_wait_seconds = round(stats.rate_limited_wait_seconds, 1)
    report.events_possibly_duplicated = stats.events_possibly_duplicated
    report.rate_limit_learned_per_minute = stats.rate_limit_learned


def _by_source(pairs: Iterable[tuple[str, int]]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for source, row in pairs:
        grouped.setdefault(source, []).append(row)
    return grouped
