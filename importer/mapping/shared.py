"""What both mappers do around their elements: convert a chunk's columns collecting problems,
refuse missing columns, and settle rows as valid or invalid (malformed records included)."""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from importer import moengage
from importer.config import ConfigError
from importer.mapping.converters import Field
from importer.mapping.text import control_problems
from importer.rows import Chunk, InvalidRow, MappedChunk, ValidRows
from importer.sources.headers import describe_columns, looks_like_header

# The largest element a request can carry beside the bulk frame around it.
DEFAULT_MAX_ELEMENT_BYTES = moengage.MAX_REQUEST_BYTES - moengage.BULK_FRAME_BYTES
# The record of a CSV line that could not be split into columns: its text as read.
MALFORMED_RECORD_KEY = "_raw"


class ChunkConversion:
    """One chunk's columns converted field by field, and every problem found, by row position."""

    def __init__(self, chunk: Chunk, id_column: str | None) -> None:
        self.frame = chunk.frame
        self.rows = len(chunk.frame)
        self.problems: dict[int, list[str]] = {}
        self.refused: dict[str, set[int]] = {}  # a field's rows its converter refused
        # The id column has its own rules; a chunk known to be free of control characters
        # needs no check per column.
        self._checked: set[Any] = set(self.frame.columns) if chunk.control_free else {id_column}

    def note(self, errors: dict[int, str]) -> None:
        for position, message in errors.items():
            self.problems.setdefault(position, []).append(message)

    def convert(self, field: Field) -> pa.Array:
        """The field's JSON fragments for the chunk; its problems noted."""
        values = self.frame[field.column]
        fragments, errors = field.convert(values)
        if field.column not in self._checked:
            self._checked.add(field.column)
            errors = {**control_problems(values, field.column), **errors}
        self.note(errors)
        self.refused[field.name] = set(errors)
        return fragments


def check_columns(wanted: list[tuple[str, str]], available: list[str], source: str) -> None:
    """Refuse (key path, column) pairs whose column `source` lacks, suggesting close matches."""
    present = set(available)
    problems = []
    for key_path, column in wanted:
        if column in present:
            continue
        header = looks_like_header(available)  # else a data row: never shown
        close = difflib.get_close_matches(column, available, n=3) if header else []
        hint = (
            f"did you mean {', '.join(repr(c) for c in close)}?"
            if close
            else describe_columns(available)
        )
        problems.append(f"{key_path}: column {column!r} is not in {source}; {hint}")
    if problems:
        raise ConfigError("\n".join(problems))


def settle(
    chunk: Chunk,
    ids: list[Any],
    elements: pa.Array,
    problems: dict[int, list[str]],
    max_element_bytes: int,
) -> MappedChunk:
    """Rows that broke no rule and fit a request are valid; the rest are InvalidRows."""
    limit = max_element_bytes
    sizes = pc.binary_length(elements).to_numpy(zero_copy_only=False)
    for position in np.flatnonzero(sizes > limit):
        message = f"element is {int(sizes[position])} bytes; one request holds at most {limit}"
        problems.setdefault(int(position), []).append(message)
    encoded = pc.cast(elements, pa.binary()).to_numpy(zero_copy_only=False).tolist()
    numbers = chunk.frame.index.tolist()
    source = chunk.source
    mapped = MappedChunk(source=source, rows_read=len(numbers))
    if problems:
        keep = np.ones(len(numbers), dtype=bool)
        keep[list(problems)] = False
        good = np.flatnonzero(keep).tolist()
        mapped.valid = ValidRows(
            source,
            [numbers[p] for p in good],
            [ids[p] for p in good],
            [encoded[p] for p in good],
            chunk,
        )
    else:
        mapped.valid = ValidRows(source, numbers, list(ids), encoded, chunk)
    for bad in sorted(problems):
        payload = orjson.loads(encoded[bad])
        if payload.get("customer_id", "") is None:
            del payload["customer_id"]  # missing: shown as absent, as it would be sent
        number = numbers[bad]
        mapped.invalid.append(
            InvalidRow(
                source=source,
                row=number,
                customer_id=ids[bad],
                error="; ".join(problems[bad]),
                record=chunk.record(number),
                payload=payload,
                line=chunk.line(number),
            )
        )
    return mapped


def add_malformed(mapped: MappedChunk, chunk: Chunk) -> None:
    """CSV records that could not be read as rows: rows of their own, dead-lettered as read."""
    mapped.warnings += chunk.warnings
    if not chunk.malformed:
        return
    mapped.rows_read += len(chunk.malformed)
    mapped.invalid += [
        InvalidRow(
            chunk.source,
            bad.row,
            None,
            f"malformed record: {bad.reason}",
            {MALFORMED_RECORD_KEY: bad.text},
            line=bad.first_line,
            lines=(bad.first_line, bad.last_line),
        )
        for bad in chunk.malformed
    ]
    mapped.invalid.sort(key=lambda invalid: invalid.row)
