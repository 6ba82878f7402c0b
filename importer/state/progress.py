"""Progress for resume: which rows of which source file are settled, per scope.

A row is settled once the request holding it got a 2xx, or its dead-letter line was
flushed. Settled rows are stored as closed ranges per source file, the file being
identified by path and a content fingerprint, so a changed file is not mistaken for
the old one. Progress belongs to a scope (target and mapping, `progress_scope`).

`StateStore` opens the state file for one scope and owns its connection; `with_scope`
gives a `ScopedProgress`, a view of the same database under another scope (a replay keeps
its own progress beside the job's). `RunState` is what a run needs of either.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from importer.state.customers import DeliveredIds, write_delivered
from importer.state.database import (
    ACCEPTED,
    DEAD_LETTERED,
    REPLAYED,
    RETRY_LATER,
    StateDatabase,
    faults,
)
from importer.state.events_ledger import LedgerKeys, write_ledger
from importer.state.identity import Scope, progress_scope
from importer.state.ranges import SettledRows, merge_ranges, subtract_ranges, to_ranges
from importer.state.scopes import adopt_legacy, register_scope, same_job_and_target
from importer.state.snapshot import (
    SnapshotEntries,
    read_snapshot,
    snapshot_scope_id,
    write_snapshot,
)

__all__ = ["RunState", "ScopedProgress", "StateStore", "progress_scope"]

INSERT_RANGES = (
    "INSERT INTO settled_rows(source_id, first_row, last_row, outcome) VALUES (?, ?, ?, ?)"
)


class RunState(Protocol):
    """What a run reads and writes of its saved progress (a `StateStore`, or a replay's)."""

    @property
    def path(self) -> Path: ...

    def close(self) -> None: ...

    def has_progress(self) -> bool: ...

    def settled(self, source: str, fingerprint: str) -> SettledRows: ...

    def changed_sources(self, source: str, fingerprint: str) -> bool: ...

    def other_scope(self, source: str) -> bool: ...

    def earlier_versions(self, source: str) -> list[str]: ...

    def carry_over(self, source: str, old: str, new: str) -> None: ...

    def mark_settled(
        self,
        source: str,
        fingerprint: str,
        rows: Iterable[int],
        *,
        dead_lettered: bool = False,
        retry_later: bool = False,
        snapshot: SnapshotEntries = (),
        delivered: DeliveredIds = (),
        ledger: LedgerKeys = (),
    ) -> None: ...

    def compact(self) -> None: ...


class ScopedProgress:
    """One scope's settled rows in an open state database: a view, it never closes it."""

    def __init__(self, database: StateDatabase, scope: str) -> None:
        self.database = database
        self.scope = scope
        self._db = database.db
        self._source_ids: dict[tuple[str, str], int] = {}
        self._scope_id: int | None = None

    @property
    def path(self) -> Path:
        return self.database.path

    def with_scope(self, scope: str) -> ScopedProgress:
        """The same database (one connection; close its store, not the view) under `scope`."""
        return ScopedProgress(self.database, scope)

    def claim(self, scope: Scope) -> bool:
        """Record whose this view's scope is (job and target); take over progress saved
        under its key from before jobs were part of it. Returns whether any was taken."""
        with faults(self.path), self._db:
            self._db.execute("BEGIN")
            register_scope(self._db, scope)
            return adopt_legacy(self._db, scope)

    def reset(self) -> None:
        """--fresh: forget this scope's progress (other jobs and targets keep theirs)."""
        self.forget_scope()

    def has_progress(self) -> bool:
        """Whether this scope has saved progress (other jobs' and targets' do not count)."""
        return self.scope_has_progress()

    def any_progress(self) -> bool:
        """Whether the file holds progress of any job or target."""
        with faults(self.path):
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
        with faults(self.path):
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
        with faults(self.path):
            row = self._db.execute(
                "SELECT 1 FROM source_files s JOIN settled_rows t ON t.source_id = s.id "
                "WHERE s.scope = ? AND s.path = ? AND s.fingerprint != ? LIMIT 1",
                (self.scope, source, fingerprint),
            ).fetchone()
        return row is not None

    def other_scope(self, source: str) -> bool:
        """True when progress exists for this path under another target or mapping."""
        with faults(self.path):
            row = self._db.execute(
                "SELECT 1 FROM source_files s JOIN settled_rows t ON t.source_id = s.id "
                "WHERE s.scope != ? AND s.path = ? LIMIT 1",
                (self.scope, source),
            ).fetchone()
        return row is not None

    def earlier_versions(self, source: str) -> list[str]:
        """Fingerprints this scope saved progress of for this path (contents it had)."""
        with faults(self.path):
            rows = self._db.execute(
                "SELECT DISTINCT s.fingerprint FROM source_files s"
                " JOIN settled_rows t ON t.source_id = s.id WHERE s.scope = ? AND s.path = ?",
                (self.scope, source),
            ).fetchall()
        return [fingerprint for (fingerprint,) in rows]

    def carry_over(self, source: str, old: str, new: str) -> None:
        """The file at `source` continues content `old` (it grew): its progress is now kept
        under `new`, and `old` stays an alias (dead-letter lines name it)."""
        with faults(self.path), self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "DELETE FROM source_files WHERE scope = ? AND path = ? AND fingerprint = ?"
                " AND id NOT IN (SELECT source_id FROM settled_rows)",
                (self.scope, source, new),
            )
            self._db.execute(
                "UPDATE source_files SET fingerprint = ?"
                " WHERE scope = ? AND path = ? AND fingerprint = ?",
                (new, self.scope, source, old),
            )
            self._db.execute(
                "INSERT OR IGNORE INTO source_aliases(source_id, fingerprint)"
                " SELECT id, ? FROM source_files WHERE scope = ? AND path = ? AND fingerprint = ?",
                (old, self.scope, source, new),
            )
        self._source_ids.clear()

    def accepted(self, path_name: str, fingerprint: str) -> list[tuple[int, int]]:
        """Rows of a source that a run of this job got a 2xx for from this target (replay
        skips them); acceptances by other jobs or targets (a rehearsal) do not count.

        `path_name` is the source as a dead-letter line names it: matched on the stored
        absolute path, or on its last component when only that agrees."""
        with faults(self.path):
            keys = same_job_and_target(self._db, self.scope)
            marks = ", ".join("?" * len(keys))
            candidates = self._db.execute(
                "SELECT id, path FROM source_files WHERE (fingerprint = ? OR id IN"
                " (SELECT source_id FROM source_aliases WHERE fingerprint = ?))"
                f" AND scope IN ({marks})",
                (fingerprint, fingerprint, *keys),
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
        delivered: DeliveredIds = (),
        ledger: LedgerKeys = (),
    ) -> None:
        """Rows settled; `snapshot`: what the accepted ones among them set, in the same
        transaction, so a crash never leaves a customer recorded whose row is not;
        `delivered`: their customers' ids (sync.delete_absent), and `ledger`: the keys of
        the accepted events among them (see events_ledger), in that transaction too."""
        outcome = RETRY_LATER if retry_later else DEAD_LETTERED if dead_lettered else ACCEPTED
        self._insert(source, fingerprint, rows, outcome, snapshot, delivered, ledger)

    def mark_replayed(
        self, source: str, fingerprint: str, rows: Iterable[int], ledger: LedgerKeys = ()
    ) -> None:
        """Rows a replay got a 2xx for: settled, and no longer dead-lettered (see `settled`)."""
        self._insert(source, fingerprint, rows, REPLAYED, (), ledger=ledger)

    def _insert(
        self,
        source: str,
        fingerprint: str,
        rows: Iterable[int],
        outcome: int,
        snapshot: SnapshotEntries,
        delivered: DeliveredIds = (),
        ledger: LedgerKeys = (),
    ) -> None:
        ranges = to_ranges(rows)
        if not ranges:
            return
        with faults(self.path):
            source_id = self._source_id(source, fingerprint)
            scope_id = self._snapshot_scope_id() if snapshot else 0
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    INSERT_RANGES, [(source_id, first, last, outcome) for first, last in ranges]
                )
                if snapshot:
                    write_snapshot(self._db, scope_id, snapshot)
                if delivered and snapshot:
                    write_delivered(self._db, scope_id, delivered)
                if ledger:
                    write_ledger(self._db, ledger)

    def _snapshot_scope_id(self) -> int:
        if self._scope_id is None:
            self._scope_id = snapshot_scope_id(self._db, self.scope)
        return self._scope_id

    def load_snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """This scope's snapshot as (customer keys, fingerprints), sorted by key."""
        with faults(self.path):
            return read_snapshot(self._db, self.scope)

    def scope_has_progress(self) -> bool:
        with faults(self.path):
            row = self._db.execute(
                "SELECT 1 FROM source_files s JOIN settled_rows t ON t.source_id = s.id"
                " WHERE s.scope = ? LIMIT 1",
                (self.scope,),
            ).fetchone()
        return row is not None

    def forget_scope(self) -> None:
        """This scope's progress only (a replay's --fresh leaves the job's alone)."""
        with faults(self.path), self._db:
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
        with faults(self.path):
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

    def compact(self) -> None:
        """Merge stored ranges so the table stays small over a long run."""
        with faults(self.path), self._db:
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
                        INSERT_RANGES,
                        [(source_id, first, last, outcome) for first, last in merged],
                    )


class StateStore(ScopedProgress):
    """The state file opened under one scope: the view that owns the connection.

    A file that exists but is not a state database is refused (StateError, exit 2) with a
    hint to `--fresh`, which sets it aside; a database that cannot be written or is held
    by another process mid-run is a StateFault (exit 3).
    """

    def __init__(self, path: Path, scope: str = "", *, fresh: bool = False) -> None:
        super().__init__(StateDatabase(path, fresh=fresh), scope)

    def close(self) -> None:
        self.database.close()
