"""Reading one data file: CSV / Parquet -> numbered chunks of rows, partition columns added."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from importer.config import SourceConfig, SourceFormat
from importer.rows import Chunk, RowCount, RowFilter
from importer.sources.columns import each_file, file_columns, read_columns
from importer.sources.csv_reader import EmptyFile, csv_chunks, estimate_csv_rows
from importer.sources.datafile import DataFile, SourceError, as_data_file, format_of
from importer.sources.parquet import parquet_chunks, parquet_file


def iter_chunks(
    file: DataFile | Path,
    source: SourceConfig,
    columns: list[str] | None = None,
    start_row: int = 1,
    row_filter: RowFilter | None = None,
) -> Iterator[Chunk]:
    """Chunks of about `source.chunk_rows` rows; `frame.index` holds the 1-based data row numbers.

    Only `columns` are read when given; those the file lacks are filled in: a partition
    column with its folder's value, any other as empty (parts of an export may differ).
    Rows before `start_row` (resume) are never turned into
    frames: CSV records are counted by the scanner and dropped unparsed (so row numbers stay
    exactly those of a full read), Parquet row groups are skipped by their metadata.

    A CSV record that cannot be read as a row (wrong number of fields, an unterminated quote,
    bytes not in the encoding, longer than `source.csv.max_record_bytes`) is a data row of
    its own: it is left out of the frame and listed in `Chunk.malformed` with its number, full
    text and lines, so the rows after it keep the numbers of a full read. A CSV chunk covers
    `chunk_rows` consecutive data rows, good and malformed (its frame can be empty), and
    `Chunk.lines` gives the physical line where each starts. Should arrow ever count the
    records differently from the scanner, the read stops with a SourceError naming the file
    and about where, rather than misnumber the rows after it.

    A `row_filter` (a slice's customers) leaves rows out as they are read: a chunk holds
    only the rows it keeps, and counts the others in `other_rows`.
    """
    if start_row < 1:
        raise ValueError("start_row is 1-based")
    data = as_data_file(file)
    try:
        stored = file_columns(data, source)
    except EmptyFile:
        if columns is None:
            raise
        return  # a part with not even a header holds no rows
    wanted = list(columns) if columns is not None else read_columns(data, source)
    to_read = [c for c in wanted if c in stored]
    # The filter's column is read from the file, or filled in after it (a partition column).
    early = row_filter if row_filter is not None and row_filter.column in to_read else None
    if format_of(data, source.format) == SourceFormat.PARQUET:
        chunks = parquet_chunks(data, source, to_read, start_row, early)
    else:
        chunks = csv_chunks(data, source, to_read, start_row, early)
    if to_read == wanted and early is row_filter:
        yield from chunks
        return
    partitions = dict(data.partitions)
    for chunk in chunks:
        if to_read != wanted:
            chunk.frame = _completed(chunk.frame, wanted, partitions)
        yield chunk if early is row_filter or row_filter is None else row_filter.apply(chunk)


def _completed(
    frame: pd.DataFrame, columns: list[str], partitions: dict[str, str | None]
) -> pd.DataFrame:
    """The frame with `columns` in order: those it lacks are partition values or empty."""
    rows = len(frame)
    filled: dict[str, Any] = {}
    for column in columns:
        if column in frame.columns:
            filled[column] = frame[column]
            continue
        value = partitions.get(column)
        cells = pa.nulls(rows, pa.string()) if value is None else pa.repeat(value, rows)
        filled[column] = pd.Series(
            pd.arrays.ArrowExtensionArray(cells.cast(pa.string())), index=frame.index
        )
    return pd.DataFrame(filled, index=frame.index)


def count_rows(files: Sequence[DataFile | Path], source: SourceConfig) -> RowCount | None:
    """Data rows across `files`, for a progress bar: exact for Parquet (its metadata) and for
    CSV files whose text fits in one sample block (1 MiB), otherwise estimated ("about") from
    the rows in the first block and the bytes it took of the file (compressed bytes for a
    compressed file); None if a file cannot tell (a zip, unreadable)."""

    def rows_of(data: DataFile) -> RowCount | None:
        try:
            if format_of(data, source.format) == SourceFormat.PARQUET:
                return RowCount(int(parquet_file(data).metadata.num_rows), exact=True)
            return estimate_csv_rows(data, source)
        except (SourceError, OSError, EOFError, ValueError):
            return None

    total, exact = 0, True
    for count in each_file(rows_of, [as_data_file(f) for f in files]):
        if count is None:
            return None
        total += count.rows
        exact = exact and count.exact
    return RowCount(total, exact)
