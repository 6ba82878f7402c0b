"""Per-customer order: rows of one customer reach the API in file order, the last row last.

Three parts, each cheap enough to leave the unthrottled rate nearly whole:

- `sequence` (reader thread, per chunk): a customer's consecutive plain attribute sets are
  merged into one element with the same end state (the later value wins); the rows that
  cannot be merged go to later "rounds", so one request never holds a customer twice.
- `CustomerGate` (event loop): a request waits until no earlier request holding one of its
  customers is still unanswered (retries and splits included).
- `CustomerTally` (reader thread): counts customers seen in more than one row, in bounded
  memory (sorted arrays of 64-bit hashes, 8 bytes a customer).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from importer import moengage
from importer.mapping import events
from importer.rows import Row, ValidRows

# Keys of an element that `merge` understands; anything else keeps the element apart.
_PLAIN_KEYS = frozenset({"type", "customer_id", "attributes", "update_existing_only"})
# Attributes whose effect depends on what is stored already: never merged.
_NOT_PLAIN = frozenset(
    {moengage.ADD_TO_ARRAY_KEY, moengage.REMOVE_FROM_ARRAY_KEY, moengage.PLATFORMS_KEY}
)


def customer_ids(rows: Sequence[Row]) -> list[str | None]:
    return rows.customer_ids if isinstance(rows, ValidRows) else [r.customer_id for r in rows]


def _plain(element: Any) -> bool:
    """An element whose effect is a plain set of attributes (the same whatever came before)."""
    try:
        return (
            element["type"] == "customer"
            and _PLAIN_KEYS.issuperset(element)
            and _NOT_PLAIN.isdisjoint(element["attributes"])
            and isinstance(element["attributes"], dict)
        )
    except (KeyError, TypeError):
        return False


def merge(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any] | None:
    """One element with the end state of `earlier` then `later`, or None if there is none."""
    if not (_plain(earlier) and _plain(later)):
        return None
    if earlier.get("update_existing_only") != later.get("update_existing_only"):
        return None
    return {**later, "attributes": {**earlier["attributes"], **later["attributes"]}}


# One element to send: (row number, customer_id, encoded, parts); parts as in Row.parts.
_Element = tuple[int, "str | None", bytes, tuple[tuple[int, bytes], ...]]


def _merge_run(run: list[tuple[int, bytes, dict[str, Any]]]) -> bytes:
    """The encoded element for a run of plain elements of one customer, in order: `merge`
    folded over the run, in one pass."""
    attributes: dict[str, Any] = {}
    for _, _, element in run:
        attributes.update(element["attributes"])
    return orjson.dumps({**run[-1][2], "attributes": attributes})


def _customer_elements(
    customer: str, found: list[tuple[int, bytes]], max_element_bytes: int
) -> list[_Element]:
    """A customer's rows, in order, with each run of mergeable ones made one element."""
    if found and events.is_event(found[0][1]):
        return events.group_actions(customer, found, max_element_bytes)
    out: list[_Element] = []
    run: list[tuple[int, bytes, dict[str, Any]]] = []

    def close_run() -> None:
        if not run:
            return
        merged = _merge_run(run) if len(run) > 1 else None
        if merged is not None and len(merged) <= max_element_bytes:
            parts = tuple((number, encoded) for number, encoded, _ in run)
            out.append((run[0][0], customer, merged, parts))
        else:  # one row, or too large merged: each row its own element
            out.extend((number, customer, encoded, ()) for number, encoded, _ in run)
        run.clear()

    for number, encoded in found:
        element = orjson.loads(encoded)
        if not _plain(element):
            close_run()
            out.append((number, customer, encoded, ()))
            continue
        if run and run[0][2].get("update_existing_only") != element.get("update_existing_only"):
            close_run()
        run.append((number, encoded, element))
    close_run()
    return out


def sequence(rows: Sequence[Row], max_element_bytes: int) -> list[Sequence[Row]] | None:
    """Rounds of rows to send one after the other, or None when no customer repeats.

    Within a round a customer appears once; its k-th element (after merging) is in round
    k. Rows keep their file order within a round.
    """
    ids = customer_ids(rows)
    if len(set(ids)) == len(ids):
        return None
    repeated = {c for c, n in Counter(ids).items() if n > 1 and c is not None}
    if not repeated:
        return None
    if isinstance(rows, ValidRows):
        numbers, encoded, chunk = rows.numbers, rows.encoded, rows.chunk
    else:
        numbers = [r.row for r in rows]
        encoded = [r.encoded for r in rows]
        chunk = rows[0].chunk
    source = rows[0].source
    found: dict[str, list[tuple[int, bytes]]] = {}
    first_at: dict[int, str] = {}  # position of a repeated customer's first row
    for position, customer in enumerate(ids):
        if customer in repeated:
            if customer not in found:
                found[customer] = []
                first_at[position] = customer
            found[customer].append((numbers[position], encoded[position]))
    rounds: list[list[_Element]] = [[]]
    first = rounds[0]
    for position, customer in enumerate(ids):
        if customer not in repeated:
            first.append((numbers[position], customer, encoded[position], ()))
        elif position in first_at:
            elements = _customer_elements(customer, found[customer], max_element_bytes)
            while len(rounds) < len(elements):
                rounds.append([])
            for round_number, element in enumerate(elements):
                rounds[round_number].append(element)
    return [_as_rows(source, r, chunk) for r in rounds if r]


def _as_rows(source: str, elements: list[_Element], chunk: Any) -> ValidRows:
    parts = [e[3] for e in elements]
    return ValidRows(
        source,
        [e[0] for e in elements],
        [e[1] for e in elements],
        [e[2] for e in elements],
        chunk,
        parts if any(parts) else None,
    )


@dataclass
class Held:
    """A request a worker holds: its customers, and a future set when it is answered."""

    customers: frozenset[str]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class CustomerGate:
    """A request is sent only once no earlier request holding one of its customers is open.

    Workers take batches from one FIFO queue, so when a worker takes a batch, every
    earlier batch has been taken already: the open earlier ones are those other workers
    hold (at most concurrency - 1), and waiting only ever goes to earlier batches, so it
    cannot deadlock.
    """

    def __init__(self) -> None:
        self._held: list[Held] = []

    def take(self, customers: frozenset[str]) -> tuple[Held, list[asyncio.Future[None]]]:
        """Register a batch just taken from the queue; returns it and what it must wait for."""
        earlier = [h.done for h in self._held if not h.customers.isdisjoint(customers)]
        held = Held(customers)
        self._held.append(held)
        return held, earlier

    def release(self, held: Held) -> None:
        self._held.remove(held)
        if not held.done.done():
            held.done.set_result(None)


class _SortedRuns:
    """A set of int64 hashes as a few sorted arrays (log-structured: merged as they grow)."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs)

    def contains(self, values: np.ndarray) -> np.ndarray:
        found = np.zeros(len(values), dtype=bool)
        for run in self._runs:
            at = np.searchsorted(run, values)
            at[at == len(run)] = 0
            found |= run[at] == values
        return found

    def add(self, values: np.ndarray) -> None:
        """Add sorted values none of which is present yet."""
        if not len(values):
            return
        self._runs.append(values)
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            last = self._runs.pop()
            self._runs[-1] = np.sort(np.concatenate([self._runs[-1], last]), kind="mergesort")


class CustomerTally:
    """Customers seen more than once in a run, counted in bounded memory.

    Python's 64-bit string hash stands in for the customer: two customers sharing a hash
    (about one chance in 10^6 at ten million customers) would count as one duplicate.
    """

    def __init__(self) -> None:
        self._seen = _SortedRuns()
        self._repeated = _SortedRuns()
        self.duplicates = 0

    def add(self, ids: Sequence[str | None]) -> None:
        hashes = np.fromiter((hash(c) for c in ids if c is not None), dtype=np.int64)
        if not len(hashes):
            return
        unique, counts = np.unique(hashes, return_counts=True)
        known = self._seen.contains(unique)
        repeated = unique[(counts > 1) | known]
        new_repeats = repeated[~self._repeated.contains(repeated)]
        self.duplicates += len(new_repeats)
        self._repeated.add(new_repeats)
        self._seen.add(unique[~known])
