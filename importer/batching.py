"""Rows into requests under the byte cap: pure functions, counted on the encoded bytes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from importer import moengage
from importer.rows import Row

BULK = "bulk"
CUSTOMER = "customer"

# The bytes a bulk body spends beyond its elements (the separators are counted per element).
_BULK_FRAME = len(moengage.BULK_PREFIX) + len(moengage.BULK_SUFFIX)


def pack(
    rows: Iterable[Row], max_batch_bytes: int, max_items: int, endpoint: str
) -> Iterator[list[Row]]:
    """Group rows, in order, into requests whose body fits `max_batch_bytes`.

    bulk: as many rows as fit (at most `max_items`); customer: one row a request.
    """
    if max_items < 1:
        raise ValueError("max_items must be at least 1")
    if endpoint == CUSTOMER:
        for row in rows:
            _check_fits(row, len(row.encoded), max_batch_bytes)
            yield [row]
        return
    if endpoint != BULK:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected {BULK} or {CUSTOMER}")
    batch: list[Row] = []
    size = _BULK_FRAME
    for row in rows:
        _check_fits(row, _BULK_FRAME + len(row.encoded), max_batch_bytes)
        added = len(row.encoded) + (1 if batch else 0)  # the comma before every element but one
        if batch and (size + added > max_batch_bytes or len(batch) >= max_items):
            yield batch
            batch, size, added = [], _BULK_FRAME, len(row.encoded)
        batch.append(row)
        size += added
    if batch:
        yield batch


def request_body(rows: list[Row], endpoint: str) -> bytes:
    """The exact bytes sent for these rows (what `pack` counted)."""
    if endpoint == CUSTOMER:
        if len(rows) != 1:
            raise ValueError(f"the customer endpoint takes one row a request, not {len(rows)}")
        return rows[0].encoded
    return moengage.bulk_body([row.encoded for row in rows])


def body_size(rows: list[Row], endpoint: str) -> int:
    """len(request_body(rows, endpoint)) without building it."""
    if endpoint == CUSTOMER:
        return sum(len(row.encoded) for row in rows)
    return _BULK_FRAME + sum(len(row.encoded) for row in rows) + max(len(rows) - 1, 0)


def _check_fits(row: Row, size: int, max_batch_bytes: int) -> None:
    # Mapping refuses elements this large; reaching here is a bug, not a data problem.
    if size > max_batch_bytes:
        raise ValueError(
            f"{row.source} row {row.row}: a request holding only this row is {size} bytes,"
            f" over the {max_batch_bytes}-byte cap"
        )
