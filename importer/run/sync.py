"""Incremental sync: send only the rows whose element differs from the last one accepted.

Each valid row is reduced to two 64-bit numbers: its customer key (customer_id, or under
identity resolution the first identifier the element carries) and its fingerprint (a
hash of the element's JSON bytes, which the mapper writes in one canonical member
order). The snapshot (state.py) holds, per customer key, the fingerprint of the last
element the API accepted for this job's target and mapping; it is written by the
`Settler` only, in the same transaction as the progress of the accepted rows.

At run start the snapshot is loaded into two sorted numpy arrays (16 bytes a customer,
plus one byte to note who was seen), so a chunk's lookup is one `searchsorted`: no
per-row query, no per-row Python object kept. Rows sent in this run are noted in an
overlay of the same shape (so a customer's second row compares with the first, not with
the snapshot), which grows with the rows that changed, not with the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import orjson
import pandas as pd

from importer.rows import Row, ValidRows

# The share of the snapshot that may be absent from a complete run before it warns.
ABSENT_WARNING_SHARE = 0.10


def _hash64(values: Sequence[bytes | str]) -> np.ndarray:
    """Stable 64-bit hashes (SipHash with pandas' fixed key: the same in every process,
    unlike Python's `hash`), as int64 so SQLite stores them as they are."""
    if not len(values):
        return np.empty(0, dtype=np.int64)
    array = np.empty(len(values), dtype=object)
    array[:] = values
    hashed: np.ndarray = pd.util.hash_array(array, categorize=False)
    return hashed.view(np.int64)


def fingerprints(encoded: Sequence[bytes]) -> np.ndarray:
    """Each element's fingerprint: a hash of its JSON bytes."""
    return _hash64(encoded)


class CustomerKeys:
    """Who an element is about: customer_id, or under identity resolution the first
    identifier (in the job's order) the element carries, named so that an email and a
    phone number that happen to be equal stay two keys."""

    def __init__(self, identifiers: Sequence[str]) -> None:
        self.identifiers = list(identifiers)

    def texts(self, ids: Sequence[str | None], encoded: Sequence[bytes]) -> Sequence[str | None]:
        if None not in ids:  # a customer_id on every row: nothing to look up
            return ids
        texts: list[str | None] = list(ids)
        for position, customer in enumerate(ids):
            if customer is None:
                texts[position] = self._identifier(encoded[position])
        return texts

    def _identifier(self, element: bytes) -> str | None:
        attributes = orjson.loads(element).get("attributes") or {}
        for name in self.identifiers:
            value = attributes.get(name)
            if value is not None:
                return f"\x00{name}\x00{value}"  # never equal to a customer_id (no NUL there)
        return None

    def hashes(
        self, ids: Sequence[str | None], encoded: Sequence[bytes]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(key hashes, has a key): a row with no key is always sent and never recorded."""
        texts = self.texts(ids, encoded)
        if None not in texts:
            return _hash64(cast("Sequence[str]", texts)), np.ones(len(texts), dtype=bool)
        known = np.fromiter((t is not None for t in texts), dtype=bool, count=len(texts))
        hashes = np.zeros(len(texts), dtype=np.int64)
        if known.any():
            hashes[known] = _hash64([t for t in texts if t is not None])
        return hashes, known

    def of_rows(self, rows: Sequence[Row]) -> list[tuple[int, int]]:
        """(key, fingerprint) for accepted rows; a merged row records its last part."""
        elements = [row.parts[-1][1] if row.parts else row.encoded for row in rows]
        keys, known = self.hashes([row.customer_id for row in rows], elements)
        prints = fingerprints(elements)
        return [(int(k), int(f)) for k, f, ok in zip(keys, prints, known, strict=True) if ok]


def delivered_ids(rows: Sequence[Row]) -> list[tuple[int, str]]:
    """(customer key, customer_id) of accepted rows that carry a customer_id: the ids
    sync.delete_absent keeps (the key is the snapshot's, the hash of the customer_id)."""
    return keyed_ids([row.customer_id for row in rows if row.customer_id is not None])


def keyed_ids(ids: Sequence[str]) -> list[tuple[int, str]]:
    """(customer key, customer_id): the key the snapshot holds for each id."""
    return [(int(k), i) for k, i in zip(_hash64(ids), ids, strict=True)]


class _Lookup:
    """Sorted keys and their values; `get` answers a batch of keys at once."""

    def __init__(self, keys: np.ndarray, values: np.ndarray) -> None:
        self.keys = keys
        self.values = values

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions, found) of `keys` in this table."""
        if not len(self.keys):
            return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
        # Looked up in key order: each search starts near the last one, so a large table
        # is walked once instead of jumped about in (a few times faster at millions).
        order = np.argsort(keys)
        at = np.empty(len(keys), dtype=np.int64)
        at[order] = np.searchsorted(self.keys, keys[order])
        at[at == len(self.keys)] = 0
        return at, self.keys[at] == keys


class _Overlay:
    """Fingerprints of rows sent in this run, newest wins: a few sorted runs merged as they
    grow (log-structured), so adding a chunk never copies the whole."""

    def __init__(self) -> None:
        self._runs: list[_Lookup] = []

    def get(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.zeros(len(keys), dtype=np.int64)
        found = np.zeros(len(keys), dtype=bool)
        for run in self._runs:  # oldest first: a newer run overwrites
            at, hit = run.find(keys)
            values[hit] = run.values[at[hit]]
            found |= hit
        return values, found

    def put(self, keys: np.ndarray, values: np.ndarray) -> None:
        """`keys` unique; a key present already takes its new value."""
        if not len(keys):
            return
        order = np.argsort(keys, kind="stable")
        self._runs.append(_Lookup(keys[order], values[order]))
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            newer = self._runs.pop()
            older = self._runs.pop()
            self._runs.append(_merge(older, newer))


def _merge(older: _Lookup, newer: _Lookup) -> _Lookup:
    keys = np.concatenate([older.keys, newer.keys])
    values = np.concatenate([older.values, newer.values])
    order = np.argsort(keys, kind="stable")  # equal keys: the newer one last
    keys, values = keys[order], values[order]
    last = np.ones(len(keys), dtype=bool)
    last[:-1] = keys[1:] != keys[:-1]
    return _Lookup(keys[last], values[last])


@dataclass
class Diff:
    """One chunk's verdict: the rows to send, and the row numbers that are unchanged."""

    send: Sequence[Row]
    unchanged: list[int]


class SyncDiff:
    """Compares each chunk, in file order, with the snapshot and with what this run sent.

    `full`: every row is sent (and the snapshot refreshed from what is accepted); the
    customers seen are still noted, so `customers_absent` is counted either way.
    """

    def __init__(
        self, keys: np.ndarray, prints: np.ndarray, customer_keys: CustomerKeys, full: bool
    ) -> None:
        self.snapshot = _Lookup(keys, prints)
        self.seen = np.zeros(len(keys), dtype=bool)
        self.customer_keys = customer_keys
        self.full = full
        self._sent = _Overlay()
        self.unidentified = 0  # rows read whose customer is unknown (see `see`)

    def compare(self, rows: Sequence[Row]) -> Diff:
        if not len(rows):
            return Diff(rows, [])
        if isinstance(rows, ValidRows):
            ids, encoded, numbers = rows.customer_ids, rows.encoded, rows.numbers
        else:
            ids = [r.customer_id for r in rows]
            encoded = [r.encoded for r in rows]
            numbers = [r.row for r in rows]
        keys, known = self.customer_keys.hashes(ids, encoded)
        prints = fingerprints(encoded)
        at, in_snapshot = self.snapshot.find(keys)
        in_snapshot &= known
        self.seen[at[in_snapshot]] = True
        # What MoEngage holds before each row: the snapshot, or what this run sent since.
        before = np.zeros(len(keys), dtype=np.int64)
        before[in_snapshot] = self.snapshot.values[at[in_snapshot]]
        held = in_snapshot.copy()
        sent_value, sent = self._sent.get(keys)
        before[sent] = sent_value[sent]
        held |= sent & known
        # A customer twice in this chunk: its later row compares with its earlier one.
        order = np.lexsort((np.arange(len(keys)), keys))
        repeat = np.zeros(len(keys), dtype=bool)
        repeat[order[1:]] = (keys[order[1:]] == keys[order[:-1]]) & known[order[1:]]
        previous = np.empty(len(keys), dtype=np.int64)
        previous[order[1:]] = prints[order[:-1]]
        before[repeat] = previous[repeat]
        held |= repeat
        changed = ~known | ~held | (before != prints)
        if self.full:  # every row goes: nothing to remember for the next chunk
            return Diff(rows, [])
        # The overlay keeps each sent customer's last row of the chunk.
        last = np.ones(len(keys), dtype=bool)
        last[order[:-1]] = keys[order[:-1]] != keys[order[1:]]
        record = changed & known
        # A key's last row decides what MoEngage will hold; note it if any row of it is sent.
        touched = np.unique(keys[record])
        final = last & known & np.isin(keys, touched)
        self._sent.put(keys[final], prints[final])
        if changed.all():
            return Diff(rows, [])
        keep = np.flatnonzero(changed).tolist()
        unchanged = [numbers[p] for p in np.flatnonzero(~changed).tolist()]
        first = rows[0]
        send = ValidRows(
            first.source,
            [numbers[p] for p in keep],
            [ids[p] for p in keep],
            [encoded[p] for p in keep],
            first.chunk,
        )
        return Diff(send, unchanged)

    def absent(self) -> int:
        """Customers of the snapshot no row of this run was about."""
        return int(len(self.seen) - np.count_nonzero(self.seen))

    def see(self, customer_ids: Sequence[str | None]) -> None:
        """Customers of rows that were read but not compared (invalid ones) are not absent;
        a row without a readable customer_id could be anyone's (`unidentified`)."""
        ids = [i for i in customer_ids if i is not None]
        self.unidentified += len(customer_ids) - len(ids)
        if ids and len(self.snapshot):
            at, found = self.snapshot.find(_hash64(ids))
            self.seen[at[found]] = True

    def absent_keys(self) -> np.ndarray:
        """The keys of the snapshot's customers no row of this run was about."""
        return self.snapshot.keys[~self.seen]
