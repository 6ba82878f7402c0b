"""`moe-import init`: a commented job file for an input, with types guessed from a sample."""

from __future__ import annotations

import codecs
import glob
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from importer import moengage, sources
from importer.config import (
    ConfigError,
    CsvOptions,
    OutputConfig,
    SourceConfig,
    attribute_name_problem,
)
from importer.mapping import parse_export_datetime
from importer.moengage import catalogue
from importer.sources import DataFile, SourceError, SourceFormat

SAMPLE_ROWS = 1_000
# A typed column may hold this share of values that do not parse; those rows get dead-lettered.
BAD_VALUE_SHARE = 0.01
CSV_DELIMITERS = (",", ";", "\t", "|")

# Column names that usually hold the customer id, best first (compared without case or _).
CUSTOMER_ID_NAMES = (
    "customerid",
    "userid",
    "uid",
    "externalid",
    "memberid",
    "accountid",
    "clientid",
    "id",
    "email",
    "emailaddress",
)
# Name parts that mark identifiers and codes: numbers there are labels, so they stay text.
_IDENTIFIER_PARTS = frozenset(
    {"id", "ids", "uid", "uuid", "guid", "code", "zip", "zipcode", "postcode", "postal", "phone"}
    | {"mobile", "msisdn", "tel", "telephone", "sku", "ean", "upc", "iban"}
)
_FLAG_PREFIXES = ("is_", "has_", "can_", "was_", "opt_in", "optin", "allow")
_LIST_NAME_PARTS = frozenset({"tags", "interests", "categories", "labels", "segments", "list"})
_ARRAY_SEPARATORS = ("|", ";")

# The boolean spellings a `boolean` column accepts (any case; docs/REFERENCE.md).
_BOOLEAN_TOKENS = frozenset({"true", "false", "t", "f", "yes", "no", "1", "0"})
_INTEGER = re.compile(r"-?(0|[1-9][0-9]{0,14})")  # no leading zeros, no "+", fits a double
_NUMBER = re.compile(r"-?(0|[1-9][0-9]{0,14})(\.[0-9]+)?([eE][-+]?[0-9]+)?|-?\.[0-9]+")
# A leading zero or plus sign marks a code or a phone number, whatever the other cells hold.
_CODE_LIKE = re.compile(r"[+]|-?0[0-9]")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)?"
)
_HAS_OFFSET = re.compile(r"(Z|[+-]\d{2}(:?\d{2})?)$")
# Other layouts exports use; day-first comes before month-first (most of the world).
_DATE_FORMATS = ("%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d", "%d-%m-%Y")
_DATETIME_FORMATS = tuple(f"{f} %H:%M:%S" for f in _DATE_FORMATS) + tuple(
    f"{f} %H:%M" for f in _DATE_FORMATS
)


class ScaffoldError(ConfigError):
    """The input cannot be scaffolded (missing, unreadable, no data files).

    A ConfigError, so the CLI reports it as bad usage (exit 2) like any job problem.
    """


@dataclass
class Guess:
    """What one column becomes in the job file, and what a human should check."""

    column: str
    type: str = "string"  # an attribute type, or "platforms", or "skip" (not importable)
    options: dict[str, Any] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)


@dataclass
class Sample:
    """The columns of the input's files of one kind and rows sampled across them (native
    values, None = missing)."""

    path: Path | str
    kind: SourceFormat  # csv | parquet
    columns: list[str]
    values: dict[str, list[Any]]
    arrow_types: dict[str, pa.DataType] = field(default_factory=dict)
    delimiter: str = ","
    escapechar: str | None = None
    encoding: str = "utf-8"
    null_values: list[str] = field(default_factory=lambda: [""])
    files: int = 1  # how many files the rows come from
    malformed: list[str] = field(default_factory=list)  # "file line N", skipped in the sample
    notes: list[str] = field(default_factory=list)  # for the source section


# Parts sampled at most, spread evenly over the input: a column added in later parts, or a
# partition whose values differ, is seen without reading every part.
SAMPLE_FILES = 20
# Cells that mean "missing" in warehouse exports: Snowflake, Hive, MySQL and Postgres COPY
# write \N; Snowflake and Postgres can write NULL.
NULL_TOKENS = ("\\N", "NULL")


# ---------------------------------------------------------------------------------------------
# Finding and sampling the input


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
            array = pa.array(chunk.frame[column])
            values.setdefault(column, []).extend(array.to_pylist())
            if column not in types or pa.types.is_null(types[column]):
                types[column] = array.type
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


# ---------------------------------------------------------------------------------------------
# Guessing types


def _name_parts(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)  # customerId -> customer_Id
    return [p for p in re.split(r"[^a-z0-9]+", spaced.lower()) if p]


def _looks_like_identifier(name: str) -> bool:
    parts = _name_parts(name)
    compact = "".join(parts)
    return bool(_IDENTIFIER_PARTS.intersection(parts)) or compact in CUSTOMER_ID_NAMES


def _looks_like_flag(name: str) -> bool:
    return name.lower().startswith(_FLAG_PREFIXES)


def _bad_count(values: Sequence[Any], ok: Callable[[Any], Any]) -> int | None:
    """How many values fail `ok`, or None once more fail than a typed column may hold."""
    allowed = int(len(values) * BAD_VALUE_SHARE)
    bad = 0
    for value in values:
        if not ok(value):
            bad += 1
            if bad > allowed:  # stop early: most columns fail most guesses at once
                return None
    return bad


def _parses(fmt: str, value: str) -> bool:
    try:
        datetime.strptime(value, fmt)
    except ValueError:
        return False
    return True


def _is_iso_date(value: str) -> bool:
    if not _ISO_DATE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_iso_datetime(value: str) -> bool:
    if not _ISO_DATETIME.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


# The default text forms of warehouse exports that are not strict ISO 8601 (Snowflake's
# "2024-03-01 12:34:56.789 -0800", BigQuery's "2024-03-01 12:34:56.789000 UTC", Redshift's
# "2024-03-01 12:34:56+00"): whatever the importer's own parser reads, so init and run
# can never disagree about a column.
def _is_warehouse_datetime(value: str) -> bool:
    return parse_export_datetime(value.strip()) is not None


def _warehouse_guess(name: str, values: Sequence[str], bad: int) -> Guess:
    checks = _bad_note(bad, len(values), "a datetime")
    if not any(_HAS_OFFSET.search(v) or v.strip().endswith(" UTC") for v in values):
        checks.append("no UTC offset in the values: read as UTC unless you add timezone:")
    return Guess(name, "datetime", checks=checks)


def _bad_note(bad: int, total: int, what: str) -> list[str]:
    if not bad:
        return []
    return [f"{bad} of {total} sampled values do not read as {what}; such rows get dead-lettered"]


def _guess_temporal(name: str, values: Sequence[str]) -> Guess | None:
    total = len(values)
    bad_dates = _bad_count(values, _is_iso_date)
    if bad_dates is not None:
        return Guess(name, "date", checks=_bad_note(bad_dates, total, "a date"))
    bad_times = _bad_count(values, lambda v: _is_iso_date(v) or _is_iso_datetime(v))
    if bad_times is not None:
        checks = _bad_note(bad_times, total, "a datetime")
        if not any(_HAS_OFFSET.search(v) for v in values):
            checks.append("no UTC offset in the values: read as UTC unless you add timezone:")
        return Guess(name, "datetime", checks=checks)
    bad_warehouse = _bad_count(values, lambda v: _is_iso_date(v) or _is_warehouse_datetime(v))
    if bad_warehouse is not None:
        return _warehouse_guess(name, values, bad_warehouse)
    for kind, formats in (("date", _DATE_FORMATS), ("datetime", _DATETIME_FORMATS)):
        for fmt in formats:
            bad = _bad_count(values, partial(_parses, fmt))
            if bad is not None:
                checks = [
                    f"read with format {fmt}; make sure day and month are the right way round"
                ]
                if kind == "datetime":
                    checks.append(
                        "no UTC offset in the values: read as UTC unless you add timezone:"
                    )
                return Guess(
                    name, kind, {"format": fmt}, checks + _bad_note(bad, total, f"a {kind}")
                )
    return None


def _item_type(items: Sequence[str]) -> str:
    if items and all(_INTEGER.fullmatch(i) for i in items):
        return "integer"
    if items and all(_NUMBER.fullmatch(i) for i in items):
        return "number"
    return "string"


def _guess_text_array(name: str, values: Sequence[str], delimiter: str = ",") -> Guess | None:
    # The file's own delimiter inside a value was escaped or quoted: text, not a list.
    separators = [s for s in _ARRAY_SEPARATORS if s != delimiter]
    if _LIST_NAME_PARTS.intersection(_name_parts(name)):
        separators.append(",")
    for separator in separators:
        holding = sum(1 for v in values if separator in v)
        # A separator in a good share of cells, and short items: a list, not prose.
        if holding * 5 < len(values):
            continue
        items = [i.strip() for v in values for i in v.split(separator)]
        if max(map(len, items), default=0) > moengage.MAX_ARRAY_ITEM_LENGTH:
            continue
        options: dict[str, Any] = {"separator": separator}
        if (item_type := _item_type(items)) != "string":
            options["items"] = item_type
        checks = []
        longest = max(len(v.split(separator)) for v in values)
        if longest > moengage.MAX_ARRAY_ITEMS:
            checks.append(
                f"a sampled cell has {longest} items; MoEngage takes at most"
                f" {moengage.MAX_ARRAY_ITEMS}, so such rows will be dead-lettered"
            )
        return Guess(name, "array", options, checks)
    return None


def _guess_boolean(name: str, values: Sequence[str]) -> Guess | None:
    tokens = {v.strip().lower() for v in values}
    bad = _bad_count(values, lambda v: v.strip().lower() in _BOOLEAN_TOKENS)
    if bad is None:
        return None
    if tokens <= {"0", "1"} and not _looks_like_flag(name):
        return None  # 0/1 alone is as likely a count as a flag; the integer guess says so
    return Guess(name, "boolean", checks=_bad_note(bad, len(values), "a boolean"))


def _guess_number(name: str, values: Sequence[str]) -> Guess | None:
    if any(_CODE_LIKE.match(v) for v in values):
        return None
    total = len(values)
    bad_integers = _bad_count(values, _INTEGER.fullmatch)
    if bad_integers is not None:
        checks = _bad_note(bad_integers, total, "an integer")
        if {v.strip() for v in values} <= {"0", "1"}:
            checks.append("only 0 and 1 seen: make it type: boolean if it is a flag")
        return Guess(name, "integer", checks=checks)
    bad_numbers = _bad_count(values, _NUMBER.fullmatch)
    if bad_numbers is not None:
        return Guess(name, "number", checks=_bad_note(bad_numbers, total, "a number"))
    return None


def _string_checks(values: Sequence[str]) -> list[str]:
    longest = max(map(len, values), default=0)
    if longest > moengage.MAX_STRING_LENGTH:
        return [
            f"a sampled value has {longest} characters; MoEngage takes at most"
            f" {moengage.MAX_STRING_LENGTH}, so such rows will be dead-lettered"
        ]
    return []


# A year of four digits at one end: 2024-01-15, 2024/2/3, 03.04.2024 (not a version 1.2.3).
_DATE_LIKE = re.compile(
    r"[0-9]{4}[-/.][0-9]{1,2}[-/.][0-9]{1,2}|[0-9]{1,2}[-/.][0-9]{1,2}[-/.][0-9]{4}"
)


def _text_numbers_note(values: Sequence[str]) -> list[str]:
    if values and all(_DATE_LIKE.fullmatch(v.strip()) for v in values):
        return [
            "looks like dates in more than one form, kept as text: if the export has one"
            " form, set type: date and its format:"
        ]
    if values and all(re.fullmatch(r"\+?[0-9][0-9 ()./-]*", v) for v in values):
        return ["digits, kept as text: leading zeros and + signs are part of the value"]
    return []


def _mostly_numbers_note(values: Sequence[str]) -> list[str]:
    """Text with too many non-numbers to guess a number type, but mostly numbers: say so,
    since type: integer / number would send numbers and dead-letter the rest."""
    for what, pattern in (("an integer", _INTEGER), ("a number", _NUMBER)):
        fit = sum(1 for v in values if pattern.fullmatch(v.strip()))
        if fit * 2 >= len(values) and fit < len(values):
            kind = "integer" if pattern is _INTEGER else "number"
            return [
                f"{fit} of {len(values)} sampled values read as {what}, kept as text: set"
                f" type: {kind} to send numbers (the other rows get dead-lettered)"
            ]
    return []


def guess_text_column(name: str, values: Sequence[Any], delimiter: str = ",") -> Guess:
    """The attribute type for a column of text cells (CSV, or Parquet strings)."""
    present = [str(v) for v in values if v is not None]
    if not present:
        return Guess(name, checks=["no values in the sample; guessed string"])
    if _looks_like_identifier(name):
        return Guess(name, checks=_text_numbers_note(present) + _string_checks(present))
    for guesser in (_guess_boolean, _guess_number, _guess_temporal):
        guess = guesser(name, present)
        if guess is not None:
            return guess
    guess = _guess_text_array(name, present, delimiter)
    if guess is not None:
        return guess
    checks = _text_numbers_note(present) or _mostly_numbers_note(present)
    return Guess(name, checks=checks + _string_checks(present))


def _list_item_type(item_type: pa.DataType) -> str | None:
    if pa.types.is_integer(item_type):
        return "integer"
    if pa.types.is_floating(item_type) or pa.types.is_decimal(item_type):
        return "number"
    if pa.types.is_string(item_type) or pa.types.is_large_string(item_type):
        return "string"
    return None


def _guess_list_column(name: str, arrow_type: pa.DataType, values: Sequence[Any]) -> Guess:
    items = _list_item_type(arrow_type.value_type)
    if items is None:
        return Guess(
            name, "skip", checks=[f"a list of {arrow_type.value_type}: not a MoEngage type"]
        )
    options = {"items": items} if items != "string" else {}
    longest = max((len(v) for v in values if v is not None), default=0)
    checks = []
    if longest > moengage.MAX_ARRAY_ITEMS:
        checks.append(
            f"a sampled cell has {longest} items; MoEngage takes at most"
            f" {moengage.MAX_ARRAY_ITEMS}, so such rows will be dead-lettered"
        )
    return Guess(name, "array", options, checks)


def guess_arrow_column(name: str, arrow_type: pa.DataType, values: Sequence[Any]) -> Guess:
    """The attribute type for a Parquet column, from its native type (text is sniffed)."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return guess_text_column(name, values)
    if pa.types.is_boolean(arrow_type):
        return Guess(name, "boolean")
    if pa.types.is_integer(arrow_type):
        if _looks_like_identifier(name):
            return Guess(name, checks=["numbers in the file, sent as text because it names an id"])
        return Guess(name, "integer")
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return Guess(name, "number")
    if pa.types.is_timestamp(arrow_type):
        checks = [] if arrow_type.tz else ["timestamps without a time zone are read as UTC"]
        return Guess(name, "datetime", checks=checks)
    if pa.types.is_date(arrow_type):
        return Guess(name, "date")
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return _guess_list_column(name, arrow_type, values)
    if pa.types.is_null(arrow_type):
        return Guess(name, checks=["no values in the file; guessed string"])
    return Guess(name, "skip", checks=[f"Parquet type {arrow_type} is not a MoEngage type"])


def _guess_sample_column(sample: Sample, name: str) -> Guess:
    if sample.kind == SourceFormat.PARQUET:
        return guess_arrow_column(
            name, sample.arrow_types.get(name, pa.string()), sample.values[name]
        )
    return guess_text_column(name, sample.values[name], sample.delimiter)


def _merge(first: Guess, second: Guess) -> Guess:
    """One guess for a column seen in a CSV and a Parquet file of the same input."""
    if first.type == second.type:
        options = {**second.options, **first.options}  # a CSV's separator still applies to text
        return Guess(first.column, first.type, options, first.checks + second.checks)
    if {first.type, second.type} == {"integer", "number"}:
        return Guess(first.column, "number", checks=first.checks + second.checks)
    note = f"the files disagree ({first.type} / {second.type}); guessed string"
    return Guess(first.column, checks=[note])


def _platform_cells(values: Sequence[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and _bad_count(present, moengage.PLATFORM_NAMES.__contains__) is not None


def guess_columns(samples: Sequence[Sample]) -> dict[str, Guess]:
    """A guess for every column of the input, in the order the first file has them."""
    guesses: dict[str, Guess] = {}
    for sample in samples:
        for name in sample.columns:
            if _platform_cells(sample.values[name]):
                guess = Guess(name, "platforms")
            else:
                guess = _guess_sample_column(sample, name)
            guesses[name] = _merge(guesses[name], guess) if name in guesses else guess
    return guesses


def guess_customer_id(columns: Sequence[str]) -> str | None:
    """The column most likely to hold customer_id, by name."""
    by_compact = {"".join(_name_parts(c)): c for c in reversed(columns)}
    for candidate in CUSTOMER_ID_NAMES:
        if candidate in by_compact:
            return by_compact[candidate]
    return None


def _placeholder_count(samples: Sequence[Sample], column: str) -> tuple[int, int]:
    values = [v for s in samples if column in s.values for v in s.values[column]]
    refused = sum(
        1
        for v in values
        if v is None
        or not str(v).strip()
        or str(v).strip().lower() in moengage.PLACEHOLDER_CUSTOMER_IDS
    )
    return refused, len(values)


# ---------------------------------------------------------------------------------------------
# Attribute names


def attribute_name_for(column: str, taken: set[str]) -> tuple[str, str | None]:
    """The attribute name for a column, and why it differs from the column (None: it does not).

    A valid column name is kept; any other gets a valid name not in `taken`.
    """
    reason = attribute_name_problem(column)
    if reason is None:
        return column, None
    if column.startswith(moengage.RESERVED_PREFIX):
        name = column[len(moengage.RESERVED_PREFIX) :]
    elif column in moengage.BLOCKED_ATTRIBUTE_NAMES:
        name = f"source{column if column.startswith('_') else '_' + column}"
    elif len(column) > moengage.MAX_ATTRIBUTE_NAME_LENGTH:
        name = column[: moengage.MAX_ATTRIBUTE_NAME_LENGTH]
    else:
        name = f"{column}_value"
    if not name or attribute_name_problem(name) is not None:
        name = "column_value"
    base, suffix = name, 2
    while name in taken:
        name = f"{base[: moengage.MAX_ATTRIBUTE_NAME_LENGTH - 4]}_{suffix}"
        suffix += 1
    return name, reason


# ---------------------------------------------------------------------------------------------
# Writing the job file

COMMENT_COLUMN = 40  # where trailing comments start, so the file reads as two columns
LINE_WIDTH = 100


def _scalar(value: Any) -> str:
    """One YAML scalar, quoted only when YAML needs it."""
    dumped = yaml.safe_dump([value], default_flow_style=True, allow_unicode=True, width=10**6)
    return dumped.strip()[1:-1]


def _flow(mapping: dict[str, Any] | list[Any]) -> str:
    return yaml.safe_dump(
        mapping, default_flow_style=True, allow_unicode=True, sort_keys=False, width=10**6
    ).strip()


def _line(text: str, comment: str = "") -> str:
    if not comment:
        return text
    return f"{text.ljust(COMMENT_COLUMN - 1)} # {comment}"


def _checks(indent: str, notes: Iterable[str]) -> list[str]:
    lines = []
    for note in dict.fromkeys(notes):  # a column seen in two files may repeat a note
        width = LINE_WIDTH - len(indent) - len("# check: ")
        wrapped = textwrap.wrap(note, width) or [""]
        lines.append(f"{indent}# check: {wrapped[0]}")
        lines += [f"{indent}#        {rest}" for rest in wrapped[1:]]
    return lines


def _sample_rows(sample: Sample) -> int:
    return len(next(iter(sample.values.values()), []))


def _described(sample: Sample) -> str:
    if sample.files == 1:
        return f"{sample.path} ({_sample_rows(sample)} rows)"
    return f"{sample.files} {sample.kind} files ({_sample_rows(sample)} rows, first {sample.path})"


def _header(input_path: str, samples: Sequence[Sample]) -> list[str]:
    read = ", ".join(_described(s) for s in samples)
    lines = [
        f"# moe-import job for {input_path}, written by `moe-import init`.",
        *(f"# {t}" for t in textwrap.wrap(f"Types guessed from the first rows of {read}.", 96)),
    ]
    malformed = [m for s in samples for m in s.malformed]
    if malformed:
        shown = ", ".join(malformed[:5]) + (", ..." if len(malformed) > 5 else "")
        note = (
            f"{len(malformed)} malformed record(s) left out of the sample ({shown}); `run` puts "
            "such records in the dead-letter file with their full text."
        )
        lines += [f"# {t}" for t in textwrap.wrap(note, 96)]
    return [
        *lines,
        "# Review every '# check:' line, then try the job with `moe-import validate`.",
        "",
    ]


def _api_lines() -> list[str]:
    return [
        "api:",
        _line('  data_center: "01"', "01-06 or 101, as in your dashboard's URL"),
        _line("  # base_url: http://127.0.0.1:8377", "wins over data_center (sandbox, proxy)"),
        _line("  workspace_id: ${MOENGAGE_WORKSPACE_ID}", "Settings > Account > APIs"),
        _line("  api_key: ${MOENGAGE_API_KEY}", "the Data API key: keep it in the environment"),
        _line("  # project_code: ...", "Portfolio workspaces only"),
        _line("  endpoint: bulk", "bulk = /v1/transition; customer = one user a call"),
        "",
        "rate_limit:",
        _line(f"  updates: {moengage.DEFAULT_RATE_UPDATES}", "per period, retries included"),
        _line(
            f"  period_seconds: {moengage.DEFAULT_RATE_PERIOD_SECONDS:g}", "support can raise it"
        ),
        "",
    ]


def _source_lines(input_path: str, samples: Sequence[Sample], fmt: SourceFormat) -> list[str]:
    null_values = list(dict.fromkeys(v for s in samples for v in s.null_values))
    lines = [
        "source:",
        *_checks("  ", [note for s in samples for note in s.notes]),
        _line(
            f"  path: {_scalar(input_path)}",
            "file, directory, glob or s3://",
        ),
        _line(f"  format: {fmt}", "auto | csv | parquet"),
        _line(f"  null_values: {_flow(null_values)}", "only these cells are missing: NA is data"),
    ]
    if sources.is_remote(input_path):
        lines.append(
            _line(
                "  # storage: {endpoint_url: null, region: null, anonymous: false}",
                "S3-compatible stores",
            )
        )
    csv_samples = [s for s in samples if s.kind == SourceFormat.CSV]
    options: dict[str, Any] = {}
    if csv_samples and csv_samples[0].delimiter != ",":
        options["delimiter"] = csv_samples[0].delimiter
    if csv_samples and csv_samples[0].escapechar:
        options["escapechar"] = csv_samples[0].escapechar
    if csv_samples and csv_samples[0].encoding != "utf-8":
        options["encoding"] = csv_samples[0].encoding
    if options:
        lines.append(f"  csv: {_flow(options)}")
    return [*lines, ""]


def _customer_id_lines(samples: Sequence[Sample], customer_id: str | None) -> list[str]:
    if customer_id is None:
        note = (
            "no customer id column recognised: name the column holding customer_id, or, in an"
            " Identity Resolution workspace, keep null and map the identifier attributes"
            " (e.g. moe_email, moe_mobile) and list them under identifiers"
        )
        return [*_checks("  ", [note]), "  customer_id: null"]
    lines = [_line(f"  customer_id: {_scalar(customer_id)}", "read as text exactly as written")]
    refused, total = _placeholder_count(samples, customer_id)
    if refused:
        note = (
            f"{refused} of {total} sampled rows have an empty or placeholder customer_id"
            " (guest, null, 0, ...); MoEngage refuses them, so they will be dead-lettered"
        )
        lines = _checks("  ", [note]) + lines
    return lines


def _attribute_spec(guess: Guess) -> str:
    if guess.type == "string" and not guess.options:
        return _scalar(guess.column)  # a bare column name is a string attribute
    return _flow({"column": guess.column, "type": guess.type, **guess.options})


def _attribute_lines(
    guesses: dict[str, Guess], customer_id: str | None, platforms: str | None
) -> list[str]:
    """The attributes block (the platforms column, if any, is mapped apart)."""
    lines = [_line("  attributes:", "MoEngage attribute: column, or {column, type, ...}")]
    # Columns whose names are valid keep them; renamed ones must not take those.
    taken = {column for column in guesses if attribute_name_problem(column) is None}
    custom = 0
    for guess in guesses.values():
        if guess.column in (customer_id, platforms):
            continue
        if guess.type == "platforms":
            note = f"platform names too; mapping.platforms reads {platforms!r}"
            guess = Guess(guess.column, checks=[*guess.checks, note])
        lines += _checks("    ", guess.checks)
        if guess.type == "skip":
            lines.append(f"    # {_scalar(guess.column)}: skipped, not importable as it is")
            continue
        name, renamed = attribute_name_for(guess.column, taken)
        standard = catalogue.propose_for_column(guess.column, guess.type, taken)
        if standard is not None:
            name, renamed = standard[0], None
        taken.add(name)
        if renamed:
            lines += _checks("    ", [f"renamed from column {guess.column!r}: {renamed}"])
        custom += name not in moengage.SYSTEM_ATTRIBUTES
        entry = f"{_scalar(name)}: {_attribute_spec(guess)}"
        if custom > moengage.MAX_CUSTOM_ATTRIBUTES:
            limit = f"over MoEngage's limit of {moengage.MAX_CUSTOM_ATTRIBUTES} custom attributes"
            lines.append(_line(f"    # {entry}", limit))
            continue
        lines.append(_line(f"    {entry}", standard[1] if standard else ""))
    if len(lines) == 1:
        lines[0] = "  attributes: {}"
    return lines


def _mapping_lines(guess: JobGuess) -> list[str]:
    samples, guesses, customer_id = guess.samples, guess.columns, guess.customer_id
    platforms = guess.platforms
    attributes = _attribute_lines(guesses, customer_id, platforms)
    if platforms is not None:
        platform_line = _line(f"  platforms: {_flow({'column': platforms})}", "ANDROID, iOS, web")
    else:
        platform_line = _line("  # platforms: {column: platform}", "or a list: [ANDROID, web]")
    return [
        "mapping:",
        *_customer_id_lines(samples, customer_id),
        _line("  update_existing_only: false", "true: only update users MoEngage knows"),
        *attributes,
        _line("  # add_to_array:", "-> attributes.addValueToArrayField"),
        '  #   tags: {column: new_tags, separator: "|"}',
        _line("  # remove_from_array:", "-> attributes.removeValueFromArrayField"),
        platform_line,
        _line("  identifiers: []", "Identity Resolution, with customer_id null"),
        "",
    ]


def _output_lines(input_path: str) -> list[str]:
    defaults = OutputConfig()
    # Name the output folder after the input, up to the first glob pattern in its path.
    fixed = [part for part in Path(input_path).parts if not glob.has_magic(part)]
    stem = (Path(*fixed).name if fixed else "").split(".")[0] or "job"
    folder = defaults.dead_letter.parent / re.sub(r"[^A-Za-z0-9_-]+", "_", stem)
    return [
        "output:",
        _line(
            f"  dead_letter: {_scalar(str(folder / defaults.dead_letter.name))}",
            "rows not imported and why (personal data)",
        ),
        # No state line: by default the progress file is named after the job file (e.g.
        # nightly.yaml -> nightly.state.db beside the dead letters), so two jobs over one
        # input never share progress.
        _line("  # state: JOB.state.db", "progress; named after the job file unless set"),
        _line(f"  report: {_scalar(str(folder / defaults.report.name))}", "the run's counts"),
    ]


@dataclass
class JobGuess:
    """What `init` concluded about an input, before any YAML is written."""

    input_path: str
    samples: list[Sample]
    format: SourceFormat  # source.format
    columns: dict[str, Guess]
    customer_id: str | None
    platforms: str | None  # the column mapping.platforms reads


def guess_job(input_path: str) -> JobGuess:
    """Find and sample the input as the job will read it, and guess the mapping (raises
    ScaffoldError). Nothing here writes YAML: `render_job` does."""
    samples = sample_input(input_path)
    columns = guess_columns(samples)
    customer_id = guess_customer_id(list(columns))
    platforms = next(
        (g.column for g in columns.values() if g.type == "platforms" and g.column != customer_id),
        None,
    )
    fmt = source_format(input_path, samples)
    return JobGuess(input_path, samples, fmt, columns, customer_id, platforms)


def render_job(guess: JobGuess) -> str:
    """The commented YAML job file for a guess."""
    lines = [
        *_header(guess.input_path, guess.samples),
        *_api_lines(),
        *_source_lines(guess.input_path, guess.samples, guess.format),
        *_mapping_lines(guess),
        _line(
            "sync: {mode: changed}", "send only rows changed since last accepted; all: every row"
        ),
        *_output_lines(guess.input_path),
    ]
    return "\n".join(lines) + "\n"


def scaffold_job(input_path: str, events: bool = False) -> str:
    """A commented YAML job file for the input, ready for review (raises ScaffoldError).

    An events job when `events` asks for one, or when the input has an event-name and a
    timestamp column (see event_scaffold)."""
    from importer.init import events as event_scaffold

    guess = guess_job(input_path)
    found = event_scaffold.event_columns(guess)
    if events or found is not None:
        return event_scaffold.render_events_job(guess, found)
    return render_job(guess)
