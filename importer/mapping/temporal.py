"""Converters for types datetime and date."""

from __future__ import annotations

import datetime as dt
import re
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer.mapping.arrow import (
    bool_mask,
    drop,
    native_array,
    null_mask,
    text_array,
)
from importer.mapping.cells import (
    Converted,
    per_unique,
    plain,
    problem,
)
from importer.mapping.jsontext import (
    quoted,
    wrapped,
)

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_FULL_DATE_PREFIX = re.compile(r"\d{4}(-\d{1,2}-\d{1,2}|\d{4})(?!\d)")
MIDNIGHT_UTC = "T00:00:00Z"  # what type date appends to the calendar date


def to_datetime(series: pd.Series, column: str, fmt: str | None, timezone: str | None) -> Converted:
    text = text_array(series)
    if text is None:
        native = native_array(series)
        if native is not None and (
            pa.types.is_timestamp(native.type) or pa.types.is_date(native.type)
        ):
            instants = _instants_from_native(native, timezone)
            errors = _beyond_format_years(instants, column)
            return drop(quoted(_format_instants(instants)), errors), errors
        return per_unique(series, column, partial(_datetime_cell, timezone=timezone))
    instants = _instants_from_text(series, text, fmt, timezone)
    rule = "is not a datetime" + (f" in the format {fmt!r}" if fmt else "")
    bad = np.flatnonzero(null_mask(instants) & ~null_mask(text))
    errors = {int(p): problem(column, text[int(p)].as_py(), rule) for p in bad}
    return quoted(_format_instants(instants)), errors


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
        has_offset = bool_mask(pc.match_substring_regex(text, r"(Z|[+-]\d\d(:?\d\d)?)\s*$"))
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
    wall = pc.cast(pc.cast(seconds, pa.timestamp("us")), pa.timestamp("s"))
    text = pc.replace_substring(pc.cast(wall, pa.string()), " ", "T", max_replacements=1)
    return wrapped(text, "", "Z")


def _datetime_cell(cell: Any, timezone: str | None) -> tuple[Any, str | None]:
    cell = plain(cell)
    if isinstance(cell, dt.datetime):
        moment = cell
    elif isinstance(cell, dt.date):
        moment = dt.datetime(cell.year, cell.month, cell.day)
    else:
        return None, "is not a datetime"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(timezone or "UTC"))
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), None


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
    cell = plain(cell)
    if isinstance(cell, dt.datetime):
        return cell.date().isoformat(), None
    if isinstance(cell, dt.date):
        return cell.isoformat(), None
    return None, "is not a date"
