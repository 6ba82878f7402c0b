"""Progress for resume (SQLite): which rows of which source file are settled; the run lock.

A row is settled once the request holding it got a 2xx, or its dead-letter line was
flushed. Settled rows are stored as closed ranges per source file, the file being
identified by path and a content fingerprint, so a changed file is not mistaken for
the old one. The `customers` table is reserved for incremental sync (a fingerprint per
customer_id, to skip unchanged users); nothing writes it yet.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    UNIQUE (path, fingerprint)
);
CREATE TABLE IF NOT EXISTS settled (
    source_id INTEGER NOT NULL REFERENCES sources(id),
    first_row INTEGER NOT NULL,
    last_row INTEGER NOT NULL,
    dead_lettered INTEGER NOT NULL DEFAULT 0  -- 1: the rows went to the dead-letter file
);
CREATE INDEX IF NOT EXISTS settled_by_source ON settled(source_id, first_row);
CREATE TABLE IF NOT EXISTS customers (
    customer_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


class StateError(Exception):
    """The state file cannot be used (locked by another run, unreadable)."""


def to_ranges(rows: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged closed ranges covering `rows`."""
    ranges: list[tuple[int, int]] = []
    for row in sorted(set(rows)):
        if ranges and row == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], row)
        else:
            ranges.append((row, row))
    return ranges


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


@dataclass(frozen=True)
class SettledRows:
    """What an earlier run settled in one source file (`dead` ranges: dead-lettered)."""

    ranges: list[tuple[int, int]]
    dead: list[tuple[int, int]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)

    @property
    def contiguous_through(self) -> int:
        """The last row of the unbroken settled run starting at row 1 (0 if none)."""
        if self.ranges and self.ranges[0][0] == 1:
            return self.ranges[0][1]
        return 0


class RunLock:
    """An advisory lock beside the state file, so two runs of one job cannot overlap.

    flock is released by the kernel when the process dies, so a kill -9 leaves no stale lock.
    """

    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise StateError(
                f"another run of this job holds {self.path} ({holder}); "
                "wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        os.write(fd, json.dumps(holder).encode())
        self._fd = fd

    def is_held(self) -> bool:
        """Whether a run holds the lock now (checked by taking and dropping it)."""
        try:
            self.acquire()
        except StateError:
            return True
        except OSError:
            return False
        self.release()
        return False

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class StateStore:
    """Settled rows per source file. Writes are committed at once (WAL, synchronous=NORMAL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._upgrade()
        except sqlite3.DatabaseError as error:
            raise StateError(f"cannot use state file {path}: {error}") from None
        self._source_ids: dict[tuple[str, str], int] = {}

    def _upgrade(self) -> None:
        """Bring a state file written by an earlier version up to this schema."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(settled)")}
        if "dead_lettered" not in columns:
            self._db.execute(
                "ALTER TABLE settled ADD COLUMN dead_lettered INTEGER NOT NULL DEFAULT 0"
            )

    def close(self) -> None:
        self._db.close()

    def reset(self) -> None:
        """--fresh: forget all progress."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM settled")
            self._db.execute("DELETE FROM sources")
        self._source_ids.clear()

    def has_progress(self) -> bool:
        return self._db.execute("SELECT 1 FROM settled LIMIT 1").fetchone() is not None

    def _source_id(self, source: str, fingerprint: str) -> int:
        key = (source, fingerprint)
        if key not in self._source_ids:
            self._db.execute("INSERT OR IGNORE INTO sources(path, fingerprint) VALUES (?, ?)", key)
            (source_id,) = self._db.execute(
                "SELECT id FROM sources WHERE path = ? AND fingerprint = ?", key
            ).fetchone()
            self._source_ids[key] = source_id
        return self._source_ids[key]

    def settled(self, source: str, fingerprint: str) -> SettledRows:
        source_id = self._source_id(source, fingerprint)
        rows = self._db.execute(
            "SELECT first_row, last_row, dead_lettered FROM settled WHERE source_id = ?",
            (source_id,),
        ).fetchall()
        return SettledRows(
            merge_ranges((first, last) for first, last, _ in rows),
            merge_ranges((first, last) for first, last, dead in rows if dead),
        )

    def changed_sources(self, source: str, fingerprint: str) -> bool:
        """True when progress exists for this path under another fingerprint (the file changed)."""
        row = self._db.execute(
            "SELECT 1 FROM sources s JOIN settled t ON t.source_id = s.id "
            "WHERE s.path = ? AND s.fingerprint != ? LIMIT 1",
            (source, fingerprint),
        ).fetchone()
        return row is not None

    def mark_settled(
        self, source: str, fingerprint: str, rows: Iterable[int], *, dead_lettered: bool = False
    ) -> None:
        ranges = to_ranges(rows)
        if not ranges:
            return
        source_id = self._source_id(source, fingerprint)
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO settled(source_id, first_row, last_row, dead_lettered)"
                " VALUES (?, ?, ?, ?)",
                [(source_id, first, last, int(dead_lettered)) for first, last in ranges],
            )

    def compact(self) -> None:
        """Merge stored ranges so the table stays small over a long run."""
        with self._db:
            self._db.execute("BEGIN")
            for source_id, dead in self._db.execute(
                "SELECT DISTINCT source_id, dead_lettered FROM settled"
            ).fetchall():
                where = "WHERE source_id = ? AND dead_lettered = ?"
                rows = self._db.execute(
                    f"SELECT first_row, last_row FROM settled {where}", (source_id, dead)
                ).fetchall()
                merged = merge_ranges(rows)
                if len(merged) < len(rows):
                    self._db.execute(f"DELETE FROM settled {where}", (source_id, dead))
                    self._db.executemany(
                        "INSERT INTO settled(source_id, first_row, last_row, dead_lettered)"
                        " VALUES (?, ?, ?, ?)",
                        [(source_id, first, last, dead) for first, last in merged],
                    )
