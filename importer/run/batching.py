"""Rows into requests under the byte cap: pure functions, counted on the encoded bytes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from importer import moengage
from importer.rows import Row, ValidRows

BULK = moengage.Endpoint.BULK
CUSTOMER = moengage.Endpoint.CUSTOMER

# The bytes a bulk body spends beyond its elements (the separators are counted per element).
_BULK_FRAME = moengage.BULK_FRAME_BYTES


class ElementTooLarge(ValueError):
    def __init__(self, position: int, message: str) -> None:
        super().__init__(message)
        self.position = position


def spans(
    lengths: Sequence[int],
    max_batch_bytes: int,
    max_items: int,
    endpoint: str,
    weights: Sequence[int] | None = None,
) -> list[tuple[int, int]]:
    """[start, end) ranges of elements, in order, whose request body fits `max_batch_bytes`.

    bulk: as many elements as fit (at most `max_items`); customer: one element a request.
    Greedy, like a loop that adds elements until the next would not fit, but vectorized:
    a cumulative sum and one binary search per request, not Python work per element.
    """
    if max_items < 1:
        raise ValueError("max_items must be at least 1")
    sizes = np.asarray(lengths, dtype=np.int64)
    count = len(sizes)
    if endpoint == CUSTOMER:
        _check_fits(sizes, 0, max_batch_bytes)
        return [(i, i + 1) for i in range(count)]
    if endpoint != BULK:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected {BULK} or {CUSTOMER}")
    _check_fits(sizes, _BULK_FRAME, max_batch_bytes)
    # Elements [i, j) cost _BULK_FRAME + (ends[j] - ends[i]) - 1 bytes: each brings a comma
    # but one.
    ends = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(sizes + 1, out=ends[1:])
    # With weights (an event element counts its actions), max_items caps their sum.
    spent = None if weights is None else np.concatenate(([0], np.cumsum(weights)))
    result: list[tuple[int, int]] = []
    start = 0
    while start < count:
        budget = ends[start] + max_batch_bytes - _BULK_FRAME + 1
        end = int(np.searchsorted(ends, budget, side="right")) - 1
        if spent is not None:
            items = int(np.searchsorted(spent, spent[start] + max_items, side="right")) - 1
        else:
            items = start + max_items
        end = max(start + 1, min(end, items, count))
        result.append((start, end))
        start = end
    return result


def pack(
    rows: Iterable[Row], max_batch_bytes: int, max_items: int, endpoint: str
) -> Iterator[list[Row]]:
    """Group rows, in order, into requests whose body fits `max_batch_bytes` (see `spans`)."""
    if not isinstance(rows, Sequence):
        rows = list(rows)
    for start, end in row_spans(rows, max_batch_bytes, max_items, endpoint):
        yield list(rows[start:end])


def row_spans(
    rows: Sequence[Row], max_batch_bytes: int, max_items: int, endpoint: str
) -> list[tuple[int, int]]:
    """`spans` over rows; an error names the row."""
    try:
        encoded = encoded_of(rows)
        return spans(
            [len(e) for e in encoded], max_batch_bytes, max_items, endpoint, weights_of(rows)
        )
    except ElementTooLarge as error:
        row = rows[error.position]
        raise ValueError(f"{row.source} row {row.row}: {error}") from None


def weights_of(rows: Sequence[Row]) -> list[int] | None:
    """What each row spends on the rate limit (Row.weight), or None when every row spends
    one; computed without making Row objects where the rows are lazy."""
    if isinstance(rows, ValidRows):
        if rows.parts is None:
            return None
        prefix = moengage.EVENT_ELEMENT_PREFIX
        weights = [
            len(p) if p and e.startswith(prefix) else 1
            for p, e in zip(rows.parts, rows.encoded, strict=True)
        ]
    else:
        weights = [row.weight for row in rows]
    return weights if any(w > 1 for w in weights) else None


def encoded_of(rows: Sequence[Row]) -> Sequence[bytes]:
    """The rows' encoded elements, without making Row objects where the rows are lazy."""
    return rows.encoded if isinstance(rows, ValidRows) else [row.encoded for row in rows]


def request_body(rows: list[Row], endpoint: str) -> bytes:
    """The exact bytes sent for these rows (what `pack` counted)."""
    return encoded_body([row.encoded for row in rows], endpoint)


def encoded_body(encoded: Sequence[bytes], endpoint: str) -> bytes:
    """The request body for these encoded elements."""
    if endpoint == CUSTOMER:
        if len(encoded) != 1:
            raise ValueError(f"the customer endpoint takes one row a request, not {len(encoded)}")
        return encoded[0]
    return moengage.bulk_body(list(encoded))


def body_size(rows: list[Row], endpoint: str) -> int:
    """len(request_body(rows, endpoint)) without building it."""
    if endpoint == CUSTOMER:
        return sum(len(row.encoded) for row in rows)
    return _BULK_FRAME + sum(len(row.encoded) for row in rows) + max(len(rows) - 1, 0)


def _check_fits(sizes: np.ndarray, frame: int, max_batch_bytes: int) -> None:
    # Mapping refuses elements this large; reaching here is a bug, not a data problem.
    too_large = np.flatnonzero(sizes + frame > max_batch_bytes)
    if too_large.size:
        position = int(too_large[0])
        raise ElementTooLarge(
            position,
            f"a request holding only this element is {int(sizes[position]) + frame} bytes,"
            f" over the {max_batch_bytes}-byte cap",
        )
