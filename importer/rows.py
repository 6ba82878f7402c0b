"""The units that flow between stages: a chunk of source rows, a mapped row, an invalid row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import pandas as pd


class RecordSource(Protocol):
    """Anything that can give back a row as read (a Chunk, or a dead-letter line in replay)."""

    def record(self, row: int) -> dict[str, Any]: ...


@dataclass(slots=True)
class Chunk:
    """A slice of one source file. `frame.index` holds the 1-based data row numbers."""

    source: str
    frame: pd.DataFrame

    def record(self, row: int) -> dict[str, Any]:
        """The row as read, JSON-ready (missing cells are None), for the dead-letter file."""
        from importer.sources import record_of  # sources owns how native values are rendered

        return record_of(self.frame, row)


@dataclass(slots=True)
class Row:
    """One row that mapped to a valid element, ready to batch."""

    source: str
    row: int
    customer_id: str | None
    encoded: bytes  # the element as JSON; batching counts these bytes
    chunk: RecordSource  # rebuilds the record only if the row ends in the dead-letter file

    @property
    def element(self) -> dict[str, Any]:
        """Decoded on demand (dead letters, samples): a dict per valid row costs too much."""
        return orjson.loads(self.encoded)

    def record(self) -> dict[str, Any]:
        return self.chunk.record(self.row)


@dataclass(slots=True)
class InvalidRow:
    """A row that broke a rule; it goes to the dead-letter file with stage `validation`."""

    source: str
    row: int
    customer_id: str | None
    error: str  # names the column, the value (shortened) and the rule
    record: dict[str, Any]
    payload: dict[str, Any] | None = None  # the element as it would have been sent, if built


@dataclass(slots=True)
class MappedChunk:
    source: str
    rows_read: int
    valid: list[Row] = field(default_factory=list)
    invalid: list[InvalidRow] = field(default_factory=list)
