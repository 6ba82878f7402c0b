"""Reading a Parquet file: its schema, and its rows by record batch as numbered chunks.

Page checksums (CRC32) are verified wherever the writer stored them: a page whose bytes do not
match is never decoded, and the read stops naming the file and the column (a SourceError). Spark's
INT96 timestamps are read in milliseconds: that unit holds every INT96 value (years up to
several million), so an out-of-range one is refused with its true date, never a wrapped one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from importer.config import SourceConfig
from importer.rows import Chunk, RowFilter
from importer.sources.datafile import DataFile, SourceError, as_data_file, encrypted_parquet

# What arrow says when a file is no Parquet at all (as opposed to a Parquet file it cannot
# make sense of: a schema error, a corrupt page).
_NOT_PARQUET = ("magic bytes", "file size is", "footer")
_CHECKSUM = "checksum"


def parquet_file(file: DataFile) -> pq.ParquetFile:
    path = file
    try:
        # A remote object is read by ranges (footer, then the column chunks it needs).
        source = file.local if file.local is not None else file.open()
        return pq.ParquetFile(
            source, coerce_int96_timestamp_unit="ms", page_checksum_verification=True
        )
    except OSError as error:
        if "encrypted" in str(error).lower():
            raise SourceError(encrypted_parquet(path)) from None
        raise SourceError(f"{path}: cannot read as Parquet: {error}") from None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        if any(words in str(error) for words in _NOT_PARQUET):
            raise SourceError(f"{path}: not a Parquet file: {error}") from None
        raise SourceError(
            f"{path}: a Parquet file whose schema cannot be read (schema error: {error}); "
            "rewrite it with a current writer (Spark, pyarrow, DuckDB)"
        ) from None


def parquet_schema(file: DataFile | Path) -> pa.Schema:
    """A Parquet file's arrow schema, as the reader sees it (INT96 in milliseconds)."""
    return parquet_file(as_data_file(file)).schema_arrow


def parquet_chunks(
    path: DataFile,
    source: SourceConfig,
    columns: list[str] | None,
    start_row: int,
    row_filter: RowFilter | None = None,
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
            read = batch.num_rows
            index: pd.Index = pd.RangeIndex(number, number + read)
            if row_filter is not None:  # other slices' rows never become a frame
                mine = row_filter.mask(batch.column(row_filter.column))
                if not mine.all():
                    batch, index = batch.filter(pa.array(mine)), index[mine]
            number += read
            # ArrowDtype keeps every native type without loss (int64 with nulls stays int).
            frame = batch.to_pandas(types_mapper=pd.ArrowDtype)
            frame.index = index
            yield Chunk(source=str(path), frame=frame, other_rows=read - batch.num_rows)
    except (OSError, pa.ArrowException) as error:
        if _CHECKSUM in str(error).lower():
            raise SourceError(_corrupt_page(path, parquet, number, columns)) from None
        raise SourceError(
            f"{path}: cannot read Parquet after data row {number - 1}: {error}"
        ) from None


def _corrupt_page(
    path: DataFile, parquet: pq.ParquetFile, number: int, columns: list[str] | None
) -> str:
    """The refusal of a page whose checksum failed, naming its column(s): each column of the
    row group is read again on its own to find which."""
    group, _first = _first_row_group(parquet.metadata, number)
    names = columns if columns is not None else list(parquet.schema_arrow.names)
    corrupt = []
    for name in names:
        try:
            parquet.read_row_group(group, columns=[name])
        except (OSError, pa.ArrowException):
            corrupt.append(repr(name))
    where = f"column {', '.join(corrupt)}" if corrupt else "a column"
    return (
        f"{path}: a corrupt Parquet page in {where} (row group {group + 1}, after data row "
        f"{number - 1}): its checksum does not match its bytes, so none of its values is sent; "
        "export the file again"
    )


def _first_row_group(metadata: pq.FileMetaData, start_row: int) -> tuple[int, int]:
    """(index of the row group holding `start_row`, data row number of its first row)."""
    first_row = 1
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        if first_row + rows > start_row:
            return group, first_row
        first_row += rows
    return metadata.num_row_groups, first_row
