"""Events exactly once: an event this job saw accepted is never sent again.

Every valid event row gets a key before it is batched: a 16-byte BLAKE2b hash, keyed by
the target (URL, workspace, project code), of the export's own event id when the job
names one (`mapping.event.id`), else of the event's content (customer_id, action, time and
attributes, so identical events at the same instant are one event). A row whose key the
ledger holds (`importer.state.events_ledger`), or that an earlier row of this run carried,
is settled as `rows_already_sent` and not sent; the others go on, their keys kept until
the `Settler` saves them with the rows' progress, in one transaction.

The ledger is keyed by content, not by file or position: a file appended to, rewritten,
renamed, re-exported or replayed sends only the events not accepted before.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pandas as pd

from importer import moengage
from importer.config import JobConfig
from importer.rows import Row, ValidRows
from importer.run import batching
from importer.run.results import Refusal
from importer.state.database import BUSY_TIMEOUT_SECONDS, faults
from importer.state.events_ledger import LedgerReader, mark_in_flight, prune_ledger

# The dead-letter error of an event an earlier run left in flight (on_lost_answer dead_letter)
LEFT_IN_FLIGHT = (
    "an earlier run stopped while this event's request was in flight: it may have reached"
    " MoEngage, so it was not sent again (delivery.on_lost_answer: dead_letter); replay it"
    " if MoEngage does not have it"
)

KEY_BYTES = 16


def target_key(job: JobConfig) -> bytes:
    """The hash key: events are once per target (the mapping may change, the events not)."""
    api = job.api
    target = [api.resolved_base_url().rstrip("/"), api.workspace_id, api.project_code]
    return hashlib.sha256(orjson.dumps(target)).digest()


def content_material(encoded: bytes) -> bytes:
    """What makes two events one: customer, action, time and attributes (not platform or
    app version, which a re-export may fill differently)."""
    element: dict[str, Any] = orjson.loads(encoded)
    actions = element.get(moengage.ACTIONS_KEY) or [{}]
    action = actions[0]
    parts = [
        element.get("customer_id"),
        action.get("action"),
        action.get("current_time"),
        action.get("attributes"),
    ]
    return b"c" + orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)


class KeySet:
    """16-byte keys, in a few sorted numpy runs merged as they grow: 16 bytes a key, no
    Python object per key (a run's overlay of the keys it sent)."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        found = np.zeros(len(keys), dtype=bool)
        for run in self._runs:
            at = np.searchsorted(run, keys)
            at[at == len(run)] = 0
            found |= run[at] == keys
        return found

    def add(self, keys: np.ndarray) -> None:
        if not len(keys):
            return
        self._runs.append(np.unique(keys))
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            newer = self._runs.pop()
            self._runs.append(np.union1d(self._runs.pop(), newer))


def first_occurrences(keys: np.ndarray) -> np.ndarray:
    """True for the first row of each key, in row order."""
    _, first = np.unique(keys, return_index=True)
    mask = np.zeros(len(keys), dtype=bool)
    mask[first] = True
    return mask


def unsent(
    ledger: EventLedger | None, rows: Sequence[Row]
) -> tuple[Sequence[Row], list[int], list[Row]]:
    """A chunk's rows through the ledger (see `EventLedger.filter`); all of them without one."""
    return (rows, [], []) if ledger is None else ledger.filter(rows)


class EventLedger:
    """The run's side of the ledger: filters each chunk, keeps the keys of rows in flight
    until the Settler takes them (`take`) to save with the rows' progress."""

    def __init__(self, job: JobConfig, *, replay: bool = False) -> None:
        assert job.mapping.event is not None
        self.replay = replay
        self.id_column = job.mapping.event.id
        self.horizon_days = job.sync.events_horizon_days
        self._key = target_key(job)
        self.reader = LedgerReader(job.output.state)
        self._sent = KeySet()
        self._pending: dict[tuple[str, int], bytes] = {}
        # Events an earlier run left in flight (killed): resent rows noted for the count
        # of possibly duplicated events, or dead-lettered (on_lost_answer: dead_letter).
        self.dead_letters = job.delivery.on_lost_answer == "dead_letter"
        self._resent: set[tuple[str, int]] = set()
        self.possibly_duplicated = 0
        self._writer: sqlite3.Connection | None = None

    def keys(self, rows: Sequence[Row]) -> list[bytes]:
        ids = self._ids(rows) if self.id_column else [None] * len(rows)
        encoded = batching.encoded_of(rows)
        key = self._key
        return [
            hashlib.blake2b(
                b"i" + event_id.encode() if event_id is not None else content_material(data),
                digest_size=KEY_BYTES,
                key=key,
            ).digest()
            for event_id, data in zip(ids, encoded, strict=True)
        ]

    def _ids(self, rows: Sequence[Row]) -> list[str | None]:
        """Each row's event id as text (an empty cell: None, keyed by content instead)."""
        assert self.id_column is not None
        if isinstance(rows, ValidRows):
            frame = getattr(rows.chunk, "frame", None)
            if isinstance(frame, pd.DataFrame) and self.id_column in frame.columns:
                values = frame[self.id_column].reindex(rows.numbers)
                return [None if pd.isna(v) or v == "" else str(v) for v in values]
        ids: list[str | None] = []
        for row in rows:
            value = row.record().get(self.id_column)
            ids.append(None if value is None or value == "" else str(value))
        return ids

    def filter(self, rows: Sequence[Row]) -> tuple[Sequence[Row], list[int], list[Row]]:
        """(rows to send, numbers of the rows already sent, rows an earlier run left in
        flight that the policy dead-letters) for one chunk's valid rows."""
        if not len(rows):
            return rows, [], []
        keys = self.keys(rows)
        packed = np.array(keys, dtype=f"S{KEY_BYTES}")
        done = self.reader.known(keys) | self._sent.contains(packed) | ~first_occurrences(packed)
        numbers = rows.numbers if isinstance(rows, ValidRows) else [r.row for r in rows]
        source = rows[0].source
        flying = self.reader.known(keys, "events_in_flight") & ~done
        uncertain = [rows[p] for p in np.flatnonzero(flying).tolist()] if self.dead_letters else []
        self._resent.update((source, numbers[p]) for p in np.flatnonzero(flying).tolist())
        held = done | flying if self.dead_letters else done
        keep = np.flatnonzero(~held).tolist()
        for position in keep:
            self._pending[(source, numbers[position])] = keys[position]
        self._sent.add(packed[~done])
        already = [numbers[p] for p in np.flatnonzero(done).tolist()]
        if not held.any():
            return rows, already, uncertain
        encoded = batching.encoded_of(rows)
        if isinstance(rows, ValidRows):
            ids, chunk = rows.customer_ids, rows.chunk
        else:
            ids, chunk = [row.customer_id for row in rows], rows[0].chunk
        kept = ValidRows(
            source,
            [numbers[p] for p in keep],
            [ids[p] for p in keep],
            [encoded[p] for p in keep],
            chunk,
        )
        return kept, already, uncertain

    def accepted_before(self, rows: Sequence[Row]) -> tuple[list[Row], list[int]]:
        """A replay's rows less the events the ledger holds as accepted (by any run of this
        job since the line was written): (rows to send, numbers of those left out). Events
        only in flight (`uncertain`) are not held back: replaying them is the user's choice."""
        keys = self.keys(rows)
        known = self.reader.known(keys)
        kept = [row for row, done in zip(rows, known.tolist(), strict=True) if not done]
        already = [row.row for row, done in zip(rows, known.tolist(), strict=True) if done]
        return kept, already

    def open_writer(self) -> None:
        """A run (not a dry run) marks events in flight through a connection of its own."""
        path = self.reader.path
        self._writer = sqlite3.connect(
            path, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False
        )

    def sending(self, rows: Sequence[Row]) -> None:
        """Mark these rows' events in flight before their request goes (committed): a run
        killed before the answer leaves them for the next run to treat as lost answers."""
        if self._writer is None:
            return
        pending = self._pending
        keys = [pending[(r.source, n)] for r in rows for n in r.numbers if (r.source, n) in pending]
        if not keys:
            return
        with faults(self.reader.path):
            mark_in_flight(self._writer, keys)

    def not_sent(self, rows: Sequence[Row]) -> None:
        """A request held back after `sending` (the run stopping): its events are pending,
        not in flight, so the next run sends them as new."""
        if self._writer is None:
            return
        pending = self._pending
        keys = [pending[(r.source, n)] for r in rows for n in r.numbers if (r.source, n) in pending]
        if keys:
            with faults(self.reader.path):
                mark_in_flight(self._writer, keys, flying=False)

    def take(self, rows: Sequence[Row]) -> list[bytes]:
        """The keys of accepted rows (a merged element: one a row it was made of); rows an
        earlier run left in flight are counted as possibly duplicated. A replay (which
        filters nothing: it sends what you chose) has its keys made here."""
        if self.replay:
            return self.keys([part for row in rows for part in row.split()])
        keys: list[bytes] = []
        for row in rows:
            for number in row.numbers:
                key = self._pending.pop((row.source, number), None)
                if key is not None:
                    keys.append(key)
                if self._resent and (row.source, number) in self._resent:
                    self._resent.discard((row.source, number))
                    self.possibly_duplicated += 1
        return keys

    def forget(self, refusals: Sequence[Refusal]) -> None:
        """Rows that ended otherwise: nothing to save for them. Those the API refused for
        their data were surely not accepted: no longer in flight; so were delivery
        failures under dead_letter (a lost answer would have made them `uncertain`)."""
        refused: list[bytes] = []
        cleared = ("rejected", "delivery") if self.dead_letters else ("rejected",)
        for refusal in refusals:
            row = refusal.row
            for number in row.numbers:
                key = self._pending.pop((row.source, number), None)
                if key is not None and refusal.stage in cleared:
                    refused.append(key)
        if refused and self._writer is not None:
            with faults(self.reader.path):
                mark_in_flight(self._writer, refused, flying=False)

    def prune(self) -> int:
        """Forget events accepted before the horizon (none without one); a run calls it
        once its state file is open (and its lock held)."""
        if self.horizon_days is None or not self.reader.path.exists():
            return 0
        db = sqlite3.connect(self.reader.path, timeout=BUSY_TIMEOUT_SECONDS)
        try:
            return prune_ledger(db, self.horizon_days)
        finally:
            db.close()

    def close(self) -> None:
        self.reader.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
