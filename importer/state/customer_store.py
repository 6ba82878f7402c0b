"""The delivered ids and delete times of one job scope, on a connection of their own
(a run holds the run lock; a dry run opens the file read-only and never creates it)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from importer.state.customers import delivered_ids, expire_deletes, forget_deleted
from importer.state.database import BUSY_TIMEOUT_SECONDS, StateError, faults, unusable


class CustomerIds:
    """`delivered_customers` and `deleted_customers` of `scope` in the state file at `path`."""

    def __init__(self, path: Path, scope: str, *, read_only: bool = False) -> None:
        self.path = path
        self.scope = scope
        self._db: sqlite3.Connection | None = None
        if read_only and not path.exists():
            return  # no state yet: nobody was delivered
        target = f"{path.resolve().as_uri()}?mode=ro" if read_only else str(path)
        try:
            self._db = sqlite3.connect(
                target, uri=read_only, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS
            )
        except sqlite3.Error as error:
            raise StateError(unusable(path, str(error))) from None

    def close(self) -> None:
        if self._db is not None:
            with faults(self.path):
                self._db.close()

    def ids_of(self, keys: np.ndarray) -> dict[int, str]:
        if self._db is None:
            return {}
        with faults(self.path):
            return delivered_ids(self._db, self.scope, keys)

    def forget(self, keys: Sequence[int]) -> None:
        """Deleted: out of the snapshot and the ids, their delete time kept."""
        if self._db is not None and keys:
            with faults(self.path):
                forget_deleted(self._db, self.scope, keys, time.time())

    def expire(self, window_seconds: float) -> int:
        """Deletes past MoEngage's hard-delete window; see `customers.expire_deletes`."""
        if self._db is None:
            return 0
        with faults(self.path):
            return expire_deletes(self._db, self.scope, time.time(), window_seconds)
