"""`replay`: send the rows of a dead-letter file again.

Rows that failed in delivery or were rejected are re-sent as they were (their payload);
rows that failed validation are re-mapped from their record with the job's current mapping.
A line whose row a later run of the job accepted (its saved progress says so) is skipped.
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

from importer.config import JobConfig
from importer.deadletter import DeadLetter, DeadLetterError, read_dead_letter
from importer.feed import Batcher, Fingerprints, Work
from importer.mapping import MALFORMED_RECORD_KEY, Mapper
from importer.pipeline import Run, RunOptions, RunOutcome, mapper_for
from importer.rows import Chunk, InvalidRow, LineMap, Row
from importer.state import StateError, StateFault, StateStore

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


def _remap_chunk(source: str, letters: list[DeadLetter], mapper: Mapper) -> Chunk:
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


def replay_groups(letters: list[DeadLetter], mapper: Mapper) -> Iterator[_Group]:
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

    # Replay keeps no progress: the dead-letter file is its input.
    keeps_progress = False

    def __init__(
        self, letters: list[DeadLetter], mapper: Mapper, already_accepted: int = 0
    ) -> None:
        self.already_accepted = already_accepted
        self.groups = list(replay_groups(letters, mapper))
        self.fingerprints: Fingerprints = {}
        for letter in letters:
            if letter.fingerprint:  # new dead-letter lines keep naming the source they came from
                self.fingerprints.setdefault(letter.source, (letter.source, letter.fingerprint))

    def absent(self) -> tuple[int, int] | None:
        return None  # a replay compares nothing with the snapshot

    def work(self, state: StateStore | None, batch: Batcher) -> Iterator[Work]:
        if self.already_accepted:
            yield Work(self.already_accepted, (self.already_accepted, 0), [], [])
        for read, rows, invalid in self.groups:
            yield batch(read, (0, 0), rows, invalid)


def replay_dead_letter(job: JobConfig, dead_letter_in: Path, options: RunOptions) -> RunOutcome:
    letters = _unique(read_dead_letter(dead_letter_in))
    if job.output.dead_letter.resolve() == dead_letter_in.resolve():
        raise DeadLetterError(
            f"replay would overwrite its input {dead_letter_in}; pass --dead-letter for its output"
        )
    letters, done = _not_accepted_since(letters, job.output.state)
    if done:
        log.warning("skipping %s dead-letter lines whose row a later run accepted", f"{done:,}")
    mapper = mapper_for(job)
    feed = ReplayFeed(letters, mapper, already_accepted=done)
    return asyncio.run(Run(job, options, [], mapper, feed).execute())


def _not_accepted_since(
    letters: list[DeadLetter], state_path: Path
) -> tuple[list[DeadLetter], int]:
    """The letters whose row no later run accepted, and how many were left out."""
    if not state_path.exists():
        return letters, 0
    try:
        store = StateStore(state_path)
    except (StateError, StateFault) as error:
        log.warning("cannot tell which rows were accepted since (%s); replaying every line", error)
        return letters, 0
    try:
        accepted: dict[tuple[str, str], list[tuple[int, int]]] = {}
        kept = []
        for letter in letters:
            if letter.fingerprint is None:
                kept.append(letter)
                continue
            key = (letter.source, letter.fingerprint)
            if key not in accepted:
                accepted[key] = store.accepted(*key)
            ranges = accepted[key]
            at = bisect.bisect_right(ranges, (letter.row, math.inf)) - 1
            if at < 0 or ranges[at][1] < letter.row:
                kept.append(letter)
        return kept, len(letters) - len(kept)
    except StateFault as error:
        log.warning("cannot tell which rows were accepted since (%s); replaying every line", error)
        return letters, 0
    finally:
        with contextlib.suppress(StateFault):
            store.close()


def _unique(letters: Iterable[DeadLetter]) -> list[DeadLetter]:
    """One line per (source, row): a crash between writing a line and saving progress can
    write a row's line twice, and a replay must not send it twice."""
    latest: dict[tuple[str, int], DeadLetter] = {}
    for letter in letters:
        latest[(letter.source, letter.row)] = letter
    return list(latest.values())
