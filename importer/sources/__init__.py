"""The input edge: local and object-storage files, CSV / Parquet readers, partitions -> chunks.

`datafile` says what one input file is (`DataFile`: its format, codec and Hive `key=value`
partitions); `files` finds the data files a path names (a file, a directory searched
recursively, a glob, an s3:// prefix) and fingerprints them; `objectstore` lists and streams
s3:// objects; `columns` reads their columns; `readers` turns one file into numbered chunks of
rows, through `csv_reader` (with `csvrecords`, `csv_chunks`, `csv_text`, `compression`) or
`parquet`. `record_of` lives in `importer.rows`, the core every stage shares.
"""

from importer.config import SourceFormat
from importer.rows import Malformed, record_of
from importer.sources.columns import (
    check_mapped_columns,
    file_columns,
    is_empty,
    read_columns,
    union_columns,
)
from importer.sources.csv_reader import EmptyFile, head_bytes
from importer.sources.datafile import (
    CSV_SUFFIXES,
    PARQUET_SUFFIXES,
    TEXT_SUFFIXES,
    DataFile,
    SourceError,
    as_data_file,
    format_of,
    is_remote,
    local_file,
)
from importer.sources.files import discover, fingerprint
from importer.sources.parquet import parquet_schema
from importer.sources.readers import count_rows, iter_chunks

__all__ = [
    "CSV_SUFFIXES",
    "PARQUET_SUFFIXES",
    "TEXT_SUFFIXES",
    "DataFile",
    "EmptyFile",
    "Malformed",
    "SourceError",
    "SourceFormat",
    "as_data_file",
    "check_mapped_columns",
    "count_rows",
    "discover",
    "file_columns",
    "fingerprint",
    "format_of",
    "head_bytes",
    "is_empty",
    "is_remote",
    "iter_chunks",
    "local_file",
    "parquet_schema",
    "read_columns",
    "record_of",
    "union_columns",
]
