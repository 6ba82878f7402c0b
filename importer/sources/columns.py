"""The columns of data files: those one file stores or a job sees in it, the union across parts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pyarrow as pa

from importer.config import SourceConfig, SourceFormat
from importer.sources.csv_reader import EmptyFile, header_names
from importer.sources.csv_text import csv_errors
from importer.sources.datafile import DataFile, SourceError, as_data_file, format_of
from importer.sources.parquet import parquet_file


def file_columns(file: DataFile | Path, source: SourceConfig) -> list[str]:
    """The columns stored in the file: the CSV header (only its first record is read) or the
    Parquet schema; a name that appears twice is refused (which one a job means is unknowable)."""
    data = as_data_file(file)
    if format_of(data, source.format) == SourceFormat.PARQUET:
        names = list(parquet_file(data).schema_arrow.names)
    else:
        with csv_errors(data, lambda: 0):
            names = header_names(data, source)
    _refuse_duplicates(data, names)
    return names


def is_empty(file: DataFile | Path, source: SourceConfig) -> bool:
    """Whether the file is a CSV without even a header line (compressed or not)."""
    try:
        file_columns(file, source)
    except EmptyFile:
        return True
    return False


def read_columns(file: DataFile | Path, source: SourceConfig) -> list[str]:
    """The file's columns as a job sees them: those stored in it, then its partition columns
    (Hive `key=value` folders) that the file does not hold itself."""
    data = as_data_file(file)
    names = file_columns(data, source)
    return names + [key for key, _value in data.partitions if key not in names]


def union_columns(files: list[DataFile], source: SourceConfig) -> list[str]:
    """Every column any of the files has, in the order first seen: parts of one export may
    differ (a column added later), and a part lacking a column reads it as empty."""

    def columns_of(file: DataFile) -> list[str] | EmptyFile:
        try:
            return read_columns(file, source)
        except EmptyFile as error:
            return error  # an empty part of an export: no rows, and no columns

    seen: dict[str, None] = {}
    empty: list[EmptyFile] = []
    for found in each_file(columns_of, files):
        if isinstance(found, EmptyFile):
            empty.append(found)
        else:
            seen.update(dict.fromkeys(found))
    if empty and len(empty) == len(files):
        if len(files) == 1:
            raise empty[0]
        raise SourceError(f"all {len(files)} files are empty (not even a header row)")
    return list(seen)


# Objects whose headers or footers are read at once: each read is a round trip to the store,
# and an export of a thousand parts should not wait for them one by one.
REMOTE_READS_AT_ONCE = 16

T = TypeVar("T")


def each_file(read: Callable[[DataFile], T], files: Sequence[DataFile]) -> Iterator[T]:
    """`read` of each file, in order; objects in storage several at a time."""
    if sum(1 for f in files if f.local is None) < 2:
        yield from map(read, files)
        return
    with ThreadPoolExecutor(REMOTE_READS_AT_ONCE, thread_name_prefix="head") as pool:
        yield from pool.map(read, files)


def check_mapped_columns(
    files: Sequence[DataFile], source: SourceConfig, mapped: list[str]
) -> None:
    """Refuse, before anything is sent, mapped columns no converter can read: a header of only
    whitespace (named by its position), a Parquet struct or map column (nested: a list of them
    too). Raises SourceError naming the file and the column."""
    blank = [c for c in mapped if c and not c.strip()]
    problems: list[str] = []

    def problems_of(file: DataFile) -> list[str]:
        try:
            names = file_columns(file, source)
        except EmptyFile:
            return []
        found = [
            f"{file}: column {names.index(c) + 1} has a header of only whitespace ({c!r}); "
            "name it in the export"
            for c in blank
            if c in names
        ]
        if format_of(file, source.format) == SourceFormat.PARQUET:
            schema = parquet_file(file).schema_arrow
            found += [
                f"{file}: column {c!r} is {kind} (nested); moe-import cannot map it: flatten "
                "it in the export (one column per field) or leave it out of the mapping"
                for c in mapped
                if c in names and (kind := nested_kind(schema.field(c).type))
            ]
        return found

    for found in each_file(problems_of, files):
        problems += found
    if problems:
        raise SourceError("\n".join(dict.fromkeys(problems)))


def nested_kind(arrow_type: pa.DataType) -> str:
    """What a nested column is ("a struct", "a map", "a list of structs"), or "" if flat."""
    if pa.types.is_struct(arrow_type):
        return "a struct"
    if pa.types.is_map(arrow_type):
        return "a map"
    if isinstance(arrow_type, pa.ListType | pa.LargeListType | pa.FixedSizeListType):
        inner = nested_kind(arrow_type.value_type)
        return f"a list of {inner.removeprefix('a ')}s" if inner else ""
    return ""


def _refuse_duplicates(file: DataFile, names: list[str]) -> None:
    counts = Counter(names)
    repeated = [name for name, count in counts.items() if count > 1]
    if repeated:
        where = "; ".join(
            f"{name!r} is column {', '.join(str(i + 1) for i, n in enumerate(names) if n == name)}"
            for name in repeated
        )
        raise SourceError(
            f"{file}: the header names a column more than once ({where}): rename them in the "
            "export so each column has its own name"
        )
