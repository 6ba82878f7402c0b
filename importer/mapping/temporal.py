"""Converters for types datetime and date, and the datetime forms warehouses export.

- datetime: ISO 8601 text (date-only means midnight; "T" or a space before the time) and the
  default export forms of Snowflake (2024-03-01 12:34:56.789 -0800), BigQuery
  (2024-03-01 12:34:56.789000 UTC), Redshift and Postgres (2024-03-01 12:34:56.789+00),
  Databricks/Spark (2024-03-01T12:34:56.789Z, 2024-03-01 12:34:56.789); sub-seconds are
  dropped. Naive values (date-only ones too) are read in `timezone` (default UTC). A local time
  that does not exist (a DST gap) or occurs twice (the hour the clocks fall back) breaks a rule
  unless the attribute says how to read it (`nonexistent:`, `ambiguous:`): never shifted silently.
- date: the inputs datetime reads (text in those forms, a `format`, native dates and
  timestamps); a datetime keeps the calendar date as written (its offset is ignored). Sent as
  midnight UTC, YYYY-MM-DDT00:00:00Z, since MoEngage documents dates only as date-times;
  `as_text` keeps the bare YYYY-MM-DD (MoEngage then stores text).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer.config import AmbiguousTime, NonexistentTime
from importer.mapping.arrow import NULL_TEXT, bool_mask, drop, native_array, null_mask, text_array
from importer.mapping.cells import Converted, per_unique, plain, problem
from importer.mapping.jsontext import quoted, wrapped

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_FULL_DATE_PREFIX = re.compile(r"\d{4}(-\d{1,2}-\d{1,2}|\d{4})(?!\d)")
MIDNIGHT_UTC = "T00:00:00Z"  # what type date appends to the calendar date

# Export forms rewritten to ISO 8601 before parsing (applied in order, arrow and Python alike):
_EXPORT_REWRITES = (
    # a zone written as a name or with a space before it: " UTC", " Z", " -0800"
    (r"(\d:\d\d(?:\.\d+)?)\s*(?:UTC|GMT|Z)$", r"\1+00:00"),
    (r"(\d:\d\d(?:\.\d+)?)\s+([+-]\d\d(?::?\d\d)?)$", r"\1\2"),
    # an offset of hours only (Postgres, Redshift: +00)
    (r"(\d:\d\d(?:\.\d+)?[+-]\d\d)$", r"\1:00"),
    # sub-seconds beyond microseconds (Spark, BigQuery nanoseconds): dropped anyway
    (r"(\.\d{6})\d+", r"\1"),
)
# A time followed by an offset: the value names an instant; otherwise it is a local time.
_HAS_OFFSET = r"\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d(?::?\d\d)?)$"
EXPECTED_FORMS = (
    "expected ISO 8601 (2024-03-01, 2024-03-01T12:34:56Z) or a warehouse export form"
    " (2024-03-01 12:34:56.789 -0800, 2024-03-01 12:34:56.789000 UTC,"
    " 2024-03-01 12:34:56.789+00); set format: for others"
)
_NOT_A_DATE = f"is not a date ({EXPECTED_FORMS})"
_UTC = pa.timestamp("us", tz="UTC")
_NAIVE = pa.timestamp("us")


@dataclass(frozen=True, slots=True)
class LocalTimeRules:
    """How naive (local) values become instants: the zone, and what to do with the local
    times a DST change skips or repeats ("raise": the row breaks a rule)."""

    timezone: str | None = None
    ambiguous: AmbiguousTime = "raise"
    nonexistent: NonexistentTime = "raise"


_READ_AS_UTC = LocalTimeRules()


def to_datetime(
    series: pd.Series, column: str, fmt: str | None, rules: LocalTimeRules = _READ_AS_UTC
) -> Converted:
    text = text_array(series)
    if text is None:
        native = native_array(series)
        if native is None or not (
            pa.types.is_timestamp(native.type) or pa.types.is_date(native.type)
        ):
            return per_unique(series, column, partial(_datetime_cell, rules=rules))
        native, outside = _outside_years(native, column)
        instants, local_errors = _instants_from_native(native, rules)
        errors = {
            **_beyond_format_years(instants, column),
            **outside,
            **{p: problem(column, series.iloc[p], rule) for p, rule in local_errors.items()},
        }
        return drop(quoted(_format_instants(instants)), errors), errors
    instants, local_errors = parse_datetimes(text, fmt, rules)
    rule = (
        f"is not a datetime in the format {fmt!r}"
        if fmt
        else f"is not a datetime ({EXPECTED_FORMS})"
    )
    bad = np.flatnonzero(null_mask(instants) & ~null_mask(text))
    errors = {int(p): problem(column, text[int(p)].as_py(), rule) for p in bad}
    for position, local_rule in local_errors.items():
        errors[position] = problem(column, text[position].as_py(), local_rule)
    return drop(quoted(_format_instants(instants)), errors), errors


def normalize_export_text(text: pa.Array) -> pa.Array:
    """Datetime text with warehouse export forms rewritten to ISO 8601 (see _EXPORT_REWRITES)."""
    text = pc.utf8_trim_whitespace(text)
    for pattern, replacement in _EXPORT_REWRITES:
        text = pc.replace_substring_regex(text, pattern, replacement)
    return text


def parse_datetimes(
    text: pa.Array, fmt: str | None = None, rules: LocalTimeRules = _READ_AS_UTC
) -> tuple[pa.Array, dict[int, str]]:
    """UTC instants (timestamp[us, UTC]), null where the text is missing or not a datetime,
    and the local-time rules broken by position (those instants are a guess: omit them)."""
    if fmt is None:
        trimmed = pc.utf8_trim_whitespace(text)
        try:  # fast path: arrow's ISO 8601 parser, when every cell carries an offset ...
            return pc.cast(trimmed, _UTC), {}
        except pa.ArrowInvalid:
            pass
        try:  # ... or none does
            return localize(pc.cast(trimmed, _NAIVE), rules)
        except pa.ArrowInvalid:
            pass
        normal = normalize_export_text(trimmed)
        has_offset = bool_mask(pc.match_substring_regex(normal, _HAS_OFFSET))
        instants = _cast_or_parse(normal, has_offset, _UTC, "ISO8601")
        naive = _cast_or_parse(normal, ~has_offset, _NAIVE, "ISO8601")
    else:
        cells = pd.Series(text.to_numpy(zero_copy_only=False), dtype=object).str.strip()
        has_offset = np.full(len(text), "%z" in fmt or "%Z" in fmt)
        instants = _pandas_parse(cells, has_offset, _UTC, fmt)
        naive = _pandas_parse(cells, ~has_offset, _NAIVE, fmt)
    if not has_offset.all():
        local, errors = localize(naive, rules)
        return pc.if_else(pa.array(has_offset), instants, local), errors
    return instants, {}


def _cast_or_parse(text: pa.Array, where: np.ndarray, target: pa.DataType, fmt: str) -> pa.Array:
    """The cells at `where` as `target` timestamps (null elsewhere): arrow's ISO 8601 cast
    when every such cell is one, else pandas' more lenient parser (2024-1-5, 20240131)."""
    if not where.any():
        return pa.nulls(len(text), target)
    subset = pc.if_else(pa.array(where), text, NULL_TEXT) if not where.all() else text
    try:
        return pc.cast(subset, target)
    except pa.ArrowInvalid:
        cells = pd.Series(text.to_numpy(zero_copy_only=False), dtype=object)
        return _pandas_parse(cells, where, target, fmt)


def _pandas_parse(cells: pd.Series, where: np.ndarray, target: pa.DataType, fmt: str) -> pa.Array:
    if not where.any():
        return pa.nulls(len(cells), target)
    aware = target.tz is not None
    parsed = pd.to_datetime(cells.where(where, None), format=fmt, errors="coerce", utc=aware)
    return pc.cast(pa.array(parsed, from_pandas=True), target, safe=False)


def localize(naive: pa.Array, rules: LocalTimeRules) -> tuple[pa.Array, dict[int, str]]:
    """Naive wall times read in `rules.timezone` (UTC by default) as UTC instants, and the
    positions of local times the zone skips or repeats that `rules` does not resolve."""
    zone = rules.timezone
    if zone is None or zone == "UTC":
        return pc.cast(naive, _UTC), {}
    earliest = pc.assume_timezone(
        naive, timezone=zone, ambiguous="earliest", nonexistent="earliest"
    )
    latest = pc.assume_timezone(naive, timezone=zone, ambiguous="latest", nonexistent="latest")
    differs = bool_mask(pc.not_equal(earliest, latest))
    if not differs.any():
        return pc.cast(earliest, _UTC), {}
    # A skipped time does not come back as itself from the zone; a repeated one does.
    skipped = differs & bool_mask(pc.not_equal(pc.local_timestamp(earliest), naive))
    repeated = differs & ~skipped
    pick_latest = (skipped & (rules.nonexistent == "shift_forward")) | (
        repeated & (rules.ambiguous == "latest")
    )
    instants = pc.if_else(pa.array(pick_latest), latest, earliest)
    errors: dict[int, str] = {}
    if rules.nonexistent == "raise":
        for p in np.flatnonzero(skipped):
            errors[int(p)] = (
                f"is a local time that does not exist in {zone} (the clocks skip it);"
                " set nonexistent: shift_forward or shift_backward to read it"
            )
    if rules.ambiguous == "raise":
        for p in np.flatnonzero(repeated):
            errors[int(p)] = (
                f"is a local time that occurs twice in {zone} (the clocks fall back);"
                " set ambiguous: earliest or latest to choose"
            )
    return pc.cast(instants, _UTC), errors


def _datetime_cell(cell: Any, rules: LocalTimeRules) -> tuple[Any, str | None]:
    """A Python datetime or date (an object column) as YYYY-MM-DDTHH:MM:SSZ."""
    cell = plain(cell)
    if isinstance(cell, dt.datetime):
        moment = cell
    elif isinstance(cell, dt.date):
        moment = dt.datetime(cell.year, cell.month, cell.day)
    else:
        return None, "is not a datetime"
    if moment.tzinfo is None:
        instants, errors = localize(pa.array([moment], _NAIVE), rules)
        if errors:
            return None, errors[0]
        moment = instants[0].as_py()
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), None


def _instants_from_native(
    native: pa.Array, rules: LocalTimeRules
) -> tuple[pa.Array, dict[int, str]]:
    if pa.types.is_date(native.type):
        return localize(pc.cast(native, _NAIVE), rules)
    if native.type.tz is None:
        return localize(pc.cast(native, _NAIVE, safe=False), rules)
    return pc.cast(native, _UTC, safe=False), {}


# Years 0001 to 9999 in seconds since the epoch: [first, end).
_FIRST_SECOND, _END_SECOND = -62_135_596_800, 253_402_300_800
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_YEARS_RULE = (
    "is outside the years 0001-9999 that MoEngage's date-time (YYYY-MM-DDTHH:MM:SSZ) holds"
)


def _outside_years(native: pa.Array, column: str) -> tuple[pa.Array, dict[int, str]]:
    """Timestamps beyond the years 0001-9999 in their own unit (Spark's INT96, read in
    milliseconds, reaches millions of years), refused showing their true date and left out
    (null) before a cast to microseconds could wrap them around."""
    if not pa.types.is_timestamp(native.type):
        return native, {}
    unit = native.type.unit
    per_second = _PER_SECOND[unit]
    ticks = pc.cast(native, pa.int64())
    outside = pc.or_(
        pc.less(ticks, _FIRST_SECOND * per_second),
        pc.greater_equal(ticks, _END_SECOND * per_second),
    )
    positions = np.flatnonzero(bool_mask(outside))
    if not len(positions):
        return native, {}
    errors = {
        int(p): problem(column, str(np.datetime64(ticks[int(p)].as_py(), unit)), _YEARS_RULE)
        for p in positions
    }
    return pc.if_else(outside, pa.scalar(None, native.type), native), errors


def _beyond_format_years(instants: pa.Array, column: str) -> dict[int, str]:
    """Instants MoEngage's YYYY-MM-DDTHH:MM:SSZ cannot write (Parquet holds years past 9999)."""
    years = pc.year(instants)
    outside = bool_mask(pc.or_(pc.less(years, 1), pc.greater(years, 9999)))
    rule = "is outside the years 0001-9999 that MoEngage's date-time (YYYY-MM-DDTHH:MM:SSZ) holds"
    return {
        int(p): problem(
            column, pc.cast(instants[int(p) : int(p) + 1], pa.string())[0].as_py(), rule
        )
        for p in np.flatnonzero(outside)
    }


def _format_instants(instants: pa.Array) -> pa.Array:
    """UTC instants as YYYY-MM-DDTHH:MM:SSZ text, null for nulls."""
    seconds = pc.floor_temporal(instants, unit="second")
    # Casting the naive (UTC wall time) value is far faster than strftime.
    wall = pc.cast(pc.cast(seconds, _NAIVE), pa.timestamp("s"))
    text = pc.replace_substring(pc.cast(wall, pa.string()), " ", "T", max_replacements=1)
    return wrapped(text, "", "Z")


# --- for `init`: which sampled columns hold datetimes ------------------------------------


def parse_export_datetime(value: str) -> dt.datetime | None:
    """One datetime text in any form `type: datetime` reads without `format:` (aware if it
    carries an offset, naive otherwise), or None. For guessing; mapping works on columns."""
    instants, _ = parse_datetimes(pa.array([value], pa.string()))
    if instants[0].as_py() is None:
        return None
    normal = normalize_export_text(pa.array([value], pa.string()))
    aware = bool(pc.match_substring_regex(normal, _HAS_OFFSET)[0].as_py())
    moment: dt.datetime = instants[0].as_py()
    return moment if aware else moment.replace(tzinfo=None)


def looks_like_datetime(values: Iterable[str | None]) -> bool:
    """Whether every non-empty value is a datetime `type: datetime` reads without `format:`
    (date-only values count), and there is at least one. For `init`'s type guessing."""
    present = [v for v in values if v is not None and v.strip()]
    if not present:
        return False
    instants, _ = parse_datetimes(pa.array(present, pa.string()))
    return bool(instants.null_count == 0)


def to_date(series: pd.Series, column: str, fmt: str | None, as_text: bool = False) -> Converted:
    """Midnight UTC of the calendar date, as MoEngage documents dates (ISO 8601 date-times);
    with `as_text`, the bare YYYY-MM-DD, which MoEngage keeps as text."""
    fragments, errors = _to_calendar_dates(series, column, fmt)
    if as_text:
        return fragments, errors
    return pc.replace_substring_regex(fragments, '"$', f'{MIDNIGHT_UTC}"'), errors


def _to_calendar_dates(series: pd.Series, column: str, fmt: str | None) -> Converted:
    """The calendar dates as JSON strings "YYYY-MM-DD" (null = omit) and the problems."""
    text = text_array(series)
    if text is None:
        native = native_array(series)
        if native is not None and pa.types.is_date(native.type):
            return quoted(pc.cast(pc.cast(native, pa.date32()), pa.string())), {}
        if native is not None and pa.types.is_timestamp(native.type):
            wall = pc.local_timestamp(native) if native.type.tz else native
            return quoted(pc.cast(pc.cast(wall, pa.date32()), pa.string())), {}
        return per_unique(series, column, _date_cell)
    if fmt is None:
        try:  # fast path: every cell is exactly YYYY-MM-DD
            return quoted(pc.cast(pc.cast(text, pa.date32()), pa.string())), {}
        except pa.ArrowInvalid:
            return per_unique(series, column, _iso_date_cell)
    try:
        parsed = pd.to_datetime(series, format=fmt, errors="coerce")
    except (ValueError, TypeError):
        parsed = None
    if parsed is None or not pd.api.types.is_datetime64_any_dtype(parsed):
        # e.g. offsets that differ between rows: parse each distinct cell
        return per_unique(series, column, partial(_formatted_date_cell, fmt=fmt))
    if parsed.dt.tz is not None:
        parsed = parsed.dt.tz_localize(None)  # the calendar date as written
    instants = pc.cast(pa.array(parsed, from_pandas=True), pa.timestamp("us"), safe=False)
    dates = pc.cast(instants, pa.date32())
    rule = f"is not a date in the format {fmt!r}"
    bad = np.flatnonzero(null_mask(dates) & ~null_mask(text))
    errors = {int(p): problem(column, text[int(p)].as_py(), rule) for p in bad}
    return quoted(pc.cast(dates, pa.string())), errors


def _normalized(text: str) -> str:
    """One datetime text with export forms rewritten to ISO 8601, as normalize_export_text."""
    text = text.strip()
    for pattern, replacement in _EXPORT_REWRITES:
        text = re.sub(pattern, replacement, text)
    return text


def _iso_date_cell(cell: Any) -> tuple[Any, str | None]:
    text = _normalized(str(cell))
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
        return None, _NOT_A_DATE
    try:
        parsed = pd.to_datetime(text, format="ISO8601")
    except (ValueError, TypeError, OverflowError):
        return None, _NOT_A_DATE
    if pd.isna(parsed):
        return None, _NOT_A_DATE
    return parsed.date().isoformat(), None


def _formatted_date_cell(cell: Any, fmt: str) -> tuple[Any, str | None]:
    try:
        return dt.datetime.strptime(str(cell).strip(), fmt).date().isoformat(), None
    except ValueError:
        return None, f"is not a date in the format {fmt!r}"


def _date_cell(cell: Any) -> tuple[Any, str | None]:
    cell = plain(cell)
    if isinstance(cell, dt.datetime):
        return cell.date().isoformat(), None
    if isinstance(cell, dt.date):
        return cell.isoformat(), None
    return None, "is not a date"
