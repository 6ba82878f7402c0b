"""`replay`: send the rows of a dead-letter file again.

Rows that failed in delivery or were rejected are re-sent as they were (their payload);
rows that failed validation are re-mapped from their record with the job's current mapping.
A line whose row a later run of the job accepted (its saved progress says so) is skipped.
What a replay delivers is recorded in the job's state, so the job's next run no longer
counts those rows as dead-lettered; an interrupted replay resumes (see `ReplayStore`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from importer import sources
from importer.config import JobConfig
from importer.mapping import MALFORMED_RECORD_KEY, RowMapper
from importer.outputs.deadletter import DeadLetter, DeadLetterError, read_dead_letter
from importer.rows import Chunk, InvalidRow, LineMap, Row
from importer.run.exactly_once import EventLedger
from importer.run.feed import Batcher, Fingerprints, Work
from importer.run.options import RunOptions, RunOutcome
from importer.run.pipeline import Run
from importer.run.preflight import mapper_for, scope_of
from importer.run.retarget import check_origins
from importer.state import (
    DeliveredIds,
    RunState,
    Scope,
    SettledRows,
    SnapshotEntries,
    StateError,
    StateFault,
    StateStore,
    progress_scope,
)
from importer.state.events_ledger import LedgerKeys

log = logging.getLogger("importer")


class LetterRecords:
    """The records of dead-letter lines, by row number, standing in for a source chunk."""

    def __init__(self, letters: list[DeadLetter]) -> None:
        self._records = {letter.row: letter.record for letter in letters}
        self._lines = {letter.row: letter.line for letter in letters}

    def record(self, row: int) -> dict[str, Any]:
        return self._records.get(row, {})

    def line(self, row: int) -> int | None:
        """The CSV line the earlier run wrote down for the row, if any."""
        return self._lines.get(row)


def replay_paths(dead_letter_in: Path) -> tuple[Path, Path]:
    """Default outputs of a replay, beside its input: X.replay.jsonl and X.replay.report.json."""
    stem = dead_letter_in.name.removesuffix(".jsonl")
    return (
        dead_letter_in.with_name(f"{stem}.replay.jsonl"),
        dead_letter_in.with_name(f"{stem}.replay.report.json"),
    )


def _by_source(letters: list[DeadLetter]) -> dict[str, list[DeadLetter]]:
    grouped: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        grouped.setdefault(letter.source, []).append(letter)
    return grouped


def _resend_rows(letters: list[DeadLetter], records: LetterRecords) -> list[Row]:
    rows = []
    for letter in letters:
        if letter.payload is None:
            raise DeadLetterError(
                f"row {letter.row} of {letter.source} (stage {letter.stage}) "
                "has no payload to re-send"
            )
        rows.append(
            Row(
                letter.source,
                letter.row,
                letter.customer_id,
                orjson.dumps(letter.payload),
                records,
            )
        )
    return rows


def _remap_chunk(source: str, letters: list[DeadLetter], mapper: RowMapper) -> Chunk:
    frame = pd.DataFrame.from_records(
        [letter.record for letter in letters], index=[letter.row for letter in letters]
    )
    mapper.check_columns([str(c) for c in frame.columns], source)
    known = sorted((d.row, d.line) for d in letters if d.line is not None)
    lines = LineMap(np.array([r for r, _ in known], np.int64), np.array([n for _, n in known]))
    return Chunk(source, frame, lines=lines if known else None)


def _is_malformed(letter: DeadLetter) -> bool:
    return set(letter.record) == {MALFORMED_RECORD_KEY}


def _fitting(rows: list[Row], limit: int) -> tuple[list[Row], list[InvalidRow]]:
    """Rows whose element fits one request of this job; the others as validation failures."""
    fitting, too_large = [], []
    for row in rows:
        if len(row.encoded) <= limit:
            fitting.append(row)
            continue
        error = f"element is {len(row.encoded)} bytes; one request holds at most {limit}"
        too_large.append(
            InvalidRow(row.source, row.row, row.customer_id, error, row.record(), row.element)
        )
    return fitting, too_large


# One source's lines ready to batch: (lines read, valid rows, invalid rows), in row order.
_Group = tuple[int, list[Row], list[InvalidRow]]


def replay_groups(letters: list[DeadLetter], mapper: RowMapper) -> Iterator[_Group]:
    for source, group in _by_source(letters).items():
        records = LetterRecords(group)
        resend = [d for d in group if d.stage != "validation"]
        malformed = [d for d in group if d.stage == "validation" and _is_malformed(d)]
        remap = [d for d in group if d.stage == "validation" and not _is_malformed(d)]
        rows, invalid = _fitting(_resend_rows(resend, records), mapper.max_element_bytes)
        # A record that was never split into columns cannot be re-mapped: it stays as it was.
        invalid += [
            InvalidRow(
                d.source, d.row, d.customer_id, d.error, d.record, d.payload, d.line, d.lines
            )
            for d in malformed
        ]
        if remap:
            mapped = mapper.map_chunk(_remap_chunk(source, remap, mapper))
            rows += mapped.valid
            invalid += mapped.invalid
        rows.sort(key=lambda r: r.row)
        invalid.sort(key=lambda r: r.row)
        yield len(group), rows, invalid


class ReplayFeed:
    """The rows of a dead-letter file as work; every line is checked before anything is sent."""

    # Its progress is not a source file's: the run opens a `ReplayStore` for it instead.
    keeps_progress = False

    def __init__(
        self,
        letters: list[DeadLetter],
        mapper: RowMapper,
        already_settled: tuple[int, int] = (0, 0),
    ) -> None:
        """`already_settled`: (lines left out, of which still dead-lettered), as skipped rows."""
        self.already_settled = already_settled
        self.groups = list(replay_groups(letters, mapper))
        self.ledger: EventLedger | None = None  # events: what was accepted is not resent
        self.fingerprints: Fingerprints = {}
        for letter in letters:
            if letter.fingerprint:  # new dead-letter lines keep naming the source they came from
                self.fingerprints.setdefault(letter.source, (letter.source, letter.fingerprint))

    def absent(self) -> tuple[int, int] | None:
        return None  # a replay compares nothing with the snapshot

    def work(self, state: RunState | None, batch: Batcher) -> Iterator[Work]:
        if self.already_settled[0]:
            yield Work(self.already_settled[0], self.already_settled, [], [])
        for read, rows, invalid in self.groups:
            already: list[int] = []
            source = rows[0].source if len(rows) else ""
            if self.ledger is not None and len(rows):
                rows, already = self.ledger.accepted_before(rows)
            work = batch(read, (0, 0), rows, invalid)
            work.already_sent, work.source = already, source
            yield work


class ReplayStore:
    """The job's state file during a replay (a `RunState`), holding two scopes of it.

    What the replay delivers is recorded for the job (its scope, as `REPLAYED`), so rows
    an earlier run dead-lettered and the replay delivered no longer count against it. Every
    row the replay settles (accepted, or dead-lettered again) is also recorded under a
    scope of the replay's own, so an interrupted replay resumes where it stopped.
    """

    def __init__(self, path: Path, job_scope: Scope | str, own_scope: str, *, fresh: bool) -> None:
        """`job_scope`: the job's scope (claimed, see `ScopedProgress.claim`), or its key."""
        key = job_scope if isinstance(job_scope, str) else job_scope.key
        self.job = StateStore(path, key, fresh=fresh)
        if isinstance(job_scope, Scope):
            self.job.claim(job_scope)
        self.own = self.job.with_scope(own_scope)
        if fresh:
            self.own.forget_scope()

    @property
    def path(self) -> Path:
        return self.job.path

    def close(self) -> None:
        self.job.close()  # the one connection, which the replay's own view shares

    def has_progress(self) -> bool:
        return self.own.scope_has_progress()

    def settled(self, source: str, fingerprint: str) -> SettledRows:
        return self.job.settled(source, fingerprint)

    def changed_sources(self, source: str, fingerprint: str) -> bool:
        return self.job.changed_sources(source, fingerprint)

    def other_scope(self, source: str) -> bool:
        return self.job.other_scope(source)

    def compact(self) -> None:
        self.job.compact()

    def earlier_versions(self, source: str) -> list[str]:
        return self.job.earlier_versions(source)

    def carry_over(self, source: str, old: str, new: str) -> None:
        self.job.carry_over(source, old, new)

    def mark_settled(
        self,
        source: str,
        fingerprint: str,
        rows: Iterable[int],
        *,
        dead_lettered: bool = False,
        retry_later: bool = False,
        snapshot: SnapshotEntries = (),
        delivered: DeliveredIds = (),
        ledger: LedgerKeys = (),
    ) -> None:
        # `snapshot` and `delivered` are left alone: a replayed row is sent again the next
        # night under sync.mode changed, the safe direction.
        rows = list(rows)
        # The job's record first: a row it counts as delivered is left out of a resumed
        # replay even if the replay's own mark below is lost.
        if dead_lettered:
            self.job.mark_settled(
                source, fingerprint, rows, dead_lettered=True, retry_later=retry_later
            )
        else:
            self.job.mark_replayed(source, fingerprint, rows, ledger)  # events: never twice
        # For the replay, a row failed again is done: it is in the replay's dead-letter file.
        self.own.mark_settled(source, fingerprint, rows, dead_lettered=dead_lettered)


def replay_scope(job_scope: Scope, dead_letter_in: Path, name: str | None = None) -> str:
    """A replay's own progress belongs to its input (path or URL, content), the job's scope."""
    target = {
        "replay": name or str(dead_letter_in.resolve()),
        "content": sources.fingerprint(dead_letter_in),
        "job": job_scope.key,
    }
    return progress_scope(target, None)


def replay_dead_letter(job: JobConfig, dead_letter_in: Path, options: RunOptions) -> RunOutcome:
    every = list(read_dead_letter(dead_letter_in))
    # Delete lines are not rows: their customers are deleted again after the rows are sent.
    deletes = [d.customer_id for d in every if d.stage == "delete" and d.customer_id]
    letters = _unique(d for d in every if d.stage != "delete")
    if job.output.dead_letter.resolve() == dead_letter_in.resolve():
        raise DeadLetterError(
            f"replay would overwrite its input {dead_letter_in}; pass --dead-letter for its output"
        )
    scope = scope_of(job, options.job)
    check_origins(letters, scope, dead_letter_in, retarget=options.retarget)
    own_scope = replay_scope(scope, dead_letter_in, options.replay_name)
    known = _Known(job.output.state, scope, own_scope, fresh=options.fresh)
    letters, left_out = known.still_to_send(letters)
    mapper = mapper_for(job)
    state_path = job.output.state

    def open_state() -> RunState:
        return ReplayStore(state_path, scope, own_scope, fresh=options.fresh)

    feed = ReplayFeed(letters, mapper, already_settled=left_out)
    if job.import_ == "events":  # replayed lines whose events were accepted since: not resent
        feed.ledger = EventLedger(job, replay=True)
    for source, fingerprint, key in known.sources(letters):
        feed.fingerprints[source] = (key, fingerprint)
    run = Run(job, options, [], mapper, feed, open_state=open_state)
    run.report.replay_of = options.replay_name or str(dead_letter_in)
    run.replay_deletes = deletes
    return asyncio.run(run.execute())


class _Known:
    """What the job's state file says about dead-letter lines before a replay sends any."""

    def __init__(self, state_path: Path, job: Scope, own: str, *, fresh: bool) -> None:
        self.state_path = state_path
        self.job_scope = job
        self.own_scope = own
        self.fresh = fresh
        self._keys: dict[tuple[str, str], str] = {}

    def sources(self, letters: list[DeadLetter]) -> list[tuple[str, str, str]]:
        """(source as the lines name it, fingerprint, path its progress is saved under)."""
        seen: dict[str, tuple[str, str, str]] = {}
        for letter in letters:
            if letter.source not in seen:
                # Lines from before fingerprints were written: progress under no real file.
                fingerprint = letter.fingerprint or ""
                key = self._keys.get((letter.source, fingerprint))
                seen[letter.source] = (letter.source, fingerprint, key or letter.source)
        return list(seen.values())

    def still_to_send(self, letters: list[DeadLetter]) -> tuple[list[DeadLetter], tuple[int, int]]:
        """The lines to send, and (lines left out, of which dead-lettered again): a row some
        run accepted since is left out, and so is one this replay settled before it stopped."""
        if not self.state_path.exists():
            return letters, (0, 0)
        try:
            store = StateStore(self.state_path, self.job_scope.key)
            store.claim(self.job_scope)
        except (StateError, StateFault) as error:
            log.warning(
                "cannot tell which rows were settled since (%s); replaying every line", error
            )
            return letters, (0, 0)
        try:
            return self._filter(store, letters)
        except StateFault as error:
            log.warning(
                "cannot tell which rows were settled since (%s); replaying every line", error
            )
            return letters, (0, 0)
        finally:
            with contextlib.suppress(StateFault):
                store.close()

    def _filter(
        self, store: StateStore, letters: list[DeadLetter]
    ) -> tuple[list[DeadLetter], tuple[int, int]]:
        own = store.with_scope(self.own_scope)
        accepted: dict[tuple[str, str], list[tuple[int, int]]] = {}
        mine: dict[tuple[str, str], SettledRows] = {}
        kept: list[DeadLetter] = []
        since = resumed = resumed_dead = 0
        for letter in letters:
            key = (letter.source, letter.fingerprint or "")
            if key not in accepted:
                stored = store.stored_path(*key)
                self._keys[key] = stored
                accepted[key] = store.accepted(*key) if letter.fingerprint else []
                mine[key] = SettledRows([]) if self.fresh else own.settled(stored, key[1])
            if _within(letter.row, mine[key].ranges):
                resumed += 1
                resumed_dead += _within(letter.row, mine[key].dead)
            elif _within(letter.row, accepted[key]):
                since += 1
            else:
                kept.append(letter)
        if since:
            log.warning(
                "skipping %s dead-letter lines whose row a later run accepted", f"{since:,}"
            )
        if resumed:
            log.warning(
                "resuming: %s lines were settled by an earlier try of this replay (--fresh: all)",
                f"{resumed:,}",
            )
        return kept, (since + resumed, resumed_dead)


def _within(row: int, ranges: list[tuple[int, int]]) -> bool:
    at = bisect.bisect_right(ranges, (row, math.inf)) - 1
    return at >= 0 and ranges[at][1] >= row


def _unique(letters: Iterable[DeadLetter]) -> list[DeadLetter]:
    """One line per (source, row): a crash between writing a line and saving progress can
    write a row's line twice, and a replay must not send it twice."""
    latest: dict[tuple[str, int], DeadLetter] = {}
    for letter in letters:
        latest[(letter.source, letter.row)] = letter
    return list(latest.values())
