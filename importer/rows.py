"""The units that flow between stages: a chunk of source rows, a mapped row, an invalid row."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple, Protocol, overload

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute

from importer.moengage import EVENT_ELEMENT_PREFIX


@dataclass(frozen=True, slots=True)
class RowCount:
    """How many data rows an input holds, for progress: exact, or an estimate ("about")."""

    rows: int
    exact: bool


class RecordSource(Protocol):
    """Anything that can give back a row as read (a Chunk, or a dead-letter line in replay)."""

    def record(self, row: int) -> dict[str, Any]: ...


class Malformed(NamedTuple):
    """A CSV record that could not be read as a row: its full raw text and physical lines."""

    row: int
    text: str
    reason: str
    first_line: int
    last_line: int


@dataclass(frozen=True, slots=True)
class LineMap:
    """Data row -> the physical line where its record starts (CSV only)."""

    rows: np.ndarray  # sorted
    lines: np.ndarray

    def line(self, row: int) -> int | None:
        index = int(np.searchsorted(self.rows, row))
        if index < len(self.rows) and int(self.rows[index]) == row:
            return int(self.lines[index])
        return None


@dataclass(slots=True)
class Chunk:
    """A slice of one source file. `frame.index` holds the 1-based data row numbers."""

    source: str
    frame: pd.DataFrame
    # CSV records that could not be read as rows (wrong number of fields, open quote, bytes
    # not in the encoding, too long)
    malformed: list[Malformed] = field(default_factory=list)
    lines: LineMap | None = None  # CSV: where each row's record starts
    warnings: list[str] = field(default_factory=list)  # for the run summary; no cell values
    # No cell holds a control character (other than tab and newlines): checked on the raw
    # CSV bytes at once, which spares mapping a check per column.
    control_free: bool = False
    # Rows read but left out by the reader's `RowFilter` (other slices' rows): counted, not
    # kept, so that across the slices every row is counted exactly once.
    other_rows: int = 0

    def record(self, row: int) -> dict[str, Any]:
        """The row as read, JSON-ready (missing cells are None), for the dead-letter file."""
        return record_of(self.frame, row)

    def line(self, row: int) -> int | None:
        """The physical line where the row's record starts (CSV), else None."""
        return None if self.lines is None else self.lines.line(row)


@dataclass(frozen=True, slots=True)
class RowFilter:
    """The rows a run keeps, chosen by one column as read (a slice's customers).

    Readers apply it to the parsed table, before it becomes a frame and before line maps are
    built, so rows that are not kept cost no more than their parse; `Chunk.other_rows` counts
    them. Records that cannot be read as rows have no column: `keep_malformed` says whether
    they are kept (exactly one of a set of filters keeps them)."""

    column: str
    keep: Callable[[pd.Series], np.ndarray]  # the column's cells -> a boolean mask
    keep_malformed: bool

    def mask(self, cells: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Which of the column's cells (as parsed, arrow) are kept."""
        series = pd.Series(pd.arrays.ArrowExtensionArray(cells), copy=False)
        return np.asarray(self.keep(series), dtype=bool)

    def apply(self, chunk: Chunk) -> Chunk:
        """The chunk less the rows not kept (for a reader that could not filter earlier: the
        column was filled in after reading, as a partition column is)."""
        before = len(chunk.frame) + len(chunk.malformed)
        mine = np.asarray(self.keep(chunk.frame[self.column]), dtype=bool)
        if not mine.all():
            chunk.frame = chunk.frame[mine]
        if not self.keep_malformed:
            chunk.malformed = []
        chunk.other_rows += before - len(chunk.frame) - len(chunk.malformed)
        return chunk


@dataclass(slots=True)
class Row:
    """One row that mapped to a valid element, ready to batch."""

    source: str
    row: int
    customer_id: str | None
    encoded: bytes  # the element as JSON; batching counts these bytes
    chunk: RecordSource  # rebuilds the record only if the row ends in the dead-letter file
    # Rows of one customer merged into this one element (see ordering.merge_runs): each
    # (row number, its own encoded element), in file order. Empty for a plain row.
    parts: tuple[tuple[int, bytes], ...] = ()

    @property
    def element(self) -> dict[str, Any]:
        """Decoded on demand (dead letters, samples): a dict per valid row costs too much."""
        element: dict[str, Any] = orjson.loads(self.encoded)
        return element

    @property
    def weight(self) -> int:
        """What this element spends on the rate limit: an event element its actions (one a
        row it was made of), a user element one update however many rows merged into it."""
        if self.parts and self.encoded.startswith(EVENT_ELEMENT_PREFIX):
            return len(self.parts)
        return 1

    @property
    def numbers(self) -> list[int]:
        """The source rows this element settles."""
        return [number for number, _ in self.parts] if self.parts else [self.row]

    def record(self) -> dict[str, Any]:
        return self.chunk.record(self.row)

    def line(self) -> int | None:
        """The physical line of the row's record, when its source knows lines (CSV)."""
        line_of = getattr(self.chunk, "line", None)
        return None if line_of is None else line_of(self.row)

    def split(self) -> list[Row]:
        """A merged row as the rows it was made of (each its own element); else itself."""
        if not self.parts:
            return [self]
        return [
            Row(self.source, number, self.customer_id, encoded, self.chunk)
            for number, encoded in self.parts
        ]


@dataclass(slots=True)
class InvalidRow:
    """A row that broke a rule; it goes to the dead-letter file with stage `validation`."""

    source: str
    row: int
    customer_id: str | None
    error: str  # names the column, the value (shortened) and the rule
    record: dict[str, Any]
    payload: dict[str, Any] | None = None  # the element as it would have been sent, if built
    line: int | None = None  # CSV: the physical line where the record starts
    lines: tuple[int, int] | None = None  # a malformed CSV record: its first and last line


class ValidRows(Sequence[Row]):
    """A chunk's valid rows as parallel lists; a `Row` object is made only when one is asked for.

    Validating a large export never needs a per-row object, and a paced run makes them
    a batch at a time, so a million `Row`s never sit in memory at once.
    """

    __slots__ = ("chunk", "customer_ids", "encoded", "numbers", "parts", "source")

    def __init__(
        self,
        source: str,
        numbers: list[int],
        customer_ids: list[str | None],
        encoded: list[bytes],
        chunk: RecordSource,
        parts: list[tuple[tuple[int, bytes], ...]] | None = None,  # see Row.parts
    ) -> None:
        self.source = source
        self.numbers = numbers
        self.customer_ids = customer_ids
        self.encoded = encoded
        self.chunk = chunk
        self.parts = parts

    def __len__(self) -> int:
        return len(self.numbers)

    @overload
    def __getitem__(self, index: int) -> Row: ...
    @overload
    def __getitem__(self, index: slice) -> list[Row]: ...
    def __getitem__(self, index: int | slice) -> Row | list[Row]:
        if isinstance(index, slice):
            if self.parts is not None:
                return [self._row(i) for i in range(*index.indices(len(self.numbers)))]
            return [
                Row(self.source, number, customer_id, data, self.chunk)
                for number, customer_id, data in zip(
                    self.numbers[index], self.customer_ids[index], self.encoded[index], strict=True
                )
            ]
        return self._row(index)

    def _row(self, i: int) -> Row:
        parts = self.parts[i] if self.parts is not None else ()
        return Row(
            self.source, self.numbers[i], self.customer_ids[i], self.encoded[i], self.chunk, parts
        )


@dataclass(slots=True)
class MappedChunk:
    source: str
    rows_read: int
    valid: Sequence[Row] = field(default_factory=list)
    invalid: list[InvalidRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # for the run summary; no cell values


# --- a row as read, JSON-ready (for dead letters and replay) ---------------------------


def record_of(frame: pd.DataFrame, row: int) -> dict[str, Any]:
    """The row numbered `row` as read, with every value JSON-ready (missing cells are None)."""
    return {str(column): _json_value(_cell(frame, row, column)) for column in frame.columns}


def _cell(frame: pd.DataFrame, row: int, column: Any) -> Any:
    try:
        return frame.at[row, column]
    except (OverflowError, ValueError):
        # A value Python cannot hold (a timestamp past year 9999): arrow writes it as text.
        position = int(np.flatnonzero(frame.index == row)[0])
        cell = pa.array(frame[column].iloc[position : position + 1])
        return pa.compute.cast(cell, pa.string())[0].as_py()


def _json_value(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value if math.isfinite(value) else str(value)
    if isinstance(value, np.floating) and value.dtype.itemsize < 8:
        return _json_value(float(str(value)))  # float32 1.1 as 1.1, its own shortest form
    if isinstance(value, np.generic):
        return _json_value(value.item())
    if isinstance(value, pd.Timestamp | dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, pd.Timedelta | dt.timedelta):
        return str(value)
    return str(value)
