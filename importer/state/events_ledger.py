"""The events ledger: every event this state file saw accepted, so none is sent twice.

One row per accepted event: a 16-byte keyed hash (BLAKE2b, keyed by the target, see
`importer.run.exactly_once`) and the day it was accepted (days since 1970, for the
user's horizon), in a table without rowid: about 27 bytes an event on disk (the B-tree's
pages included; `scripts/bench_ledger.py` measures it). Keys are written only inside the
transaction that saves the progress of the rows they belong to
(`ScopedProgress.mark_settled`), so a crash never leaves an event recorded whose row is
not, nor the other way round.

`events_in_flight` holds the keys of events whose request was sent and not answered yet
(committed before the request goes, deleted with the ledger insert): what a run killed
mid-request leaves for the next run's `delivery.on_lost_answer`.

The tables have their own `CREATE TABLE IF NOT EXISTS`, run whenever a state file is opened
(`LEDGER_SCHEMA`): an older state file gains it empty, and no schema number moves.

Lookups go through a read-only connection of their own (`LedgerReader`): the feed asks on
its reader thread while the run writes through the main connection (WAL keeps them apart).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("importer")

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS events_ledger (
    key BLOB PRIMARY KEY,  -- 16-byte keyed hash of the event (its id, or its content)
    day INTEGER NOT NULL  -- the day it was accepted, days since 1970-01-01 (UTC)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events_in_flight (
    key BLOB PRIMARY KEY  -- an event whose request was sent and not yet answered
) WITHOUT ROWID;
"""

# Keys a lookup query names at most (SQLite's variable limit is 32,766 since 3.32; this
# stays far within it, and within the 999 of older builds).
LOOKUP_BATCH = 900

# The feed's read-only connection maps this much of the file (no copy a page read).
READER_MMAP_BYTES = 1 << 30

# Ledger keys, as the Settler hands them on: 16 bytes each.
LedgerKeys = Sequence[bytes]


def today() -> int:
    """Days since 1970-01-01, UTC: the ledger's clock."""
    return int(time.time() // 86400)


def write_ledger(db: sqlite3.Connection, keys: LedgerKeys, day: int | None = None) -> None:
    """Keys of accepted events (inside the caller's transaction); a key known already keeps
    its first day."""
    stamp = today() if day is None else day
    db.executemany(
        "INSERT OR IGNORE INTO events_ledger(key, day) VALUES (?, ?)",
        [(key, stamp) for key in keys],
    )
    db.executemany("DELETE FROM events_in_flight WHERE key = ?", [(key,) for key in keys])


def mark_in_flight(db: sqlite3.Connection, keys: LedgerKeys, flying: bool = True) -> None:
    """Events about to be sent (`flying`), or refused for good (not): committed at once, so
    a run killed with them in flight leaves them marked for the next run to see."""
    if flying:
        sql = "INSERT OR IGNORE INTO events_in_flight(key) VALUES (?)"
    else:
        sql = "DELETE FROM events_in_flight WHERE key = ?"
    with db:
        db.execute("BEGIN")
        db.executemany(sql, [(key,) for key in keys])


def prune_ledger(db: sqlite3.Connection, horizon_days: int, now_day: int | None = None) -> int:
    """Forget events accepted more than `horizon_days` ago; returns how many."""
    cutoff = (today() if now_day is None else now_day) - horizon_days
    cursor = db.execute("DELETE FROM events_ledger WHERE day < ?", (cutoff,))
    db.commit()  # one statement: atomic in autocommit mode too
    return int(cursor.rowcount)


def ledger_size(db: sqlite3.Connection) -> int:
    (count,) = db.execute("SELECT count(*) FROM events_ledger").fetchone()
    return int(count)


def known_keys(
    db: sqlite3.Connection, keys: Sequence[bytes], table: str = "events_ledger"
) -> np.ndarray:
    """For each key, whether the ledger (or `events_in_flight`) holds it (one query per
    LOOKUP_BATCH keys)."""
    assert table in ("events_ledger", "events_in_flight")
    found: set[bytes] = set()
    ordered = sorted(set(keys))  # in key order, each query walks nearby pages (1.5x faster)
    for start in range(0, len(ordered), LOOKUP_BATCH):
        part = ordered[start : start + LOOKUP_BATCH]
        marks = ",".join("?" * len(part))
        rows = db.execute(f"SELECT key FROM {table} WHERE key IN ({marks})", list(part))
        found.update(bytes(key) for (key,) in rows)
    return np.fromiter((key in found for key in keys), dtype=bool, count=len(keys))


class LedgerReader:
    """A read-only view of a state file's ledger, for the feed's lookups; no file yet (a
    first run, a dry run before any run) reads as an empty ledger, and nothing is created."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._unusable = False

    def _connection(self) -> sqlite3.Connection | None:
        if self._db is None and self.path.exists() and not self._unusable:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            try:
                db.execute(f"PRAGMA mmap_size = {READER_MMAP_BYTES}")  # reads without a copy
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            except sqlite3.Error as error:
                # Not a state database: a run refuses it before reading; a dry run says so.
                log.warning("cannot read the events ledger in %s (%s)", self.path, error)
                self._unusable = True
                tables = set()
            if "events_in_flight" not in tables:
                db.close()
                return None  # asked again later: the run's own connection creates it
            self._db = db
        return self._db

    def known(self, keys: Sequence[bytes], table: str = "events_ledger") -> np.ndarray:
        db = self._connection() if len(keys) else None
        if db is None:
            return np.zeros(len(keys), dtype=bool)
        return known_keys(db, keys, table)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
