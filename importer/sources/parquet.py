"""Reading a Parquet file: its schema, and its rows by record batch as numbered chunks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from importer.config import SourceConfig
from importer.rows import Chunk
from importer.sources.datafile import DataFile, SourceError, as_data_file


def parquet_file(file: DataFile) -> pq.ParquetFile:
    path = file
    try:
        # Spark's INT96 timestamps in microseconds: as nanoseconds, values outside 1677-2262
        # (9999-12-31, the usual "no end") would wrap around silently.
        # A remote object is read by ranges (footer, then the column chunks it needs).
        source = file.local if file.local is not None else file.open()
        return pq.ParquetFile(source, coerce_int96_timestamp_unit="us")
    except OSError as error:
        raise SourceError(f"{path}: cannot read as Parquet: {error}") from None
    except pa.ArrowInvalid as error:
        raise SourceError(f"{path}: not a Parquet file: {error}") from None


def parquet_schema(file: DataFile | Path) -> pa.Schema:
    """A Parquet file's arrow schema, as the reader sees it (INT96 in microseconds)."""
    return parquet_file(as_data_file(file)).schema_arrow


def parquet_chunks(
    path: DataFile, source: SourceConfig, columns: list[str] | None, start_row: int
) -> Iterator[Chunk]:
    parquet = parquet_file(path)
    first_group, first_row = _first_row_group(parquet.metadata, start_row)
    groups = list(range(first_group, parquet.metadata.num_row_groups))
    if not groups:
        return
    to_skip = start_row - first_row  # rows of the first kept group that come before start_row
    number = first_row
    try:
        batches = parquet.iter_batches(
            batch_size=source.chunk_rows, row_groups=groups, columns=columns
        )
        for batch in batches:
            if to_skip:
                skipped = min(to_skip, batch.num_rows)
                batch = batch.slice(skipped)
                number += skipped
                to_skip -= skipped
            if batch.num_rows == 0:
                continue
            # ArrowDtype keeps every native type without loss (int64 with nulls stays int).
            frame = batch.to_pandas(types_mapper=pd.ArrowDtype)
            frame.index = pd.RangeIndex(number, number + batch.num_rows)
            number += batch.num_rows
            yield Chunk(source=str(path), frame=frame)
    except (OSError, pa.ArrowException) as error:
        raise SourceError(
            f"{path}: cannot read Parquet after data row {number - 1}: {error}"
        ) from None


def _first_row_group(metadata: pq.FileMetaData, start_row: int) -> tuple[int, int]:
    """(index of the row group holding `start_row`, data row number of its first row)."""
    first_row = 1
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        if first_row + rows > start_row:
            return group, first_row
        first_row += rows
    return metadata.num_row_groups, first_row
