"""The outcome stage: the one place a row ends (accepted, unchanged, dead-lettered, skipped).

A row is accepted when the request holding it got a 2xx, or written to the dead-letter
file (flushed) before it is marked settled in the state store, so a crash at any point
loses nothing. `Settler` is the only writer of the report's `rows_*` counts.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from importer.deadletter import DeadLetter, DeadLetterFault, DeadLetterWriter
from importer.progress import Progress
from importer.report import Report, count_reasons
from importer.rows import InvalidRow, Row
from importer.state import StateFault, StateStore

if TYPE_CHECKING:
    from importer.delivery import Refusal

log = logging.getLogger("importer")


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

    def read(self, count: int) -> None:
        self.report.rows_read += count

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


def _by_source(pairs: Iterable[tuple[str, int]]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for source, row in pairs:
        grouped.setdefault(source, []).append(row)
    return grouped
