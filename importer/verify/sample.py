"""A reproducible sample of a job's customers and the elements their rows map to, in order.

A customer is in the sample when its seeded hash is among the N smallest: the same input,
N and seed pick the same customers whatever the file order, in one pass and bounded memory.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from importer.rows import Row


def sample_key(customer_id: str, seed: int) -> int:
    digest = hashlib.blake2b(customer_id.encode(), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "big")


@dataclass
class CustomerSample:
    """The N customers with the smallest keys seen so far, each with its elements in order."""

    size: int
    seed: int
    elements: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _largest: list[tuple[int, str]] = field(default_factory=list)  # a max-heap by negation

    def add(self, rows: Iterable[Row]) -> None:
        for row in rows:
            if row.customer_id is not None:
                self._add(row.customer_id, _elements_of(row))

    def _add(self, customer_id: str, elements: list[dict[str, Any]]) -> None:
        if customer_id in self.elements:
            self.elements[customer_id] += elements
            return
        key = sample_key(customer_id, self.seed)
        if len(self._largest) == self.size:
            if self.size == 0 or key >= -self._largest[0][0]:
                return
            _, evicted = heapq.heappop(self._largest)
            del self.elements[evicted]
        heapq.heappush(self._largest, (-key, customer_id))
        self.elements[customer_id] = elements

    def customer_ids(self) -> list[str]:
        return sorted(self.elements)


def _elements_of(row: Row) -> list[dict[str, Any]]:
    """A merged row stands for several rows of one customer: each of their elements."""
    if row.parts:
        return [orjson.loads(encoded) for _, encoded in row.parts]
    return [row.element]
