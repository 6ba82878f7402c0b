"""Progress for resume (SQLite): which rows of which source file are settled; the run lock.

A row is settled once the request holding it got a 2xx, or its dead-letter line was
flushed. Settled rows are stored as closed ranges per source file, the file being
identified by path and a content fingerprint, so a changed file is not mistaken for
the old one. The snapshot (incremental sync, see sync.py) holds per scope and customer
key the fingerprint of the last element the API accepted: 64-bit integers in a table
without rowid, written only together with the progress of the rows that set them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from importer.errors import RunAborted, UsageError

SCHEMA_VERSION = 3

# Progress belongs to one scope (target and mapping, see `progress_scope`): the same file
# sent to another workspace, URL or with another mapping starts from nothing.
SCHEMA = """
CREATE TABLE IF NOT EXISTS source_files (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    path TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    UNIQUE (scope, path, fingerprint)
);
CREATE TABLE IF NOT EXISTS settled_rows (
    source_id INTEGER NOT NULL,
    first_row INTEGER NOT NULL,
    last_row INTEGER NOT NULL,
    outcome INTEGER NOT NULL DEFAULT 0  -- see ACCEPTED, DEAD_LETTERED, RETRY_LATER
);
CREATE INDEX IF NOT EXISTS settled_rows_by_source ON settled_rows(source_id, first_row);
CREATE TABLE IF NOT EXISTS customers (
    customer_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot_scopes (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS snapshot (
    scope_id INTEGER NOT NULL,
    customer INTEGER NOT NULL,  -- 64-bit hash of the customer key
    fingerprint INTEGER NOT NULL,  -- 64-bit hash of the element last accepted
    PRIMARY KEY (scope_id, customer)
) WITHOUT ROWID;
"""

# Snapshot entries: (customer key hash, element fingerprint), both signed 64-bit.
SnapshotEntries = Sequence[tuple[int, int]]

# Row outcomes as stored. RETRY_LATER rows went to the dead-letter file at stage
# `delivery`: they were never refused for their data, so a rerun sends them again.
ACCEPTED = 0
DEAD_LETTERED = 1
RETRY_LATER = 2
# Accepted by a replay after a run dead-lettered it: settled, and no longer dead-lettered.
REPLAYED = 3

SQLITE_MAGIC = b"SQLite format 3\x00"

# A state database held by another process: give up after this long, not sqlite's default
# five seconds per statement, so a run stops within seconds.
BUSY_TIMEOUT_SECONDS = 2.0


class StateError(UsageError):
    """The state file cannot be used (locked by another run, not a state database): exit 2."""


class StateFault(RunAborted):
    """Writing or reading progress failed mid-way (disk full, database locked): exit 3."""


def progress_scope(target: dict[str, Any], mapping: Any) -> str:
    """The key saved progress belongs to: the target and the mapping's canonical form."""
    canonical = json.dumps({"target": target, "mapping": mapping}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def refuse_symlink(path: Path, what: str) -> None:
    """An output must not follow a symlink in its last component (it could overwrite anything)."""
    if path.is_symlink():
        raise StateError(f"{what} {path} is a symbolic link; refusing to write through it")


def to_ranges(rows: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged closed ranges covering `rows` (vectorised: a chunk's unchanged rows
    are tens of thousands of numbers a mark)."""
    numbers = np.unique(np.fromiter(rows, dtype=np.int64))
    if not len(numbers):
        return []
    breaks = np.flatnonzero(np.diff(numbers) != 1)
    firsts = np.concatenate([numbers[:1], numbers[breaks + 1]]).tolist()
    lasts = np.concatenate([numbers[breaks], numbers[-1:]]).tolist()
    return list(zip(firsts, lasts, strict=True))


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def subtract_ranges(
    ranges: list[tuple[int, int]], minus: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Merged `ranges` without the rows of merged `minus`."""
    result: list[tuple[int, int]] = []
    for first, last in ranges:
        for cut_first, cut_last in minus:
            if cut_last < first or cut_first > last:
                continue
            if cut_first > first:
                result.append((first, cut_first - 1))
            first = cut_last + 1
            if first > last:
                break
        if first <= last:
            result.append((first, last))
    return result


@dataclass(frozen=True)
class SettledRows:
    """What an earlier run settled in one source file (`dead` ranges: dead-lettered)."""

    ranges: list[tuple[int, int]]
    dead: list[tuple[int, int]] = field(default_factory=list)
    # Rows dead-lettered in delivery and not accepted since: a rerun sends them again.
    retry: list[tuple[int, int]] = field(default_factory=list)

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
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as error:
            if self.path.is_symlink():
                refuse_symlink(self.path, "lock file")
            raise StateError(f"cannot open lock file {self.path}: {error.strerror}") from None
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
        about = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        os.write(fd, json.dumps(about).encode())
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
    """Settled rows per source file and scope. Writes are committed at once (WAL).

    A file that exists but is not a state database is refused (StateError, exit 2) with a
    hint to `--fresh`, which sets it aside; a database that cannot be written or is held
    by another process mid-run is a StateFault (exit 3).
    """

    def __init__(self, path: Path, scope: str = "", *, fresh: bool = False) -> None:
        self.path = path
        self.scope = scope
        for companion in (path, _companion(path, "-wal"), _companion(path, "-shm")):
            refuse_symlink(companion, "state file")
        try:
            self._db = _open(path)
        except StateError:
            if not fresh:
                raise
            _set_aside(path)  # --fresh: whatever the file was, start over beside it
            self._db = _open(path)
        self._source_ids: dict[tuple[str, str], int] = {}
        self._scope_id: int | None = None

    def close(self) -> None:
        with _faults(self.path):
            self._db.close()

    def reset(self) -> None:
        """--fresh: forget all progress."""
        with _faults(self.path), self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM settled_rows")
            self._db.execute("DELETE FROM source_files")
        self._source_ids.clear()

    def has_progress(self) -> bool:
        with _faults(self.path):
            return self._db.execute("SELECT 1 FROM settled_rows LIMIT 1").fetchone() is not None

    def _source_id(self, source: str, fingerprint: str) -> int:
        key = (source, fingerprint)
        if key not in self._source_ids:
            self._db.execute(
                "INSERT OR IGNORE INTO source_files(scope, path, fingerprint) VALUES (?, ?, ?)",
                (self.scope, *key),
            )
            (source_id,) = self._db.execute(
                "SELECT id FROM source_files WHERE scope = ? AND path = ? AND fingerprint = ?",
                (self.scope, *key),
            ).fetchone()
            self._source_ids[key] = source_id
        return self._source_ids[key]

    def settled(self, source: str, fingerprint: str) -> SettledRows:
        """Rows an earlier run settled; rows it dead-lettered in delivery are not among them."""
        with _faults(self.path):
            source_id = self._source_id(source, fingerprint)
            rows = self._db.execute(
                "SELECT first_row, last_row, outcome FROM settled_rows WHERE source_id = ?",
                (source_id,),
            ).fetchall()
        ranges = merge_ranges((first, last) for first, last, o in rows if o != RETRY_LATER)
        retry = merge_ranges((first, last) for first, last, o in rows if o == RETRY_LATER)
        replayed = merge_ranges((first, last) for first, last, o in rows if o == REPLAYED)
        dead = merge_ranges((first, last) for first, last, o in rows if o == DEAD_LETTERED)
        return SettledRows(ranges, subtract_ranges(dead, replayed), subtract_ranges(retry, ranges))

    def changed_sources(self, source: str, fingerprint: str) -> bool:
        """True when progress exists for this path under another fingerprint (the file changed)."""
        with _faults(self.path):
            row = self._db.execute(
                "SELECT 1 FROM source_files s JOIN settled_rows t ON t.source_id = s.id "
                "WHERE s.scope = ? AND s.path = ? AND s.fingerprint != ? LIMIT 1",
                (self.scope, source, fingerprint),
            ).fetchone()
        return row is not None

    def other_scope(self, source: str) -> bool:
        """True when progress exists for this path under another target or mapping."""
        with _faults(self.path):
            row = self._db.execute(
                "SELECT 1 FROM source_files s JOIN settled_rows t ON t.source_id = s.id "
                "WHERE s.scope != ? AND s.path = ? LIMIT 1",
                (self.scope, source),
            ).fetchone()
        return row is not None

    def accepted(self, path_name: str, fingerprint: str) -> list[tuple[int, int]]:
        """Rows of a source (in any scope) that some run got a 2xx for (replay skips them).

        `path_name` is the source as a dead-letter line names it: matched on the stored
        absolute path, or on its last component when only that agrees."""
        with _faults(self.path):
            candidates = self._db.execute(
                "SELECT id, path FROM source_files WHERE fingerprint = ?", (fingerprint,)
            ).fetchall()
            wanted = str(Path(path_name).resolve())
            ids = [i for i, p in candidates if p == wanted] or [
                i for i, p in candidates if Path(p).name == Path(path_name).name
            ]
            rows: list[tuple[int, int]] = []
            for source_id in ids:
                rows += self._db.execute(
                    "SELECT first_row, last_row FROM settled_rows"
                    " WHERE source_id = ? AND outcome IN (?, ?)",
                    (source_id, ACCEPTED, REPLAYED),
                ).fetchall()
        return merge_ranges(rows)

    def mark_settled(
        self,
        source: str,
        fingerprint: str,
        rows: Iterable[int],
        *,
        dead_lettered: bool = False,
        retry_later: bool = False,
        snapshot: SnapshotEntries = (),
    ) -> None:
        """Rows settled; `snapshot`: what the accepted ones among them set, in the same
        transaction, so a crash never leaves a customer recorded whose row is not."""
        ranges = to_ranges(rows)
        if not ranges:
            return
        outcome = RETRY_LATER if retry_later else DEAD_LETTERED if dead_lettered else ACCEPTED
        with _faults(self.path):
            source_id = self._source_id(source, fingerprint)
            scope_id = self._snapshot_scope_id() if snapshot else 0
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO settled_rows(source_id, first_row, last_row, outcome)"
                    " VALUES (?, ?, ?, ?)",
                    [(source_id, first, last, outcome) for first, last in ranges],
                )
                if snapshot:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO snapshot(scope_id, customer, fingerprint)"
                        " VALUES (?, ?, ?)",
                        [(scope_id, key, print_) for key, print_ in snapshot],
                    )

    def _snapshot_scope_id(self) -> int:
        if self._scope_id is None:
            self._db.execute(
                "INSERT OR IGNORE INTO snapshot_scopes(scope) VALUES (?)", (self.scope,)
            )
            (self._scope_id,) = self._db.execute(
                "SELECT id FROM snapshot_scopes WHERE scope = ?", (self.scope,)
            ).fetchone()
        return self._scope_id

    def load_snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """This scope's snapshot as (customer keys, fingerprints), sorted by key."""
        with _faults(self.path):
            return read_snapshot(self._db, self.scope)

    # --- replay (see importer.run.replay) ---------------------------------------------------

    def with_scope(self, scope: str) -> StateStore:
        """This database (one connection; close this store, not the view) under another scope."""
        view = StateStore.__new__(StateStore)  # a plain store, whatever subclass this is
        view.__dict__.update(self.__dict__)
        view.scope = scope
        view._source_ids = {}
        return view

    def scope_has_progress(self) -> bool:
        with _faults(self.path):
            row = self._db.execute(
                "SELECT 1 FROM source_files s JOIN settled_rows t ON t.source_id = s.id"
                " WHERE s.scope = ? LIMIT 1",
                (self.scope,),
            ).fetchone()
        return row is not None

    def forget_scope(self) -> None:
        """This scope's progress only (a replay's --fresh leaves the job's alone)."""
        with _faults(self.path), self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "DELETE FROM settled_rows WHERE source_id IN"
                " (SELECT id FROM source_files WHERE scope = ?)",
                (self.scope,),
            )
            self._db.execute("DELETE FROM source_files WHERE scope = ?", (self.scope,))
        self._source_ids.clear()

    def stored_path(self, path_name: str, fingerprint: str) -> str:
        """The path this scope saved a source under, matched as `accepted` matches it;
        else the source's absolute path (how a run would save it)."""
        wanted = str(Path(path_name).resolve())
        with _faults(self.path):
            paths = [
                p
                for (p,) in self._db.execute(
                    "SELECT path FROM source_files WHERE scope = ? AND fingerprint = ?",
                    (self.scope, fingerprint),
                ).fetchall()
            ]
        if wanted in paths:
            return wanted
        same_name = [p for p in paths if Path(p).name == Path(path_name).name]
        return same_name[0] if len(same_name) == 1 else wanted

    def mark_replayed(self, source: str, fingerprint: str, rows: Iterable[int]) -> None:
        """Rows a replay got a 2xx for: settled, and no longer dead-lettered (see `settled`)."""
        ranges = to_ranges(rows)
        if not ranges:
            return
        with _faults(self.path):
            source_id = self._source_id(source, fingerprint)
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO settled_rows(source_id, first_row, last_row, outcome)"
                    " VALUES (?, ?, ?, ?)",
                    [(source_id, first, last, REPLAYED) for first, last in ranges],
                )

    def compact(self) -> None:
        """Merge stored ranges so the table stays small over a long run."""
        with _faults(self.path), self._db:
            self._db.execute("BEGIN")
            for source_id, outcome in self._db.execute(
                "SELECT DISTINCT source_id, outcome FROM settled_rows"
            ).fetchall():
                where = "WHERE source_id = ? AND outcome = ?"
                rows = self._db.execute(
                    f"SELECT first_row, last_row FROM settled_rows {where}", (source_id, outcome)
                ).fetchall()
                merged = merge_ranges(rows)
                if len(merged) < len(rows):
                    self._db.execute(f"DELETE FROM settled_rows {where}", (source_id, outcome))
                    self._db.executemany(
                        "INSERT INTO settled_rows(source_id, first_row, last_row, outcome)"
                        " VALUES (?, ?, ?, ?)",
                        [(source_id, first, last, outcome) for first, last in merged],
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
    if not path.exists():
        return empty, empty, False
    _check_is_state_database(path)
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise StateError(_unusable(path, str(error))) from None
    try:
        with _faults(path):
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            if "snapshot" not in tables:
                return empty, empty, False
            keys, prints = read_snapshot(db, scope)
            return keys, prints, not len(keys) and other_snapshot(db, scope)
    finally:
        db.close()


class _faults:
    """sqlite errors mid-run as StateFault, naming the file (no traceback reaches the user)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: Any
    ) -> None:
        if isinstance(error, sqlite3.Error):
            detail = "locked by another process" if _is_busy(error) else str(error)
            raise StateFault(f"cannot use state file {self.path}: {detail}") from None


def _is_busy(error: sqlite3.Error) -> bool:
    return "locked" in str(error) or "busy" in str(error)


def _companion(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _unusable(path: Path, detail: str) -> str:
    return (
        f"state file {path} is not a usable moe-import state database ({detail}); "
        "pass --fresh to set it aside and start over"
    )


def _check_is_state_database(path: Path) -> None:
    """A 0-byte or foreign file would otherwise be read as a fresh start: refuse it."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as error:
        raise StateError(f"cannot read state file {path}: {error.strerror}") from None
    if not head:
        raise StateError(_unusable(path, "the file is empty"))
    if head != SQLITE_MAGIC:
        raise StateError(_unusable(path, "not an SQLite database"))


def _open(path: Path) -> sqlite3.Connection:
    _check_is_state_database(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        ours = {"sources", "settled", "source_files", "settled_rows", "customers", "snapshot"}
        if tables and not tables & ours:
            raise sqlite3.DatabaseError("an SQLite database, but not one of moe-import's")
        db.executescript(SCHEMA)
        _upgrade(db)
        return db
    except sqlite3.Error as error:
        if db is not None:
            db.close()
        if _is_busy(error):
            raise StateFault(f"state file {path} is locked by another process ({error})") from None
        raise StateError(_unusable(path, str(error))) from None


def _upgrade(db: sqlite3.Connection) -> None:
    """Bring a state file written by an earlier version up to this schema.

    Progress from before scopes existed belongs to no known target: it is kept under
    the empty scope, so a run says it does not apply rather than trusting it.
    """
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version >= SCHEMA_VERSION:
        return
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    with db:
        db.execute("BEGIN")
        if "sources" in tables and "settled" in tables:
            columns = {row[1] for row in db.execute("PRAGMA table_info(settled)")}
            dead = "dead_lettered" if "dead_lettered" in columns else "0"
            db.execute(
                "INSERT INTO source_files(id, scope, path, fingerprint)"
                " SELECT id, '', path, fingerprint FROM sources"
            )
            db.execute(
                "INSERT INTO settled_rows(source_id, first_row, last_row, outcome)"
                f" SELECT source_id, first_row, last_row, {dead} FROM settled"
            )
            db.execute("DROP TABLE settled")
            db.execute("DROP TABLE sources")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _set_aside(path: Path) -> None:
    """--fresh on a file that is not a state database: move it aside, keep it for a look."""
    if path.exists():
        aside = path.with_name(
            f"{path.name}.unusable-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        )
        os.replace(path, aside)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                _companion(path, suffix).unlink()
