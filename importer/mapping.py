"""Compiled column -> attribute converters, vectorized per chunk, and the row rules.

Speed comes from never building per-row dicts for valid rows: each mapped column is converted
once per chunk, with pyarrow compute kernels, into the JSON text of its values (null where the
attribute is omitted) plus the problems found; the element JSON of every row is then joined from
those fragments in arrow too. Per-row Python only wraps the result in a `Row`, whose `element`
is decoded from `encoded` when something asks for it (dead letters, samples). Conversions that
need Python per cell (booleans, arrays, platforms, odd formats) run once per distinct value.

Type rules beyond the contract, chosen to be strict:
- integer: optional sign, digits, and optionally a fraction of zeros ("20", "+20", "20.0" -> 20);
  "2.5", "1e3", "nan" and values outside 64 bits are invalid.
- number: any decimal or exponent text; whole values within 2**53 are sent as integers
  ("20" and "20.0" -> 20, "2.5" -> 2.5); "nan" and "inf" are invalid. A NaN stored in a
  native float column counts as missing.
- datetime: ISO 8601 text (date-only means midnight; "T" or a space before the time); naive
  values are read in `timezone` (default UTC), an ambiguous local time as its first occurrence
  and a nonexistent one (DST gap) as the first instant after the gap; sub-seconds are dropped.
- date: the inputs datetime reads (ISO 8601 text, a `format`, native dates and timestamps); a
  datetime keeps the calendar date as written (its offset is ignored). Sent as midnight UTC,
  YYYY-MM-DDT00:00:00Z, since MoEngage documents dates only as date-times; `as_text` keeps the
  bare YYYY-MM-DD (MoEngage then stores text).
- standard attributes (importer/catalogue.py): a value outside the attribute's enum, or not of
  its shape (an email, a "lat lon" location), breaks a rule.
- array without a separator: text that is a JSON array (`["a","b"]`) is parsed, other text is a
  one-item array.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer import catalogue, moengage
from importer.config import ArrayOpSpec, AttributeSpec, ConfigError, MappingConfig
from importer.rows import Chunk, InvalidRow, MappedChunk, ValidRows

# The JSON text of one mapped column's values (null = omit) and its problems by row position.
Converted = tuple[pa.Array, dict[int, str]]
# Converts one distinct cell value: (value, None) or (None, the rule it broke).
CellConverter = Callable[[Any], tuple[Any, str | None]]

DEFAULT_MAX_ELEMENT_BYTES = (
    moengage.MAX_REQUEST_BYTES - len(moengage.BULK_PREFIX) - len(moengage.BULK_SUFFIX)
)
SHOWN_VALUE_CHARS = 40
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EXACT_FLOAT_LIMIT = 2**53  # whole numbers below this are exact in a double

_BOOLEANS = {
    "true": True, "false": False, "1": True, "0": False, "yes": True, "no": False,
    "t": True, "f": False, "y": True, "n": False,
}  # fmt: skip
_PLATFORMS = {name.lower(): name for name in moengage.PLATFORM_NAMES}
_PLATFORM_SEPARATORS = re.compile(r"[|,]")
_NOT_A_PLATFORM = f"is not a platform ({', '.join(moengage.PLATFORM_NAMES)})"
_PLACEHOLDERS = pa.array(sorted(moengage.PLACEHOLDER_CUSTOMER_IDS | {""}), pa.string())
_INTEGER_TEXT = re.compile(r"[+-]?\d+(?:\.0*)?")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_FULL_DATE_PREFIX = re.compile(r"\d{4}(-\d{1,2}-\d{1,2}|\d{4})(?!\d)")
_NEEDS_ESCAPE = r"[\x00-\x1f\"\\]"  # what JSON must escape inside a string
_NULL_TEXT = pa.scalar(None, pa.string())
MIDNIGHT_UTC = "T00:00:00Z"  # what type date appends to the calendar date


# --- showing values in errors ------------------------------------------------------------


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if len(text) > SHOWN_VALUE_CHARS:
        text = text[: SHOWN_VALUE_CHARS - 1] + "…"
    return repr(text)


def _problem(column: str, value: Any, rule: str) -> str:
    return f"column {column!r}: {_show(value)} {rule}"


# --- arrow helpers -----------------------------------------------------------------------


def _combined(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _text_array(series: pd.Series) -> pa.Array | None:
    """The column as an arrow string array if it holds text (CSV cells, Parquet strings)."""
    dtype = series.dtype
    if isinstance(dtype, pd.ArrowDtype):
        arrow_type = dtype.pyarrow_dtype
        if pa.types.is_dictionary(arrow_type):
            arrow_type = arrow_type.value_type
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            return _combined(pc.cast(pa.array(series), pa.string()))
        return None
    if pd.api.types.is_object_dtype(dtype) or isinstance(dtype, pd.StringDtype):
        try:
            return pa.array(series, type=pa.string(), from_pandas=True)
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            return None  # an object column of Python values, not text
    return None


def _native_array(series: pd.Series) -> pa.Array | None:
    """The column as an arrow array of its native type; None for a mixed object column."""
    if isinstance(series.dtype, pd.ArrowDtype):
        return _combined(pa.array(series))
    try:
        return _combined(pa.array(series, from_pandas=True))
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return None


def _is_list_type(arrow_type: pa.DataType) -> bool:
    return (
        pa.types.is_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
        or pa.types.is_fixed_size_list(arrow_type)
    )


def _is_int64_compatible(arrow_type: pa.DataType) -> bool:
    return pa.types.is_integer(arrow_type) and not pa.types.is_uint64(arrow_type)


def _mask(array: pa.Array) -> np.ndarray:
    """A boolean arrow array as numpy, null counting as False."""
    return np.asarray(array.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _nulls(array: pa.Array) -> np.ndarray:
    return np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _drop(fragments: pa.Array, positions: Iterable[int]) -> pa.Array:
    """The fragments with the values at `positions` omitted."""
    mask = np.zeros(len(fragments), dtype=bool)
    mask[list(positions)] = True
    if not mask.any():
        return fragments
    return pc.if_else(pa.array(mask), _NULL_TEXT, fragments)


def _replace(fragments: pa.Array, replacements: dict[int, str]) -> pa.Array:
    """The fragments with the JSON text at some positions replaced."""
    if not replacements:
        return fragments
    mask = np.zeros(len(fragments), dtype=bool)
    positions = sorted(replacements)
    mask[positions] = True
    texts = pa.array([replacements[p] for p in positions], pa.string())
    return pc.replace_with_mask(fragments, pa.array(mask), texts)


# --- JSON text of values -----------------------------------------------------------------


def _json_strings(text: pa.Array) -> pa.Array:
    """Text as JSON string literals; only cells holding quotes, backslashes or control
    characters go through orjson, the rest are just quoted."""
    quoted = _quoted(text)
    if not _may_need_escape(text):
        return quoted
    needs = _mask(pc.match_substring_regex(text, _NEEDS_ESCAPE))
    escaped = {int(p): orjson.dumps(text[int(p)].as_py()).decode() for p in np.flatnonzero(needs)}
    return _replace(quoted, escaped)


def _json_ints(ints: pa.Array) -> pa.Array:
    return pc.cast(pc.cast(ints, pa.int64()), pa.string())


def _json_values(values: list[Any]) -> pa.Array:
    """Python values (None = omit) as JSON text."""
    dumps = orjson.dumps
    return pa.array([None if v is None else dumps(v).decode() for v in values], pa.string())


def _may_need_escape(text: pa.Array) -> bool:
    """Whether any byte of the column is one JSON escapes: one numpy pass over the data."""
    _, offsets, data = text.buffers()
    if data is None:
        return False
    bounds = np.frombuffer(offsets, dtype=np.int32)[text.offset : text.offset + len(text) + 1]
    raw = np.frombuffer(data, dtype=np.uint8)[bounds[0] : bounds[-1]]
    return bool(np.any((raw < 0x20) | (raw == ord('"')) | (raw == ord("\\"))))


def _wrapped(text: pa.Array, prefix: str, suffix: str) -> pa.Array:
    """prefix + text + suffix, nulls kept (slice replacement is the cheapest concatenation)."""
    end = np.iinfo(np.int32).max
    if suffix:
        text = pc.binary_replace_slice(text, end, end, suffix)
    return pc.binary_replace_slice(text, 0, 0, prefix) if prefix else text


def _quoted(text: pa.Array) -> pa.Array:
    """Text known to need no escaping (dates we formatted) as JSON strings."""
    return _wrapped(text, '"', '"')


# --- per distinct value ------------------------------------------------------------------


def _per_unique(series: pd.Series, column: str, convert: CellConverter) -> Converted:
    """Apply `convert` once per distinct cell and spread the JSON of the results over the rows."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    texts: list[str | None] = []
    broken: dict[int, str] = {}
    for code, cell in enumerate(uniques):
        value, rule = convert(cell)
        texts.append(None if value is None else orjson.dumps(value).decode())
        if rule is not None:
            broken[code] = _problem(column, cell, rule)
    fragments = pa.array(texts, pa.string()).take(pa.array(codes, mask=codes < 0))
    errors: dict[int, str] = {}
    if broken:
        for position in np.flatnonzero(np.isin(codes, list(broken))):
            errors[int(position)] = broken[int(codes[position])]
    return fragments, errors


def _per_cell(cells: list[Any], column: str, convert: CellConverter) -> Converted:
    """For unhashable cells (native lists): `convert` each non-missing cell."""
    values: list[Any] = [None] * len(cells)
    errors: dict[int, str] = {}
    for position, cell in enumerate(cells):
        if cell is None:
            continue
        value, rule = convert(cell)
        if rule is None:
            values[position] = value
        else:
            errors[position] = _problem(column, cell, rule)
    return _json_values(values), errors


def _plain(value: Any) -> Any:
    """A native cell as a plain Python value (numpy scalars unwrapped)."""
    return value.item() if isinstance(value, np.generic) else value


# --- string ------------------------------------------------------------------------------


def _to_string(series: pd.Series, column: str) -> Converted:
    text = _text_array(series)
    if text is None:
        return _per_unique(series, column, _string_cell)
    too_long = _mask(pc.greater(pc.utf8_length(text), moengage.MAX_STRING_LENGTH))
    rule = f"is longer than {moengage.MAX_STRING_LENGTH} characters"
    errors = {
        int(p): _problem(column, text[int(p)].as_py(), rule) for p in np.flatnonzero(too_long)
    }
    return _drop(_json_strings(text), errors), errors


def _string_cell(cell: Any) -> tuple[Any, str | None]:
    cell = _plain(cell)
    if isinstance(cell, bool):
        text = "true" if cell else "false"
    elif isinstance(cell, float) and cell.is_integer():
        text = str(int(cell))
    elif isinstance(cell, dt.datetime | dt.date):
        text = cell.isoformat()
    elif isinstance(cell, str | int | float | Decimal):
        text = str(cell)
    else:
        return None, "is not text"
    if len(text) > moengage.MAX_STRING_LENGTH:
        return None, f"is longer than {moengage.MAX_STRING_LENGTH} characters"
    return text, None


# --- integer -----------------------------------------------------------------------------


def _to_integer(series: pd.Series, column: str) -> Converted:
    text = _text_array(series)
    if text is None:
        native = _native_array(series)
        if native is not None and _is_int64_compatible(native.type):
            return _json_ints(native), {}
        return _per_unique(series, column, _integer_cell)
    try:
        return _json_ints(pc.cast(text, pa.int64())), {}  # every cell plain digits
    except pa.ArrowInvalid:
        pass
    # Drop a leading "+" and a zero fraction; up to 18 digits always fits in int64.
    normal = pc.replace_substring_regex(pc.utf8_trim_whitespace(text), r"^\+|\.0*$", "")
    simple = pc.match_substring_regex(normal, r"^-?\d{1,18}$")
    fragments = _json_ints(pc.cast(pc.if_else(simple, normal, _NULL_TEXT), pa.int64()))
    errors: dict[int, str] = {}
    fixed: dict[int, str] = {}
    for position in np.flatnonzero(~_mask(simple) & ~_nulls(text)):  # rare: per cell
        cell = text[int(position)].as_py()
        value, rule = _integer_cell(cell)
        if rule is None:
            fixed[int(position)] = str(value)
        else:
            errors[int(position)] = _problem(column, cell, rule)
    return _replace(fragments, fixed), errors


def _integer_cell(cell: Any) -> tuple[Any, str | None]:
    cell = _plain(cell)
    value: int | None = None
    if isinstance(cell, bool):
        return None, "is a boolean, not an integer"
    if isinstance(cell, int):
        value = cell
    elif isinstance(cell, float | Decimal):
        if _is_whole(cell):
            value = int(cell)
    elif isinstance(cell, str) and _INTEGER_TEXT.fullmatch(cell.strip()):
        value = int(cell.strip().split(".")[0])
    if value is None:
        return None, "is not an integer"
    if not INT64_MIN <= value <= INT64_MAX:
        return None, "is outside the 64-bit integer range"
    return value, None


def _is_whole(value: float | Decimal) -> bool:
    if isinstance(value, Decimal):
        return value.is_finite() and value == value.to_integral_value()
    return math.isfinite(value) and value.is_integer()


# --- number ------------------------------------------------------------------------------


def _to_number(series: pd.Series, column: str) -> Converted:
    text = _text_array(series)
    if text is None:
        native = _native_array(series)
        if native is not None and _is_int64_compatible(native.type):
            return _json_ints(native), {}
        if native is not None and pa.types.is_floating(native.type):
            floats = pc.cast(native, pa.float64())
            # A stored NaN means missing, as pandas writes it; infinities stay invalid.
            present = ~_nulls(native) & ~_mask(pc.is_nan(floats))
            return _numbers_from_floats(floats, present, lambda p: native[p].as_py(), column)
        return _per_unique(series, column, _number_cell)
    trimmed = pc.utf8_trim_whitespace(text)
    try:
        floats = pc.cast(trimmed, pa.float64())
    except pa.ArrowInvalid:
        # Some cell is not a number: cast only those that look like one, the rest are invalid.
        looks = pc.match_substring_regex(trimmed, r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
        floats = pc.cast(pc.if_else(looks, trimmed, _NULL_TEXT), pa.float64())
    return _numbers_from_floats(floats, ~_nulls(text), lambda p: text[p].as_py(), column)


def _numbers_from_floats(
    floats: pa.Array, present: np.ndarray, shown: Callable[[int], Any], column: str
) -> Converted:
    """Whole values within 2**53 become ints, others floats; present but not finite is invalid."""
    finite = pc.fill_null(pc.is_finite(floats), False)
    whole = pc.and_(
        finite,
        pc.and_(pc.less(pc.abs(floats), EXACT_FLOAT_LIMIT), pc.equal(pc.floor(floats), floats)),
    )
    as_int = pc.cast(pc.cast(pc.if_else(whole, floats, 0.0), pa.int64()), pa.string())
    fragments = pc.if_else(whole, as_int, pc.cast(floats, pa.string()))
    fragments = pc.if_else(finite, fragments, _NULL_TEXT)
    bad = np.flatnonzero(~_mask(finite) & present)
    errors = {int(p): _problem(column, shown(int(p)), "is not a number") for p in bad}
    return fragments, errors


def _number_cell(cell: Any) -> tuple[Any, str | None]:
    cell = _plain(cell)
    if isinstance(cell, bool):
        return None, "is a boolean, not a number"
    if isinstance(cell, int):
        return cell, None
    if isinstance(cell, str):
        try:
            cell = float(cell.strip())
        except ValueError:
            return None, "is not a number"
    if isinstance(cell, float | Decimal) and (
        cell.is_finite() if isinstance(cell, Decimal) else math.isfinite(cell)
    ):
        if _is_whole(cell) and abs(cell) < EXACT_FLOAT_LIMIT:
            return int(cell), None
        return float(cell), None
    return None, "is not a number"


# --- boolean -----------------------------------------------------------------------------


def _to_boolean(series: pd.Series, column: str) -> Converted:
    native = None if _text_array(series) is not None else _native_array(series)
    if native is not None and pa.types.is_boolean(native.type):
        return pc.if_else(native, "true", "false"), {}
    return _per_unique(series, column, _boolean_cell)


def _boolean_cell(cell: Any) -> tuple[Any, str | None]:
    cell = _plain(cell)
    if isinstance(cell, bool):
        return cell, None
    if isinstance(cell, int) and cell in (0, 1):
        return bool(cell), None
    if isinstance(cell, str):
        value = _BOOLEANS.get(cell.strip().lower())
        if value is not None:
            return value, None
    return None, "is not a boolean"


# --- datetime ----------------------------------------------------------------------------


def _to_datetime(
    series: pd.Series, column: str, fmt: str | None, timezone: str | None
) -> Converted:
    text = _text_array(series)
    if text is None:
        native = _native_array(series)
        if native is not None and (
            pa.types.is_timestamp(native.type) or pa.types.is_date(native.type)
        ):
            instants = _instants_from_native(native, timezone)
            errors = _beyond_format_years(instants, column)
            return _drop(_quoted(_format_instants(instants)), errors), errors
        return _per_unique(series, column, partial(_datetime_cell, timezone=timezone))
    instants = _instants_from_text(series, text, fmt, timezone)
    rule = "is not a datetime" + (f" in the format {fmt!r}" if fmt else "")
    bad = np.flatnonzero(_nulls(instants) & ~_nulls(text))
    errors = {int(p): _problem(column, text[int(p)].as_py(), rule) for p in bad}
    return _quoted(_format_instants(instants)), errors


def _instants_from_text(
    series: pd.Series, text: pa.Array, fmt: str | None, timezone: str | None
) -> pa.Array:
    """UTC instants (timestamp[us, UTC]); null where the text is missing or not a datetime."""
    if fmt is None:
        trimmed = pc.utf8_trim_whitespace(text)
        try:  # fast path: arrow's ISO 8601 parser, when every cell carries an offset ...
            return pc.cast(trimmed, pa.timestamp("us", tz="UTC"))
        except pa.ArrowInvalid:
            pass
        try:  # ... or none does
            return _assume_zone(pc.cast(trimmed, pa.timestamp("us")), timezone)
        except pa.ArrowInvalid:
            pass
    cells = pd.Series(text.to_numpy(zero_copy_only=False), dtype=object)
    if fmt is None:
        cells = cells.str.strip()
        has_offset = _mask(pc.match_substring_regex(text, r"(Z|[+-]\d\d(:?\d\d)?)\s*$"))
    else:
        has_offset = np.full(len(series), "%z" in fmt or "%Z" in fmt)
    parse_format = fmt or "ISO8601"
    aware = pd.to_datetime(
        cells.where(has_offset, None), format=parse_format, errors="coerce", utc=True
    )
    naive = pd.to_datetime(cells.where(~has_offset, None), format=parse_format, errors="coerce")
    aware_arrow = pc.cast(
        pa.array(aware, from_pandas=True), pa.timestamp("us", tz="UTC"), safe=False
    )
    naive_arrow = _assume_zone(
        pc.cast(pa.array(naive, from_pandas=True), pa.timestamp("us"), safe=False), timezone
    )
    return pc.if_else(pa.array(has_offset), aware_arrow, naive_arrow)


def _assume_zone(naive: pa.Array, timezone: str | None) -> pa.Array:
    """Naive wall times read in `timezone` (UTC by default) as UTC instants."""
    if timezone is None or timezone == "UTC":
        return pc.cast(naive, pa.timestamp("us", tz="UTC"))
    local = pc.assume_timezone(naive, timezone=timezone, ambiguous="earliest", nonexistent="latest")
    return pc.cast(local, pa.timestamp("us", tz="UTC"))


def _instants_from_native(native: pa.Array, timezone: str | None) -> pa.Array:
    if pa.types.is_date(native.type):
        return _assume_zone(pc.cast(native, pa.timestamp("us")), timezone)
    if native.type.tz is None:
        return _assume_zone(pc.cast(native, pa.timestamp("us"), safe=False), timezone)
    return pc.cast(native, pa.timestamp("us", tz="UTC"), safe=False)


def _beyond_format_years(instants: pa.Array, column: str) -> dict[int, str]:
    """Instants MoEngage's YYYY-MM-DDTHH:MM:SSZ cannot write (Parquet holds years past 9999)."""
    years = pc.year(instants)
    outside = _mask(pc.or_(pc.less(years, 1), pc.greater(years, 9999)))
    rule = "is outside the years 0001-9999 that MoEngage's date-time (YYYY-MM-DDTHH:MM:SSZ) holds"
    return {
        int(p): _problem(
            column, pc.cast(instants[int(p) : int(p) + 1], pa.string())[0].as_py(), rule
        )
        for p in np.flatnonzero(outside)
    }


def _format_instants(instants: pa.Array) -> pa.Array:
    """UTC instants as YYYY-MM-DDTHH:MM:SSZ text, null for nulls."""
    seconds = pc.floor_temporal(instants, unit="second")
    # Casting the naive (UTC wall time) value is far faster than strftime.
    wall = pc.cast(pc.cast(seconds, pa.timestamp("us")), pa.timestamp("s"))
    text = pc.replace_substring(pc.cast(wall, pa.string()), " ", "T", max_replacements=1)
    return _wrapped(text, "", "Z")


def _datetime_cell(cell: Any, timezone: str | None) -> tuple[Any, str | None]:
    cell = _plain(cell)
    if isinstance(cell, dt.datetime):
        moment = cell
    elif isinstance(cell, dt.date):
        moment = dt.datetime(cell.year, cell.month, cell.day)
    else:
        return None, "is not a datetime"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(timezone or "UTC"))
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), None


# --- date --------------------------------------------------------------------------------


def _to_date(series: pd.Series, column: str, fmt: str | None, as_text: bool = False) -> Converted:
    """Midnight UTC of the calendar date, as MoEngage documents dates (ISO 8601 date-times);
    with `as_text`, the bare YYYY-MM-DD, which MoEngage keeps as text."""
    fragments, errors = _to_calendar_dates(series, column, fmt)
    if as_text:
        return fragments, errors
    return pc.replace_substring_regex(fragments, '"$', f'{MIDNIGHT_UTC}"'), errors


def _to_calendar_dates(series: pd.Series, column: str, fmt: str | None) -> Converted:
    """The calendar dates as JSON strings "YYYY-MM-DD" (null = omit) and the problems."""
    text = _text_array(series)
    if text is None:
        native = _native_array(series)
        if native is not None and pa.types.is_date(native.type):
            return _quoted(pc.cast(pc.cast(native, pa.date32()), pa.string())), {}
        if native is not None and pa.types.is_timestamp(native.type):
            wall = pc.local_timestamp(native) if native.type.tz else native
            return _quoted(pc.cast(pc.cast(wall, pa.date32()), pa.string())), {}
        return _per_unique(series, column, _date_cell)
    if fmt is None:
        try:  # fast path: every cell is exactly YYYY-MM-DD
            return _quoted(pc.cast(pc.cast(text, pa.date32()), pa.string())), {}
        except pa.ArrowInvalid:
            return _per_unique(series, column, _iso_date_cell)
    try:
        parsed = pd.to_datetime(series, format=fmt, errors="coerce")
    except (ValueError, TypeError):
        parsed = None
    if parsed is None or not pd.api.types.is_datetime64_any_dtype(parsed):
        # e.g. offsets that differ between rows: parse each distinct cell
        return _per_unique(series, column, partial(_formatted_date_cell, fmt=fmt))
    if parsed.dt.tz is not None:
        parsed = parsed.dt.tz_localize(None)  # the calendar date as written
    instants = pc.cast(pa.array(parsed, from_pandas=True), pa.timestamp("us"), safe=False)
    dates = pc.cast(instants, pa.date32())
    rule = f"is not a date in the format {fmt!r}"
    bad = np.flatnonzero(_nulls(dates) & ~_nulls(text))
    errors = {int(p): _problem(column, text[int(p)].as_py(), rule) for p in bad}
    return _quoted(pc.cast(dates, pa.string())), errors


def _iso_date_cell(cell: Any) -> tuple[Any, str | None]:
    text = str(cell).strip()
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text).isoformat(), None
        if _ISO_DATE.match(text):
            return dt.datetime.fromisoformat(text).date().isoformat(), None
    except ValueError:
        pass
    # What datetime's ISO 8601 parser reads (20240131, 2024-1-5) reads as a date too, as
    # long as it names a day: a year or a month alone is no date.
    if not _FULL_DATE_PREFIX.match(text):
        return None, "is not a date"
    try:
        parsed = pd.to_datetime(text, format="ISO8601")
    except (ValueError, TypeError, OverflowError):
        return None, "is not a date"
    if pd.isna(parsed):
        return None, "is not a date"
    return parsed.date().isoformat(), None


def _formatted_date_cell(cell: Any, fmt: str) -> tuple[Any, str | None]:
    try:
        return dt.datetime.strptime(str(cell).strip(), fmt).date().isoformat(), None
    except ValueError:
        return None, f"is not a date in the format {fmt!r}"


def _date_cell(cell: Any) -> tuple[Any, str | None]:
    cell = _plain(cell)
    if isinstance(cell, dt.datetime):
        return cell.date().isoformat(), None
    if isinstance(cell, dt.date):
        return cell.isoformat(), None
    return None, "is not a date"


# --- standard attributes -----------------------------------------------------------------


def _checked_values(
    series: pd.Series,
    convert: Callable[[pd.Series], Converted],
    standard: catalogue.StandardAttribute,
    column: str,
) -> Converted:
    """The converted values, less those MoEngage's schema refuses for a standard attribute
    (a value outside its enum, an email that is not one): those rows break a rule."""
    fragments, errors = convert(series)
    distinct = pc.unique(fragments).drop_null().to_pylist()
    refused = {}
    for text in distinct:
        rule = standard.value_problem(orjson.loads(text))
        if rule is not None:
            refused[text] = rule
    if not refused:
        return fragments, errors
    bad = _mask(pc.is_in(fragments, value_set=pa.array(list(refused), pa.string())))
    errors = dict(errors)
    for position in np.flatnonzero(bad):
        text = fragments[int(position)].as_py()
        errors[int(position)] = _problem(column, orjson.loads(text), refused[text])
    return _drop(fragments, errors), errors


# --- arrays ------------------------------------------------------------------------------


def _to_array(series: pd.Series, column: str, separator: str | None, items: str) -> Converted:
    convert_item = _ITEM_CONVERTERS[items]
    if isinstance(series.dtype, pd.ArrowDtype) and _is_list_type(series.dtype.pyarrow_dtype):
        cells = _combined(pa.array(series)).to_pylist()
        return _per_cell(cells, column, partial(_items_cell, convert_item=convert_item))
    if _text_array(series) is None:  # Python lists or scalars in an object column
        cells = series.to_numpy(dtype=object, na_value=None).tolist()
        return _per_cell(cells, column, partial(_items_cell, convert_item=convert_item))
    return _per_unique(
        series, column, partial(_array_text_cell, separator=separator, convert_item=convert_item)
    )


def _array_text_cell(
    cell: str, separator: str | None, convert_item: CellConverter
) -> tuple[Any, str | None]:
    if separator is not None:
        parts: list[Any] = cell.split(separator)
    elif cell.lstrip().startswith("["):
        try:
            parts = orjson.loads(cell)
        except orjson.JSONDecodeError:
            return None, "is not a JSON array"
        if not isinstance(parts, list):
            return None, "is not a JSON array"
    else:
        parts = [cell]
    return _items_cell(parts, convert_item)


def _items_cell(cell: Any, convert_item: CellConverter) -> tuple[Any, str | None]:
    """A list of items, checked and converted; empty and missing items are dropped."""
    raw = list(cell) if isinstance(cell, list | tuple | np.ndarray) else [cell]
    result: list[Any] = []
    for item in raw:
        item = _plain(item)
        if isinstance(item, str):
            item = item.strip()
            if not item:
                continue
        elif item is None or (isinstance(item, float) and math.isnan(item)):
            continue
        value, rule = convert_item(item)
        if rule is not None:
            return None, f"has an item {_show(item)} that {rule}"
        result.append(value)
    if len(result) > moengage.MAX_ARRAY_ITEMS:
        return None, f"has {len(result)} items; an array holds at most {moengage.MAX_ARRAY_ITEMS}"
    return (result or None), None


def _string_item(item: Any) -> tuple[Any, str | None]:
    if isinstance(item, str):
        if len(item) > moengage.MAX_ARRAY_ITEM_LENGTH:
            return None, f"is longer than {moengage.MAX_ARRAY_ITEM_LENGTH} characters"
        return item, None
    return _string_cell(item)


_ITEM_CONVERTERS: dict[str, CellConverter] = {
    "string": _string_item,
    "integer": _integer_cell,
    "number": _number_cell,
}


# --- platforms ---------------------------------------------------------------------------


def _platform_entries(names: Iterable[str]) -> tuple[list[dict[str, str]] | None, str | None]:
    """The payload entries for these platform names, or (None, the first unknown name)."""
    entries: list[dict[str, str]] = []
    seen: set[str] = set()
    for name in names:
        name = name.strip()
        if not name:
            continue
        canonical = _PLATFORMS.get(name.lower())
        if canonical is None:
            return None, name
        if canonical not in seen:
            seen.add(canonical)
            entries.append({"platform": canonical, "active": "true"})
    return (entries or None), None


def _platforms_cell(cell: Any) -> tuple[Any, str | None]:
    if isinstance(cell, list | tuple | np.ndarray):
        names = [str(item) for item in cell if item is not None]
    else:
        names = _PLATFORM_SEPARATORS.split(str(cell))
    entries, unknown = _platform_entries(names)
    if unknown is None:
        return entries, None
    if isinstance(cell, str) and cell.strip() == unknown:
        return None, _NOT_A_PLATFORM
    return None, f"has {_show(unknown)}, which {_NOT_A_PLATFORM}"


def _to_platforms(series: pd.Series, column: str) -> Converted:
    if isinstance(series.dtype, pd.ArrowDtype) and _is_list_type(series.dtype.pyarrow_dtype):
        return _per_cell(_combined(pa.array(series)).to_pylist(), column, _platforms_cell)
    return _per_unique(series, column, _platforms_cell)


# --- customer_id -------------------------------------------------------------------------


_ID_CONTROL = r"[\x00-\x1f\x7f]"
# In attribute values tab and newlines are data (addresses); other control characters are not.
_VALUE_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
_CONTROL_RULE = "holds a control character (NUL and the like)"


def _customer_ids(
    series: pd.Series, column: str, strip: bool = False
) -> tuple[list[Any], pa.Array, dict[int, str], list[str]]:
    """customer_id as text exactly as written: (values, JSON text, problems by position,
    warnings for the summary).

    Missing (NaN too), blank or placeholder ids, control characters, and surrounding
    whitespace (unless `strip`) are problems. A float column's whole values lose their ".0".
    """
    warnings: list[str] = []
    text = _text_array(series)
    if text is None:
        native = _native_array(series)
        if native is not None and pa.types.is_integer(native.type):
            text = pc.cast(native, pa.string())
        elif native is not None and pa.types.is_floating(native.type):
            text = _float_ids(native)
            if text.null_count < len(text):
                warnings.append(
                    f"customer_id column {column!r} holds floating-point numbers (an export from "
                    "pandas or Spark?): whole values are sent without '.0' and missing ones are "
                    "invalid, but ids beyond 2**53 may have lost digits; export it as integer "
                    "or text (the export is lossy)"
                )
        else:
            cells = series.to_numpy(dtype=object, na_value=None).tolist()
            text = pa.array(
                [None if _is_missing(c) else _string_cell(c)[0] for c in cells], pa.string()
            )
    elif pc.any(pc.match_substring_regex(text, r"^[+-]?\d+\.0+$")).as_py():
        warnings.append(
            f"customer_id column {column!r} has whole numbers written with '.0' (a float column"
            " written out by pandas or Spark?); they are sent as written, so '7.0' and '7' would"
            " be two customers: export the column as integer or text (the export is lossy)"
        )
    trimmed = pc.utf8_trim_whitespace(text)
    if strip:
        text = trimmed
    values = text.to_numpy(zero_copy_only=False).tolist()
    normal = pc.utf8_lower(trimmed)
    placeholder = _mask(pc.is_in(normal, value_set=_PLACEHOLDERS))
    where = f"customer_id (column {column!r})"
    errors = {int(p): f"{where} is empty" for p in np.flatnonzero(_nulls(text))}
    control = _mask(pc.match_substring_regex(text, _ID_CONTROL))
    for position in np.flatnonzero(control):
        errors[int(position)] = f"{where}: {_show(values[position])} {_CONTROL_RULE}"
    if not strip:
        padded = _mask(pc.not_equal(text, trimmed)) & ~placeholder & ~control
        for position in np.flatnonzero(padded):
            errors[int(position)] = (
                f"{where}: {_show(values[position])} has whitespace at its start or end "
                "(set mapping.strip_customer_id: true to remove it)"
            )
    for position in np.flatnonzero(placeholder):
        shown = values[position]
        rule = "is blank" if not shown.strip() else "is a placeholder MoEngage refuses"
        errors[int(position)] = f"{where}: {_show(shown)} {rule}"
    for position in np.flatnonzero(_mask(pc.is_in(normal, value_set=_MISSING_AS_TEXT))):
        errors[int(position)] = (
            f"{where}: {_show(values[position])} is a missing value written out as text"
            " (pandas' NaN / <NA> / NaT)"
        )
    return values, _json_strings(text), errors, warnings


# What pandas writes for a missing value when an id column is turned into text.
_MISSING_AS_TEXT = pa.array(["nan", "<na>", "nat"], pa.string())


def _is_missing(cell: Any) -> bool:
    return cell is None or (isinstance(cell, float) and math.isnan(cell))


def _float_ids(native: pa.Array) -> pa.Array:
    """A float column's ids as text: NaN missing, whole values without ".0"."""
    floats = pc.cast(native, pa.float64())
    present = pc.and_kleene(pc.invert(pc.is_nan(floats)), pc.is_finite(floats))
    floats = pc.if_else(present, floats, pa.scalar(None, pa.float64()))
    whole = pc.fill_null(pc.equal(floats, pc.floor(floats)), False)
    small = pc.fill_null(pc.less(pc.abs(floats), float(2**63)), False)
    as_int = pc.if_else(pc.and_(whole, small), floats, pa.scalar(None, pa.float64()))
    int_text = pc.cast(pc.cast(as_int, pa.int64()), pa.string())
    return pc.coalesce(int_text, pc.cast(floats, pa.string()))


def _control_problems(series: pd.Series, column: str) -> dict[int, str]:
    """Cells of a text column that hold control characters (list items too)."""
    text = _text_array(series)
    if text is not None:
        found = _mask(pc.match_substring_regex(text, _VALUE_CONTROL))
        return {
            int(p): _problem(column, text[int(p)].as_py(), _CONTROL_RULE)
            for p in np.flatnonzero(found)
        }
    if isinstance(series.dtype, pd.ArrowDtype) and _is_list_type(series.dtype.pyarrow_dtype):
        lists = _combined(pa.array(series))
        items = pc.list_flatten(lists)
        if not (pa.types.is_string(items.type) or pa.types.is_large_string(items.type)):
            return {}
        found = _mask(pc.match_substring_regex(items, _VALUE_CONTROL))
        if not found.any():
            return {}
        parents = pc.list_parent_indices(lists).to_numpy()
        return {
            int(parents[p]): _problem(
                column, items[int(p)].as_py(), "has an item that " + _CONTROL_RULE
            )
            for p in np.flatnonzero(found)
        }
    return {}


# --- rows --------------------------------------------------------------------------------


def _element_template(with_customer_id: bool, update_existing_only: bool) -> tuple[str, ...]:
    """The element JSON around the customer_id and the attribute members, from the one
    builder of the shape (moengage.customer_element), so the key order stays its own."""
    customer_id = "\x01" if with_customer_id else None
    text = orjson.dumps(
        moengage.customer_element(customer_id, {"\x02": 0}, update_existing_only)
    ).decode()
    head, tail = text.split('"\\u0002":0')
    if with_customer_id:
        before, after = head.split('"\\u0001"')
        return before, after, tail
    return head, tail


# --- the mapper --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    """One mapped column: where it goes, where it is configured, how it converts."""

    name: str  # attribute name (or payload key)
    column: str
    key_path: str  # the job-file key naming the column, for errors
    kind: str  # shown by `validate`
    convert: Callable[[pd.Series], Converted]


def _attribute_field(name: str, spec: AttributeSpec) -> _Field:
    key = f"mapping.attributes.{name}"
    column = spec.column
    kind: str = spec.type
    converter: Callable[[pd.Series], Converted]
    if spec.type == "string":
        converter = partial(_to_string, column=column)
    elif spec.type == "integer":
        converter = partial(_to_integer, column=column)
    elif spec.type == "number":
        converter = partial(_to_number, column=column)
    elif spec.type == "boolean":
        converter = partial(_to_boolean, column=column)
    elif spec.type == "datetime":
        _check_timezone(spec.timezone, f"{key}.timezone")
        converter = partial(_to_datetime, column=column, fmt=spec.format, timezone=spec.timezone)
        kind = _with_options(kind, format=spec.format, timezone=spec.timezone)
    elif spec.type == "date":
        converter = partial(_to_date, column=column, fmt=spec.format, as_text=spec.as_text)
        kind = _with_options("date as text" if spec.as_text else kind, format=spec.format)
    else:  # array
        converter = partial(_to_array, column=column, separator=spec.separator, items=spec.items)
        kind = _with_options(f"array of {spec.items}", separator=spec.separator)
    standard = catalogue.lookup(name)
    if standard is not None and (standard.enum or standard.shape):
        converter = partial(_checked_values, convert=converter, standard=standard, column=column)
    return _Field(name, column, f"{key}.column", kind, converter)


def _array_op_field(section: str, name: str, spec: ArrayOpSpec) -> _Field:
    converter = partial(_to_array, column=spec.column, separator=spec.separator, items=spec.items)
    kind = _with_options(f"array of {spec.items}", separator=spec.separator)
    return _Field(name, spec.column, f"mapping.{section}.{name}.column", kind, converter)


def _with_options(kind: str, **options: str | None) -> str:
    shown = ", ".join(f"{key} {value!r}" for key, value in options.items() if value is not None)
    return f"{kind} ({shown})" if shown else kind


def _check_timezone(timezone: str | None, key_path: str) -> None:
    if timezone is None:
        return
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{key_path}: unknown time zone {timezone!r} (use an IANA name such as Europe/Berlin)"
        ) from None


def _join_members(members: list[pa.Array]) -> pa.Array:
    """The members of each row joined with commas, omitted (null) ones skipped.

    A constant "" leads the join: with null_handling="skip", pyarrow drops the rows whose
    arguments are all null from the result (misaligning every later row), so no row may be
    all null; the leading comma it adds is then cut off.
    """
    joined = pc.binary_join_element_wise("", *members, ",", null_handling="skip")
    return pc.utf8_slice_codeunits(joined, 1)


def _members(names: list[str], fragments: list[pa.Array]) -> list[pa.Array]:
    """`"name":value` for each column, null where the value is omitted."""
    return [
        _wrapped(values, orjson.dumps(name).decode() + ":", "")
        for name, values in zip(names, fragments, strict=True)
    ]


class Mapper:
    """Maps chunks of source rows to MoEngage customer elements, valid or not."""

    def __init__(
        self, mapping: MappingConfig, max_element_bytes: int = DEFAULT_MAX_ELEMENT_BYTES
    ) -> None:
        self.mapping = mapping
        self.max_element_bytes = max_element_bytes
        if mapping.customer_id is None and not mapping.identifiers:
            raise ConfigError(
                "mapping.customer_id: required unless mapping.identifiers lists the "
                "workspace's identity attributes (Identity Resolution)"
            )
        self._attributes = [_attribute_field(n, s) for n, s in mapping.attributes.items()]
        self._add = [_array_op_field("add_to_array", n, s) for n, s in mapping.add_to_array.items()]
        self._remove = [
            _array_op_field("remove_from_array", n, s) for n, s in mapping.remove_from_array.items()
        ]
        self._platforms_field: _Field | None = None
        self._platforms_constant: list[dict[str, str]] | None = None
        platforms = mapping.platforms
        if platforms is not None and platforms.column is not None:
            self._platforms_field = _Field(
                moengage.PLATFORMS_KEY, platforms.column, "mapping.platforms.column", "platforms",
                partial(_to_platforms, column=platforms.column),
            )  # fmt: skip
        elif platforms is not None and platforms.values:
            entries, unknown = _platform_entries(platforms.values)
            if unknown is not None:
                raise ConfigError(f"mapping.platforms.values: {_show(unknown)} {_NOT_A_PLATFORM}")
            self._platforms_constant = entries
        self._template = _element_template(
            mapping.customer_id is not None, mapping.update_existing_only
        )

    @property
    def columns(self) -> list[str]:
        """The input columns this mapping reads, each once, in mapping order."""
        names = [self.mapping.customer_id] if self.mapping.customer_id else []
        names += [field.column for field in self._fields()]
        return list(dict.fromkeys(names))

    def _fields(self) -> list[_Field]:
        extra = [self._platforms_field] if self._platforms_field else []
        return [*self._attributes, *self._add, *self._remove, *extra]

    def check_columns(self, available: list[str], source: str) -> None:
        """Refuse a mapping that names columns `source` lacks, suggesting close matches."""
        wanted: list[tuple[str, str]] = []
        if self.mapping.customer_id:
            wanted.append(("mapping.customer_id", self.mapping.customer_id))
        wanted += [(field.key_path, field.column) for field in self._fields()]
        present = set(available)
        problems = []
        for key_path, column in wanted:
            if column in present:
                continue
            close = difflib.get_close_matches(column, available, n=3)
            hint = (
                f"did you mean {', '.join(repr(c) for c in close)}?"
                if close
                else f"it has {', '.join(repr(c) for c in available[:20])}"
            )
            problems.append(f"{key_path}: column {column!r} is not in {source}; {hint}")
        if problems:
            raise ConfigError("\n".join(problems))

    def describe(self) -> list[tuple[str, str, str]]:
        """(attribute, column, type) for each mapped attribute, for `validate`'s summary."""
        rows = []
        if self.mapping.customer_id:
            rows.append(("customer_id", self.mapping.customer_id, "customer_id"))
        rows += [(f.name, f.column, f.kind) for f in self._attributes]
        rows += [(f"{moengage.ADD_TO_ARRAY_KEY}.{f.name}", f.column, f.kind) for f in self._add]
        rows += [
            (f"{moengage.REMOVE_FROM_ARRAY_KEY}.{f.name}", f.column, f.kind) for f in self._remove
        ]
        if self._platforms_field:
            rows.append((moengage.PLATFORMS_KEY, self._platforms_field.column, "platforms"))
        elif self._platforms_constant:
            names = "|".join(entry["platform"] for entry in self._platforms_constant)
            rows.append((moengage.PLATFORMS_KEY, "(constant)", names))
        return rows

    def map_chunk(self, chunk: Chunk) -> MappedChunk:
        """Every row of the chunk as a valid Row or an InvalidRow saying what is wrong."""
        frame = chunk.frame
        rows = len(frame)
        problems: dict[int, list[str]] = {}

        # The id column has its own rules; a chunk known to be free of control characters
        # needs no check per column.
        checked = set(frame.columns) if chunk.control_free else {self.mapping.customer_id}

        def converted(field: _Field) -> pa.Array:
            fragments, errors = field.convert(frame[field.column])
            if field.column not in checked:
                checked.add(field.column)
                errors = {**_control_problems(frame[field.column], field.column), **errors}
            for position, message in errors.items():
                problems.setdefault(position, []).append(message)
            return fragments

        ids: list[Any] = [None] * rows
        id_json: pa.Array | None = None
        warnings: list[str] = []
        if self.mapping.customer_id is not None:
            column = self.mapping.customer_id
            ids, id_json, id_errors, warnings = _customer_ids(
                frame[column], column, self.mapping.strip_customer_id
            )
            for position, message in id_errors.items():
                problems.setdefault(position, []).append(message)
        attributes = [converted(field) for field in self._attributes]
        if self.mapping.customer_id is None:
            self._require_identifier(attributes, problems)
        members = _members([f.name for f in self._attributes], attributes)
        members += self._array_ops(moengage.ADD_TO_ARRAY_KEY, self._add, converted, rows)
        members += self._array_ops(moengage.REMOVE_FROM_ARRAY_KEY, self._remove, converted, rows)
        members += self._platforms(converted, rows)
        elements = self._elements(id_json, members, rows)
        mapped = self._settle(chunk, ids, elements, problems)
        mapped.warnings += warnings
        _add_malformed(mapped, chunk)
        return mapped

    def _array_ops(
        self, key: str, fields: list[_Field], converted: Callable[[_Field], pa.Array], rows: int
    ) -> list[pa.Array]:
        """The `"addValueToArrayField":{...}` member, null where no column has a value."""
        if not fields:
            return []
        inner = _members([f.name for f in fields], [converted(f) for f in fields])
        body = _join_members(inner)
        wrapped = _wrapped(body, orjson.dumps(key).decode() + ":{", "}")
        return [pc.if_else(pc.equal(body, ""), _NULL_TEXT, wrapped)]

    def _platforms(self, converted: Callable[[_Field], pa.Array], rows: int) -> list[pa.Array]:
        if self._platforms_field is not None:
            return _members([moengage.PLATFORMS_KEY], [converted(self._platforms_field)])
        if self._platforms_constant is not None:
            value = orjson.dumps(self._platforms_constant).decode()
            return _members([moengage.PLATFORMS_KEY], [pa.array([value] * rows, pa.string())])
        return []

    def _require_identifier(
        self, attributes: list[pa.Array], problems: dict[int, list[str]]
    ) -> None:
        """Without customer_id, a row must carry one of the identifiers (Identity Resolution)."""
        rows = len(attributes[0]) if attributes else 0
        has_one = np.zeros(rows, dtype=bool)
        for field, values in zip(self._attributes, attributes, strict=True):
            if field.name in self.mapping.identifiers:
                has_one |= ~_nulls(values)
        message = (
            "no customer_id and none of the identifiers "
            f"({', '.join(self.mapping.identifiers)}) has a value"
        )
        for position in np.flatnonzero(~has_one):
            problems.setdefault(int(position), []).append(message)

    def _elements(self, id_json: pa.Array | None, members: list[pa.Array], rows: int) -> pa.Array:
        """Each row's element JSON, joined from the fragments (omitted members skipped)."""
        body = _join_members(members) if members else pa.array([""] * rows, pa.string())
        if id_json is None:
            head, tail = self._template
            return _wrapped(body, head, tail)
        before, after, tail = self._template
        # An invalid row can lack a customer_id; its payload then shows it as null.
        id_and_body = pc.binary_join_element_wise(id_json.fill_null("null"), body, after)
        return _wrapped(id_and_body, before, tail)

    def _settle(
        self, chunk: Chunk, ids: list[Any], elements: pa.Array, problems: dict[int, list[str]]
    ) -> MappedChunk:
        """Rows that broke no rule and fit a request are valid; the rest are InvalidRows."""
        limit = self.max_element_bytes
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
        for position in sorted(problems):
            payload = orjson.loads(encoded[position])
            if payload.get("customer_id", "") is None:
                del payload["customer_id"]  # missing: shown as absent, as it would be sent
            number = numbers[position]
            mapped.invalid.append(
                InvalidRow(
                    source=source,
                    row=number,
                    customer_id=ids[position],
                    error="; ".join(problems[position]),
                    record=chunk.record(number),
                    payload=payload,
                    line=chunk.line(number),
                )
            )
        return mapped


# The record of a CSV line that could not be split into columns: its text as read.
MALFORMED_RECORD_KEY = "_raw"


def _add_malformed(mapped: MappedChunk, chunk: Chunk) -> None:
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
