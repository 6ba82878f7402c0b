"""Saved progress (SQLite): the database, settled ranges, the run lock, progress, snapshot.

`database` opens the file (schema, upgrades, faults); `ranges` is the arithmetic of settled
rows; `lock` keeps two runs of one job apart; `progress` holds the settled rows per scope
(`StateStore` and its scoped views); `snapshot` what incremental sync compares against.
"""

from importer.state.customers import (
    DeliveredIds,
    delivered_ids,
    expire_deletes,
    forget_deleted,
)
from importer.state.database import (
    ACCEPTED,
    DEAD_LETTERED,
    REPLAYED,
    RETRY_LATER,
    SCHEMA,
    SCHEMA_VERSION,
    StateDatabase,
    StateError,
    StateFault,
    refuse_symlink,
)
from importer.state.identity import Scope, describe_target, job_identity
from importer.state.lock import RunLock
from importer.state.progress import RunState, ScopedProgress, StateStore, progress_scope
from importer.state.ranges import SettledRows, merge_ranges, subtract_ranges, to_ranges
from importer.state.snapshot import SnapshotEntries, peek_snapshot, read_snapshot, snapshot_size

__all__ = [
    "ACCEPTED",
    "DEAD_LETTERED",
    "REPLAYED",
    "RETRY_LATER",
    "SCHEMA",
    "SCHEMA_VERSION",
    "DeliveredIds",
    "RunLock",
    "RunState",
    "Scope",
    "ScopedProgress",
    "SettledRows",
    "SnapshotEntries",
    "StateDatabase",
    "StateError",
    "StateFault",
    "StateStore",
    "delivered_ids",
    "describe_target",
    "expire_deletes",
    "forget_deleted",
    "job_identity",
    "merge_ranges",
    "peek_snapshot",
    "progress_scope",
    "read_snapshot",
    "refuse_symlink",
    "snapshot_size",
    "subtract_ranges",
    "to_ranges",
]
