"""The snapshot (incremental sync, see `importer.run.sync`): per scope and customer key, the
fingerprint of the last element the API accepted.

64-bit integers in a table without rowid, written only together with the progress of the
rows that set them (`ScopedProgress.mark_settled`), so a crash never leaves a customer
recorded whose row is not.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from importer.state.database import read_only, tables

# Snapshot entries: (customer key hash, element fingerprint), both signed 64-bit.
SnapshotEntries = Sequence[tuple[int, int]]


def snapshot_scope_id(db: sqlite3.Connection, scope: str) -> int:
    """The snapshot's id for `scope`, created on first use."""
    db.execute("INSERT OR IGNORE INTO snapshot_scopes(scope) VALUES (?)", (scope,))
    (scope_id,) = db.execute("SELECT id FROM snapshot_scopes WHERE scope = ?", (scope,)).fetchone()
    return int(scope_id)


def write_snapshot(db: sqlite3.Connection, scope_id: int, entries: SnapshotEntries) -> None:
    """Entries set by accepted rows (inside the caller's transaction)."""
    db.executemany(
        "INSERT OR REPLACE INTO snapshot(scope_id, customer, fingerprint) VALUES (?, ?, ?)",
        [(scope_id, key, print_) for key, print_ in entries],
    )


def read_snapshot(db: sqlite3.Connection, scope: str) -> tuple[np.ndarray, np.ndarray]:
    """(keys, fingerprints) of `scope`, sorted by key (the primary key's order): a few
    seconds and 16 bytes a customer at 5 million (the run lock keeps writers out)."""
    row = db.execute("SELECT id FROM snapshot_scopes WHERE scope = ?", (scope,)).fetchone()
    if row is None:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    db.execute("BEGIN")  # the count and the rows from one version of the file
    try:
        (count,) = db.execute("SELECT count(*) FROM snapshot WHERE scope_id = ?", row).fetchone()
        cursor = db.execute(
            "SELECT customer, fingerprint FROM snapshot WHERE scope_id = ? ORDER BY customer",
            row,
        )
        # Flattened straight into one array: no list of 5 million tuples on the way.
        flat = itertools.chain.from_iterable(cursor)
        pairs = np.fromiter(flat, dtype=np.int64, count=2 * count)
    finally:
        db.execute("ROLLBACK")
    return pairs[0::2].copy(), pairs[1::2].copy()


def other_snapshot(db: sqlite3.Connection, scope: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM snapshot_scopes s WHERE s.scope != ?"
        " AND EXISTS (SELECT 1 FROM snapshot t WHERE t.scope_id = s.id) LIMIT 1",
        (scope,),
    ).fetchone()
    return row is not None


def peek_snapshot(path: Path, scope: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """A dry run's read of the snapshot: read-only, never creating or changing the file.

    Returns (keys, fingerprints, another scope has one); empty when there is no state yet."""
    empty = np.empty(0, dtype=np.int64)
    with read_only(path) as db:
        if db is None or "snapshot" not in tables(db):
            return empty, empty, False
        keys, prints = read_snapshot(db, scope)
        return keys, prints, not len(keys) and other_snapshot(db, scope)


def snapshot_size(path: Path, scope: str, *, count: bool = False) -> int:
    """Customers in the snapshot of `scope` in the state file at `path`, read-only (no file
    created, changed or left beside it); 0 when there is none. Without `count`, 1 says
    only that there is one (cheap at millions)."""
    if not path.is_file():
        return 0
    with read_only(path) as db:
        if db is None or not {"snapshot", "snapshot_scopes"} <= tables(db):
            return 0
        row = db.execute("SELECT id FROM snapshot_scopes WHERE scope = ?", (scope,)).fetchone()
        if row is None:
            return 0
        query = "SELECT count(*) FROM snapshot WHERE scope_id = ?"
        if not count:
            query = "SELECT EXISTS (SELECT 1 FROM snapshot WHERE scope_id = ?)"
        (size,) = db.execute(query, row).fetchone()
        return int(size)
