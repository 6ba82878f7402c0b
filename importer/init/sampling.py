"""Finding the input's files and reading a sample of rows across them, as the job will."""

from __future__ import annotations

import codecs
import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from importer import sources
from importer.config import CsvOptions, SourceConfig
from importer.init.inference import guess_text_column
from importer.init.model import Sample, ScaffoldError
from importer.sources import DataFile, SourceError, SourceFormat

SAMPLE_ROWS = 1_000
CSV_DELIMITERS = (",", ";", "\t", "|")

# Parts sampled at most, spread evenly over the input: a column added in later parts, or a
# partition whose values differ, is seen without reading every part.
SAMPLE_FILES = 20
# Cells that mean "missing" in warehouse exports: Snowflake, Hive, MySQL and Postgres COPY
# write \N; Snowflake and Postgres can write NULL.
NULL_TOKENS = ("\\N", "NULL")


def input_files(input_path: str) -> tuple[list[DataFile], SourceFormat]:
    """The data files a path, directory or glob names (sorted), found as the job will find
    them (`sources.discover`), and the source.format the job needs for that: auto, or csv
    for a directory of text files (.txt, .tsv) that only an explicit csv format reads."""
    remote = sources.is_remote(input_path)
    try:
        return sources.discover(input_path, SourceFormat.AUTO), SourceFormat.AUTO
    except SourceError as error:
        if remote or Path(input_path).expanduser().is_dir():
            try:
                return sources.discover(input_path, SourceFormat.CSV), SourceFormat.CSV
            except SourceError:
                pass
        if (
            not remote
            and not Path(input_path).expanduser().exists()
            and not glob.has_magic(input_path)
        ):
            raise ScaffoldError(f"{input_path}: no such file or directory") from None
        raise ScaffoldError(str(error)) from None


def _is_parquet(file: DataFile) -> bool:
    try:
        return sources.format_of(file, SourceFormat.AUTO) == SourceFormat.PARQUET
    except SourceError:
        return file.content == SourceFormat.PARQUET


@dataclass
class Dialect:
    """How a CSV export is written, as its first bytes show."""

    delimiter: str = ","
    escapechar: str | None = None
    encoding: str = "utf-8"


def _sniff_dialect(files: list[DataFile]) -> Dialect:
    """The dialect of the first file with text (empty parts are common)."""
    head = b""
    for file in files[:SAMPLE_FILES]:
        try:
            head = sources.head_bytes(file, SourceConfig(format=SourceFormat.CSV))
        except SourceError:
            continue
        if head.strip():
            break
    encoding = _encoding_of(head)
    text = head.decode(encoding, errors="replace")
    lines = text.splitlines()
    first_line = lines[0] if lines else ""
    delimiter = max(CSV_DELIMITERS, key=first_line.count)
    body = "\n".join(lines[1:-1] if len(head) >= (1 << 16) else lines[1:])
    # Redshift's UNLOAD ... ESCAPE writes a delimiter inside a value as \| (and \\ for \).
    escaped = re.search(re.escape("\\" + delimiter) + "|" + re.escape('\\"'), body)
    return Dialect(delimiter, "\\" if escaped else None, encoding)


def _encoding_of(head: bytes) -> str:
    """utf-8 when it reads the bytes; else utf-16 (with its BOM, as Excel writes it), else
    cp1252 (Windows' Western European: what a non-UTF-8 export most often is), else latin-1."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        # Not final: the sample may end inside a multi-byte character.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        head.decode("cp1252")
    except UnicodeDecodeError:
        return "latin-1"
    return "cp1252"


def _spread(files: list[DataFile], most: int) -> list[DataFile]:
    if len(files) <= most:
        return files
    step = (len(files) - 1) / (most - 1)
    return [files[round(i * step)] for i in range(most)]


def _read_sample(file: DataFile, source: SourceConfig, rows: int) -> tuple[list[str], Any]:
    columns = [str(c) for c in sources.read_columns(file, source)]
    chunk = next(sources.iter_chunks(file, source.model_copy(update={"chunk_rows": rows})), None)
    return columns, chunk


def _column_values(
    cells: Any, column: str, unreadable: dict[str, str]
) -> tuple[list[Any], pa.DataType | None]:
    """A sampled column's values as Python objects, and its arrow type. Values Python cannot
    hold (a Spark INT96 timestamp beyond year 9999, also inside a struct) leave the column's
    values missing and its reason in `unreadable`; the reason never shows a cell's value."""
    try:
        array = pa.array(cells)
    except (pa.ArrowException, OverflowError, ValueError, TypeError) as error:
        unreadable.setdefault(column, f"its values cannot be read ({type(error).__name__})")
        return [None] * len(cells), None
    try:
        return array.to_pylist(), array.type
    except OverflowError:
        spark = " (as Spark writes INT96 timestamps)" if pa.types.is_timestamp(array.type) else ""
        reason = (
            f"it holds {array.type} values outside the years 1-9999{spark}, which Python"
            " cannot read"
        )
    except (pa.ArrowException, ValueError, TypeError) as error:
        reason = f"its {array.type} values cannot be read ({type(error).__name__})"
    unreadable.setdefault(column, reason)
    return [None] * len(array), array.type


def _sample_kind(files: list[DataFile], kind: SourceFormat) -> Sample | None:
    """Rows read across `files` (all CSV or all Parquet) by the importer's own readers: text
    exactly as the job will read it (only empty cells are missing, 00123 stays 00123)."""
    dialect = _sniff_dialect(files) if kind == SourceFormat.CSV else Dialect()
    csv_options: dict[str, Any] = {"delimiter": dialect.delimiter, "encoding": dialect.encoding}
    if dialect.escapechar:
        csv_options["escapechar"] = dialect.escapechar
    source = SourceConfig(
        format=kind,
        csv=CsvOptions.model_validate(csv_options),
        chunk_rows=SAMPLE_ROWS,
    )
    picked = [f for f in _spread(files, SAMPLE_FILES) if not sources.is_empty(f, source)]
    if not picked:
        return None
    per_file = max(SAMPLE_ROWS // len(picked), 1)
    columns: dict[str, None] = {}
    values: dict[str, list[Any]] = {}
    types: dict[str, pa.DataType] = {}
    malformed: list[str] = []
    unreadable: dict[str, str] = {}
    for file in picked:
        names, chunk = _read_sample(file, source, per_file)
        columns.update(dict.fromkeys(names))
        if kind == SourceFormat.PARQUET:
            for schema_field in sources.parquet_schema(file):
                types.setdefault(schema_field.name, schema_field.type)
        if chunk is None:
            continue
        malformed += [f"{file} line {m.first_line}" for m in chunk.malformed]
        for column in names:
            cells, array_type = _column_values(chunk.frame[column], column, unreadable)
            values.setdefault(column, []).extend(cells)
            if array_type is not None and (column not in types or pa.types.is_null(types[column])):
                types[column] = array_type
    shown: Path | str = picked[0].local or str(picked[0])
    sample = Sample(
        shown,
        kind,
        list(columns),
        {c: values.get(c, []) for c in columns},
        arrow_types=types if kind == SourceFormat.PARQUET else {},
        delimiter=dialect.delimiter,
        escapechar=dialect.escapechar,
        encoding=dialect.encoding,
        files=len(picked),
        malformed=malformed,
        unreadable=unreadable,
    )
    if kind == SourceFormat.CSV:
        _find_null_tokens(sample)
    if dialect.encoding in ("cp1252", "latin-1"):
        sample.notes.append(
            f"the text is not UTF-8: read as {dialect.encoding} (Western European); set "
            "source.csv.encoding if the export used another code page"
        )
    return sample


def _find_null_tokens(sample: Sample) -> None:
    """Add \\N / NULL to the sample's null values where a column shows them, and clear them
    from the values so the types are guessed from the real data."""
    seen: dict[str, list[str]] = {}
    for column, cells in sample.values.items():
        present = [c for c in cells if c is not None]
        for token in NULL_TOKENS:
            if token not in present:
                continue
            rest = [c for c in present if c != token]
            # \N is never data; NULL only where the rest of the column is not text.
            if token == "NULL" and rest and guess_text_column(column, rest).type == "string":
                continue
            seen.setdefault(token, []).append(column)
    for token, columns in seen.items():
        sample.null_values.append(token)
        for column in columns:
            sample.values[column] = [None if c == token else c for c in sample.values[column]]
        sample.notes.append(
            f"{token} is read as missing in every column (seen in {', '.join(columns[:5])}"
            f"{', ...' if len(columns) > 5 else ''})"
        )
    if sample.escapechar and "\\N" not in seen:
        sample.notes.append(
            "backslash escapes found (\\| for a | in a value): escapechar set; a \\N cell then "
            "reads as N, so if the export writes nulls as \\N, unload it with NULL AS ''"
        )


def sample_input(input_path: str) -> list[Sample]:
    """Rows sampled across the files of each format (CSV, Parquet) the input names."""
    files, _format = input_files(input_path)
    by_kind: dict[SourceFormat, list[DataFile]] = {}
    for file in files:
        kind = SourceFormat.PARQUET if _is_parquet(file) else SourceFormat.CSV
        by_kind.setdefault(kind, []).append(file)
    samples: list[Sample] = []
    for kind, found in by_kind.items():
        try:
            sample = _sample_kind(found, kind)
        except SourceError as error:
            raise ScaffoldError(str(error)) from None
        except (OSError, ValueError, UnicodeDecodeError, pa.ArrowException) as error:
            raise ScaffoldError(f"{found[0]}: cannot read a sample: {error}") from None
        if sample is not None:
            samples.append(sample)
    if not samples:
        what = f"{files[0]} is" if len(files) == 1 else f"all {len(files)} files are"
        raise ScaffoldError(
            f"{what} empty (not even a header row): nothing to build a job from; "
            "point init at a file with a header and some rows"
        )
    return samples


def source_format(input_path: str, samples: Sequence[Sample]) -> SourceFormat:
    """What source.format the job needs: auto when names or contents tell, else csv / parquet."""
    files, fmt = input_files(input_path)
    if fmt != SourceFormat.AUTO:
        return fmt
    for file in files:
        try:
            sources.format_of(file, SourceFormat.AUTO)
        except SourceError:
            return samples[0].kind if samples else SourceFormat.CSV
    return SourceFormat.AUTO
