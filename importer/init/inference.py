"""Guessing a text column's attribute type from its sampled cells (CSV, or Parquet strings)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import date, datetime
from functools import partial
from typing import Any

from importer import moengage
from importer.init.model import Guess
from importer.init.naming import LIST_NAME_PARTS, looks_like_flag, looks_like_identifier, name_parts
from importer.init.vocabulary import Vocabulary, accepted, item_accepted, rejected_count
from importer.mapping import parse_export_datetime

# A typed column may hold this share of values that do not parse; those rows get dead-lettered.
BAD_VALUE_SHARE = 0.01
_ARRAY_SEPARATORS = ("|", ";")

# Which text `run` reads as a boolean, an integer or a number is asked of run's converters
# (init.vocabulary). These shapes only decide whether digits are a quantity at all:
# a leading zero or plus sign marks a code or a phone number, whatever the other cells hold,
# and more than 15 digits before the point an id (a double cannot hold them all).
_CODE_LIKE = re.compile(r"\s*([+]|-?0[0-9])")
_BEYOND_DOUBLE = re.compile(r"\s*-?[0-9]{16}")
_PANDAS_WHOLE = re.compile(r"\s*-?[0-9]+\.0\s*")
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


def _numeric_shape(value: str) -> bool:
    """The text may be a quantity: not a code (leading zero, plus sign) nor a long id."""
    return not (_CODE_LIKE.match(value) or _BEYOND_DOUBLE.match(value))


def _within_share(bad: int, total: int) -> bool:
    return bad <= int(total * BAD_VALUE_SHARE)


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
    present = [i for i in items if i]  # run drops empty items
    if not present or not all(_numeric_shape(i) for i in present):
        return "string"
    if all(item_accepted("integer", i) for i in present):
        return "integer"
    if all(item_accepted("number", i) for i in present):
        return "number"
    return "string"


def _guess_text_array(name: str, values: Sequence[str], delimiter: str = ",") -> Guess | None:
    # The file's own delimiter inside a value was escaped or quoted: text, not a list.
    separators = [s for s in _ARRAY_SEPARATORS if s != delimiter]
    if LIST_NAME_PARTS.intersection(name_parts(name)):
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
    bad = rejected_count("boolean", values)
    if not _within_share(bad, len(values)):
        return None
    if tokens <= {"0", "1"} and not looks_like_flag(name):
        return None  # 0/1 alone is as likely a count as a flag; the integer guess says so
    return Guess(name, "boolean", checks=_bad_note(bad, len(values), "a boolean"))


def _guess_number(name: str, values: Sequence[str]) -> Guess | None:
    if not all(_numeric_shape(v) for v in values):
        return None
    total = len(values)
    integers = accepted("integer", values)
    fractions = [v for ok, v in zip(integers, values, strict=True) if ok and "." in v]
    # run reads 12.0 and 12.00 as 12; only pandas' 12.0 says the column is integers (12.00
    # is more often money that happens to be whole in the sample).
    bad_integers = integers.count(False)
    if _within_share(bad_integers, total) and all(map(_PANDAS_WHOLE.fullmatch, fractions)):
        checks = _bad_note(bad_integers, total, "an integer")
        if {v.strip() for v in values} <= {"0", "1"}:
            checks.append("only 0 and 1 seen: make it type: boolean if it is a flag")
        if fractions:
            checks.append(
                "whole numbers written as 12.0 (as pandas writes an integer column with missing"
                " values): sent as integers (12); make it type: number if other rows have"
                " fractions"
            )
        return Guess(name, "integer", checks=checks)
    bad_numbers = rejected_count("number", values)
    if _within_share(bad_numbers, total):
        return Guess(name, "number", checks=_bad_note(bad_numbers, total, "a number"))
    return None


def string_checks(values: Sequence[str]) -> list[str]:
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
    shaped = [_numeric_shape(v) for v in values]
    kinds: tuple[tuple[str, Vocabulary], ...] = (("an integer", "integer"), ("a number", "number"))
    for what, kind in kinds:
        ok = accepted(kind, values)
        fit = sum(1 for good, shape in zip(ok, shaped, strict=True) if good and shape)
        if fit * 2 >= len(values) and fit < len(values):
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
    if looks_like_identifier(name):
        return Guess(name, checks=_text_numbers_note(present) + string_checks(present))
    for guesser in (_guess_boolean, _guess_number, _guess_temporal):
        guess = guesser(name, present)
        if guess is not None:
            return guess
    guess = _guess_text_array(name, present, delimiter)
    if guess is not None:
        return guess
    checks = _text_numbers_note(present) or _mostly_numbers_note(present)
    return Guess(name, checks=checks + string_checks(present))
