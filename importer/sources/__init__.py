"""The input edge: local and object-storage files, CSV / Parquet readers, partitions -> chunks.

`files` finds the data files a path names (a file, a directory searched recursively with
its Hive `key=value` folders, a glob, an s3:// prefix) and fingerprints them; `objectstore`
lists and streams s3:// objects; `readers` turns one file into numbered chunks of rows.
"""

from importer.config import SourceFormat
from importer.rows import Malformed
from importer.sources.files import (
    CSV_SUFFIXES,
    PARQUET_SUFFIXES,
    TEXT_SUFFIXES,
    DataFile,
    SourceError,
    as_data_file,
    discover,
    fingerprint,
    format_of,
    is_remote,
    local_file,
)
from importer.sources.readers import (
    EmptyFile,
    count_rows,
    file_columns,
    head_bytes,
    is_empty,
    iter_chunks,
    parquet_schema,
    read_columns,
    record_of,
    union_columns,
)

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
