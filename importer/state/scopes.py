"""The scopes a state file holds: which job and target each belongs to, and carrying over
progress saved before scopes named their job."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from importer.state.identity import Scope


def register_scope(db: sqlite3.Connection, scope: Scope) -> None:
    """Record (inside the caller's transaction) whose the scope's key is."""
    db.execute(
        "INSERT OR REPLACE INTO scopes(scope, job, target_key, target) VALUES (?, ?, ?, ?)",
        (scope.key, scope.job, scope.target_key, json.dumps(scope.target, sort_keys=True)),
    )


def adopt_legacy(db: sqlite3.Connection, scope: Scope) -> bool:
    """Progress and snapshot saved under the scope's key from before jobs were part of it
    move to the job's key, once, when that key holds nothing yet. Returns whether any did.

    Two jobs with the same target and mapping shared that key: the first to run takes it."""
    if scope.key == scope.legacy or _holds_anything(db, scope.key):
        return False
    if not _holds_anything(db, scope.legacy) or _claimed(db, scope.legacy):
        return False
    db.execute("UPDATE source_files SET scope = ? WHERE scope = ?", (scope.key, scope.legacy))
    db.execute("DELETE FROM snapshot_scopes WHERE scope = ?", (scope.key,))
    db.execute("UPDATE snapshot_scopes SET scope = ? WHERE scope = ?", (scope.key, scope.legacy))
    return True


def _holds_anything(db: sqlite3.Connection, key: str) -> bool:
    progress = db.execute("SELECT 1 FROM source_files WHERE scope = ? LIMIT 1", (key,)).fetchone()
    snapshot = db.execute(
        "SELECT 1 FROM snapshot_scopes s JOIN snapshot t ON t.scope_id = s.id"
        " WHERE s.scope = ? LIMIT 1",
        (key,),
    ).fetchone()
    return progress is not None or snapshot is not None


def _claimed(db: sqlite3.Connection, key: str) -> bool:
    """A key registered to a job already (a job run by the Python API without a name)."""
    return db.execute("SELECT 1 FROM scopes WHERE scope = ?", (key,)).fetchone() is not None


def same_job_and_target(db: sqlite3.Connection, key: str) -> list[str]:
    """Keys of scopes with the job and target of `key` (any mapping), `key` among them.

    A row accepted under another mapping was accepted by this job's workspace all the same;
    one accepted by another job or target was not."""
    row = db.execute("SELECT job, target_key FROM scopes WHERE scope = ?", (key,)).fetchone()
    if row is None:
        return [key]
    keys = [
        k for (k,) in db.execute("SELECT scope FROM scopes WHERE job = ? AND target_key = ?", row)
    ]
    return keys if key in keys else [key, *keys]


def scopes_of_job(db: sqlite3.Connection, job: str) -> list[dict[str, Any]]:
    """The job's scopes: key and target, as `status` shows them."""
    rows = db.execute("SELECT scope, target FROM scopes WHERE job = ?", (job,)).fetchall()
    return [{"scope": key, "target": json.loads(target)} for key, target in rows]
