"""The state database (SQLite): its schema and upgrades, opening it, and its faults.

A file that exists but is not a state database is refused (StateError, exit 2) with a
hint to `--fresh`, which sets it aside; a database that cannot be written or is held by
another process mid-run is a StateFault (exit 3).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from importer.errors import RunAborted, UsageError
from importer.state.customers import SCHEMA as CUSTOMERS_SCHEMA
from importer.state.events_ledger import LEDGER_SCHEMA

SCHEMA_VERSION = 4

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

# Version 4: who each scope belongs to (job and target), and what each run ended with.
SCHEMA_4 = """
CREATE TABLE IF NOT EXISTS scopes (
    scope TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    target_key TEXT NOT NULL,
    target TEXT NOT NULL  -- JSON: url, workspace_id, project_code, endpoint (no secrets)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    scope TEXT NOT NULL,
    command TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    exit_code INTEGER NOT NULL,
    counts TEXT NOT NULL  -- JSON: the report's row counts, no personal data
);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs(job, finished_at);
CREATE TABLE IF NOT EXISTS source_aliases (
    source_id INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,  -- an earlier content of the file (it grew since)
    PRIMARY KEY (source_id, fingerprint)
);
"""

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


def refuse_symlink(path: Path, what: str) -> None:
    """An output must not follow a symlink in its last component (it could overwrite anything)."""
    if path.is_symlink():
        raise StateError(f"{what} {path} is a symbolic link; refusing to write through it")


@contextlib.contextmanager
def faults(path: Path) -> Iterator[None]:
    """sqlite errors mid-run as StateFault, naming the file (no traceback reaches the user)."""
    try:
        yield
    except sqlite3.Error as error:
        if is_io_fault(error):
            raise StateFault(io_fault_message(path, error)) from None
        detail = "locked by another process" if _is_busy(error) else str(error)
        raise StateFault(f"cannot use state file {path}: {detail}") from None


class StateDatabase:
    """One open state file: the connection every scoped view of it shares.

    Writes are committed at once (WAL). `fresh`: a file that is not a state database is
    set aside and a new one started (otherwise StateError).
    """

    def __init__(self, path: Path, *, fresh: bool = False) -> None:
        self.path = path
        for companion in (path, companion_path(path, "-wal"), companion_path(path, "-shm")):
            refuse_symlink(companion, "state file")
        try:
            self.db = _open(path)
        except StateError:
            if not fresh:
                raise
            _set_aside(path)  # --fresh: whatever the file was, start over beside it
            self.db = _open(path)

    def close(self) -> None:
        with faults(self.path):
            self.db.close()


def companion_path(path: Path, suffix: str) -> Path:
    """The state file's SQLite companions (`-wal`, `-shm`) beside it."""
    return path.with_name(path.name + suffix)


def unusable(path: Path, detail: str) -> str:
    return (
        f"state file {path} is not a usable moe-import state database ({detail}); "
        "pass --fresh to set it aside and start over"
    )


def check_is_state_database(path: Path) -> None:
    """A 0-byte or foreign file would otherwise be read as a fresh start: refuse it."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as error:
        raise StateError(f"cannot read state file {path}: {error.strerror}") from None
    if not head:
        raise StateError(unusable(path, "the file is empty"))
    if head != SQLITE_MAGIC:
        raise StateError(unusable(path, "not an SQLite database"))


def _is_busy(error: sqlite3.Error) -> bool:
    return "locked" in str(error) or "busy" in str(error)


def _open(path: Path) -> sqlite3.Connection:
    check_is_state_database(path)
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
        db.executescript(CUSTOMERS_SCHEMA)  # its own tables, beside the numbered schema
        db.executescript(LEDGER_SCHEMA)  # its own table, no schema number (events_ledger)
        _upgrade(db)
        return db
    except sqlite3.Error as error:
        if db is not None:
            db.close()
        if _is_busy(error):
            raise StateFault(f"state file {path} is locked by another process ({error})") from None
        if is_io_fault(error):
            raise StateFault(io_fault_message(path, error)) from None
        raise StateError(unusable(path, str(error))) from None


# SQLite's primary result codes for a file it cannot read, grow or write (not a bad file):
# SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN.
_IO_FAULT_CODES = frozenset({8, 10, 13, 14})


def is_io_fault(error: sqlite3.Error) -> bool:
    """The disk or the system failed us (a full disk, a file size limit, no permission):
    our own fault, never a sign the file is not a state database."""
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _IO_FAULT_CODES:
        return True
    text = str(error).lower()
    return any(words in text for words in ("disk i/o error", "disk is full", "readonly"))


def io_fault_message(path: Path, error: sqlite3.Error) -> str:
    return (
        f"cannot write state file {path} ({error}): a full disk, a file size limit "
        "(ulimit -f) or permissions. The progress saved so far is intact; free space or "
        "raise the limit, then run the same command again"
    )


def _upgrade(db: sqlite3.Connection) -> None:
    """Bring a state file written by an earlier version up to this schema, one numbered
    step at a time (`MIGRATIONS`), each in its own transaction with its version number."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    for number in sorted(n for n in MIGRATIONS if n > version):
        with db:
            db.execute("BEGIN")
            MIGRATIONS[number](db)
            db.execute(f"PRAGMA user_version = {number}")


def _to_3(db: sqlite3.Connection) -> None:
    """Progress from before scopes existed belongs to no known target: it is kept under
    the empty scope, so a run says it does not apply rather than trusting it."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
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


def _to_4(db: sqlite3.Connection) -> None:
    """Scopes gain their job: progress and snapshots are kept as they are, under their old
    key, until a run of the job they belong to claims them (`ScopedProgress.claim`)."""
    for statement in SCHEMA_4.split(";"):
        if statement.strip():
            db.execute(statement)


# Version reached -> the step that reaches it from the one before.
# (Versions 1 and 2 kept the tables `sources` and `settled` that step 3 moves.)
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {3: _to_3, 4: _to_4}


def _set_aside(path: Path) -> None:
    """--fresh on a file that is not a state database: move it aside, keep it for a look."""
    if path.exists():
        aside = path.with_name(
            f"{path.name}.unusable-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        )
        os.replace(path, aside)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                companion_path(path, suffix).unlink()


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection | None]:
    """The state file opened read-only (None when there is none): never created, upgraded
    or written, so `status` can look while a run holds it."""
    if not path.exists():
        yield None
        return
    check_is_state_database(path)
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise StateError(f"cannot read state file {path}: {error}") from None
    try:
        with faults(path):
            yield db
    finally:
        db.close()


def tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
