"""Delivered customer ids and recent deletes (sync.delete_absent), per snapshot scope.

The snapshot keeps only 64-bit hashes of customer keys; deleting a customer needs its id.
`delivered_customers` keeps the id beside the snapshot's key for jobs with delete_absent
on, written in the same transaction as the snapshot entry (see `ScopedProgress`). In
SQLite that is the 8-byte key, the id's own bytes and about 10 bytes of record and page
overhead a customer (about 30 bytes for a 12-character id).

`deleted_customers` remembers when each delete was sent: MoEngage hard-deletes a user 24
hours after the request and loses the updates in between, so a customer sent again
inside that window has its snapshot entry dropped on the first run after it (`expire`),
which sends it in full again.

The tables are created when the state file opens (`SCHEMA`, beside the numbered schema in
`database`, so other tables can be added without sharing one migration number).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS delivered_customers (
    scope_id INTEGER NOT NULL,  -- snapshot_scopes.id
    customer INTEGER NOT NULL,  -- the snapshot's 64-bit customer key
    customer_id TEXT NOT NULL,
    PRIMARY KEY (scope_id, customer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deleted_customers (
    scope_id INTEGER NOT NULL,
    customer INTEGER NOT NULL,
    deleted_at REAL NOT NULL,  -- unix time the delete was accepted
    PRIMARY KEY (scope_id, customer)
) WITHOUT ROWID;
"""

# (customer key hash, customer_id) of accepted rows.
DeliveredIds = Sequence[tuple[int, str]]

_CHUNK = 500  # keys per statement (SQLite's limit on parameters is 999 in old builds)


def write_delivered(db: sqlite3.Connection, scope_id: int, entries: DeliveredIds) -> None:
    """Ids of customers accepted rows were about (inside the caller's transaction)."""
    db.executemany(
        "INSERT OR REPLACE INTO delivered_customers(scope_id, customer, customer_id)"
        " VALUES (?, ?, ?)",
        [(scope_id, key, customer_id) for key, customer_id in entries],
    )


def _scope_id(db: sqlite3.Connection, scope: str) -> int | None:
    row = db.execute("SELECT id FROM snapshot_scopes WHERE scope = ?", (scope,)).fetchone()
    return None if row is None else int(row[0])


def _chunks(keys: np.ndarray) -> Iterator[list[int]]:
    for start in range(0, len(keys), _CHUNK):
        yield [int(k) for k in keys[start : start + _CHUNK]]


def delivered_ids(db: sqlite3.Connection, scope: str, keys: np.ndarray) -> dict[int, str]:
    """The ids kept for `keys` (a key delivered before delete_absent was on has none)."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    scope_id = _scope_id(db, scope) if "delivered_customers" in tables else None
    if scope_id is None:
        return {}
    found: dict[int, str] = {}
    for chunk in _chunks(keys):
        marks = ",".join("?" * len(chunk))
        found.update(
            db.execute(
                "SELECT customer, customer_id FROM delivered_customers"
                f" WHERE scope_id = ? AND customer IN ({marks})",
                (scope_id, *chunk),
            ).fetchall()
        )
    return found


def forget_deleted(db: sqlite3.Connection, scope: str, keys: Sequence[int], now: float) -> None:
    """Deleted customers leave the snapshot and the ids; their delete time is kept."""
    scope_id = _scope_id(db, scope)
    if scope_id is None or not keys:
        return
    pairs = [(scope_id, int(key)) for key in keys]
    with db:
        db.execute("BEGIN")
        db.executemany("DELETE FROM snapshot WHERE scope_id = ? AND customer = ?", pairs)
        db.executemany("DELETE FROM delivered_customers WHERE scope_id = ? AND customer = ?", pairs)
        db.executemany(
            "INSERT OR REPLACE INTO deleted_customers(scope_id, customer, deleted_at)"
            " VALUES (?, ?, ?)",
            [(scope_id, key, now) for _, key in pairs],
        )


def expire_deletes(db: sqlite3.Connection, scope: str, now: float, window: float) -> int:
    """Deletes older than `window`: a customer sent again since (back in the snapshot) lost
    those updates at the hard delete, so its entry is dropped and it is sent in full again.
    Returns how many customers that is."""
    scope_id = _scope_id(db, scope)
    if scope_id is None:
        return 0
    cutoff = now - window
    with db:
        db.execute("BEGIN")
        (resend,) = db.execute(
            "SELECT count(*) FROM deleted_customers d JOIN snapshot s"
            " ON s.scope_id = d.scope_id AND s.customer = d.customer"
            " WHERE d.scope_id = ? AND d.deleted_at <= ?",
            (scope_id, cutoff),
        ).fetchone()
        db.execute(
            "DELETE FROM snapshot WHERE scope_id = ? AND customer IN (SELECT customer"
            " FROM deleted_customers WHERE scope_id = ? AND deleted_at <= ?)",
            (scope_id, scope_id, cutoff),
        )
        db.execute(
            "DELETE FROM deleted_customers WHERE scope_id = ? AND deleted_at <= ?",
            (scope_id, cutoff),
        )
    return int(resend)
