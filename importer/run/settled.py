"""Rows an earlier run settled, left out of a rerun: dropped before mapping, or (when
delivery failures are resent) chosen after it so a customer's last row stays the last."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from importer.mapping.events import is_event
from importer.rows import Chunk, InvalidRow, MappedChunk, Row, ValidRows
from importer.run import batching, ordering
from importer.state import SettledRows


def within_ranges(numbers: np.ndarray, ranges: list[tuple[int, int]]) -> np.ndarray:
    inside = np.zeros(len(numbers), dtype=bool)
    for first, last in ranges:
        inside |= (numbers >= first) & (numbers <= last)
    return inside


def drop_settled_rows(chunk: Chunk, settled: SettledRows) -> tuple[int, int]:
    """Remove rows an earlier run settled (beyond the contiguous prefix already skipped).

    Returns (rows skipped, of which dead-lettered by that earlier run)."""
    if not settled.ranges:
        return 0, 0
    numbers = np.concatenate(
        [chunk.frame.index.to_numpy(dtype=np.int64), np.array([m[0] for m in chunk.malformed])]
    ).astype(np.int64)
    done = within_ranges(numbers, settled.ranges)
    if not done.any():
        return 0, 0
    rows = len(chunk.frame)
    chunk.frame = chunk.frame[~done[:rows]]
    chunk.malformed = [m for m, gone in zip(chunk.malformed, done[rows:], strict=True) if not gone]
    return int(done.sum()), int((done & within_ranges(numbers, settled.dead)).sum())


def resend_filter(
    mapped: MappedChunk, settled: SettledRows, resent: set[str]
) -> tuple[Sequence[Row], list[InvalidRow], tuple[int, int]]:
    """A chunk's rows for a rerun that resends delivery failures, in file order.

    Rows not settled are sent, and their customers noted in `resent`; a row accepted by an
    earlier run is sent again when its customer has an earlier row being resent (else the
    resent older row would end up the last update applied); other settled rows are skipped.
    Returns (valid rows to send, invalid rows to dead-letter, (skipped, of which dead)).
    """
    valid = mapped.valid
    numbers = np.asarray(numbers_of(valid), dtype=np.int64)
    done = within_ranges(numbers, settled.ranges)
    dead = within_ranges(numbers, settled.dead)
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
    invalid_done = within_ranges(invalid_numbers, settled.ranges)
    invalid = [r for r, gone in zip(mapped.invalid, invalid_done, strict=True) if not gone]
    skipped = len(valid) - len(keep) + int(invalid_done.sum())
    skipped_dead = int(dead.sum()) + int(
        (invalid_done & within_ranges(invalid_numbers, settled.dead)).sum()
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


def numbers_of(rows: Sequence[Row]) -> list[int]:
    return rows.numbers if isinstance(rows, ValidRows) else [row.row for row in rows]


def dead_in_prefix(settled: SettledRows, prefix: int) -> int:
    return sum(min(last, prefix) - first + 1 for first, last in settled.dead if first <= prefix)
