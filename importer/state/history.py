"""What each run ended with, kept in the state file for `moe-import status`, and reading a
state file without changing it.

A run's entry is its run id, command, end time, exit code and row counts: no personal data.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from importer.state.database import (
    ACCEPTED,
    DEAD_LETTERED,
    REPLAYED,
    RETRY_LATER,
    StateDatabase,
    faults,
    read_only,
    tables,
)
from importer.state.identity import Scope
from importer.state.ranges import merge_ranges, subtract_ranges
from importer.state.scopes import register_scope

OUTCOMES = (ACCEPTED, DEAD_LETTERED, RETRY_LATER, REPLAYED)

# Runs kept per job: enough to see a week of nightly runs and their retries.
RUNS_KEPT = 100


def record_run(
    path: Path, scope: Scope, command: str, run_id: str, exit_code: int, counts: dict[str, int]
) -> None:
    """Append a run's summary to the state file (created if the run made none)."""
    database = StateDatabase(path)
    try:
        with faults(path), database.db as db:
            db.execute("BEGIN")
            register_scope(db, scope)
            db.execute(
                "INSERT OR REPLACE INTO runs(run_id, job, scope, command, finished_at,"
                " exit_code, counts) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    scope.job,
                    scope.key,
                    command,
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    exit_code,
                    json.dumps(counts, sort_keys=True),
                ),
            )
            db.execute(
                "DELETE FROM runs WHERE job = ? AND run_id NOT IN (SELECT run_id FROM runs"
                " WHERE job = ? ORDER BY finished_at DESC, rowid DESC LIMIT ?)",
                (scope.job, scope.job, RUNS_KEPT),
            )
    finally:
        database.close()


def last_runs(db: sqlite3.Connection, job: str, limit: int = 10) -> list[dict[str, Any]]:
    """The job's latest runs, newest first."""
    if "runs" not in tables(db):
        return []
    rows = db.execute(
        "SELECT run_id, command, finished_at, exit_code, counts FROM runs WHERE job = ?"
        " ORDER BY finished_at DESC, rowid DESC LIMIT ?",
        (job, limit),
    ).fetchall()
    return [
        {
            "run_id": run_id,
            "command": command,
            "finished_at": finished,
            "exit_code": code,
            "counts": json.loads(counts),
        }
        for run_id, command, finished, code, counts in rows
    ]


def version(db: sqlite3.Connection) -> int:
    (number,) = db.execute("PRAGMA user_version").fetchone()
    return int(number)


def scope_summary(db: sqlite3.Connection, key: str) -> dict[str, Any]:
    """Counts of one scope's saved progress per source file, and its snapshot's size."""
    sources: list[dict[str, Any]] = []
    for source_id, source in db.execute(
        "SELECT id, path FROM source_files WHERE scope = ? ORDER BY id", (key,)
    ).fetchall():
        rows = db.execute(
            "SELECT first_row, last_row, outcome FROM settled_rows WHERE source_id = ?",
            (source_id,),
        ).fetchall()
        if not rows:
            continue
        by = {o: merge_ranges((f, last) for f, last, kind in rows if kind == o) for o in OUTCOMES}
        settled = merge_ranges(by[ACCEPTED] + by[DEAD_LETTERED] + by[REPLAYED])
        sources.append(
            {
                "path": source,
                "rows_settled": _count(settled),
                "rows_dead_lettered": _count(subtract_ranges(by[DEAD_LETTERED], by[REPLAYED])),
                "rows_to_resend": _count(subtract_ranges(by[RETRY_LATER], settled)),
            }
        )
    snapshot = db.execute(
        "SELECT count(*) FROM snapshot t JOIN snapshot_scopes s ON t.scope_id = s.id"
        " WHERE s.scope = ?",
        (key,),
    ).fetchone()[0]
    return {"sources": sources, "snapshot_customers": int(snapshot)}


def _count(ranges: list[tuple[int, int]]) -> int:
    return sum(last - first + 1 for first, last in ranges)


def jobs_in(path: Path) -> list[str]:
    """The job names a state file's scopes belong to, read-only (none before schema 4)."""
    with read_only(path) as db:
        if db is None or "scopes" not in tables(db):
            return []
        return [job for (job,) in db.execute("SELECT DISTINCT job FROM scopes WHERE job != ''")]
