"""Converters for types integer and number, and the integer vocabulary `init` shares.

- integer: optional sign, digits, and optionally a fraction of zeros ("20", "+20", "20.0" -> 20);
  "2.5", "1e3", "nan" are invalid, and so is a value beyond 2**53 (9007199254740992) either
  way, from CSV text or a Parquet int64 alike: a JSON number past it does not arrive exactly
  (map the column as string to keep its digits as text).
- number: any decimal or exponent text, always sent as a JSON double ("20" -> 20.0, "2.5" ->
  2.5): MoEngage fixes an attribute's type from its first value. "nan" and "inf" are invalid;
  a NaN stored in a native float column counts as missing. A native float is sent in the
  shortest decimal that reads back as it in its own width (float32 1.1 -> 1.1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer.mapping.arrow import (
    NULL_TEXT,
    bool_mask,
    drop,
    is_int64_compatible,
    native_array,
    null_mask,
    replace_at,
    shortest_floats,
    text_array,
)
from importer.mapping.cells import Converted, per_unique, plain, problem
from importer.mapping.jsontext import json_ints, wrapped

# The largest integer a JSON number (a double) holds exactly, and every one below it.
MAX_EXACT_INTEGER = 2**53
# What an `integer` cell may be written as: surrounding whitespace ignored.
INTEGER_PATTERN = r"[+-]?\d+(?:\.0*)?"
INTEGER_EXAMPLES = ("20", "+20", "-3", "20.0", "12.00")
BEYOND_EXACT_RULE = (
    f"is beyond 2**53 ({MAX_EXACT_INTEGER}), past which a JSON number is not exact; map the "
    "column as string to keep its digits"
)

_INTEGER_TEXT = re.compile(INTEGER_PATTERN)


def to_integer(series: pd.Series, column: str) -> Converted:
    text = text_array(series)
    if text is None:
        native = native_array(series)
        if native is not None and is_int64_compatible(native.type):
            return _exact_ints(native, column, lambda p: native[p].as_py())
        return per_unique(series, column, integer_cell)
    try:  # every cell plain digits
        return _exact_ints(pc.cast(text, pa.int64()), column, lambda p: text[p].as_py())
    except pa.ArrowInvalid:
        pass
    # Drop a leading "+" and a zero fraction; up to 18 digits always fits in int64.
    normal = pc.replace_substring_regex(pc.utf8_trim_whitespace(text), r"^\+|\.0*$", "")
    simple = pc.match_substring_regex(normal, r"^-?\d{1,18}$")
    fragments = json_ints(pc.cast(pc.if_else(simple, normal, NULL_TEXT), pa.int64()))
    errors: dict[int, str] = {}
    fixed: dict[int, str] = {}
    for position in np.flatnonzero(~bool_mask(simple) & ~null_mask(text)):  # rare: per cell
        cell = text[int(position)].as_py()
        value, rule = integer_cell(cell)
        if rule is None:
            fixed[int(position)] = str(value)
        else:
            errors[int(position)] = problem(column, cell, rule)
    beyond = _beyond_exact(pc.cast(pc.if_else(simple, normal, NULL_TEXT), pa.int64()))
    errors.update({p: problem(column, text[p].as_py(), BEYOND_EXACT_RULE) for p in beyond})
    return drop(replace_at(fragments, fixed), errors), errors


def _beyond_exact(ints: pa.Array) -> list[int]:
    ints = pc.cast(ints, pa.int64())
    limit = pa.scalar(MAX_EXACT_INTEGER, pa.int64())
    outside = pc.or_(pc.greater(ints, limit), pc.less(ints, pc.negate(limit)))
    return [int(p) for p in np.flatnonzero(bool_mask(outside))]


def _exact_ints(ints: pa.Array, column: str, shown: Callable[[int], Any]) -> Converted:
    """Integers as JSON, those beyond 2**53 refused."""
    errors = {p: problem(column, shown(p), BEYOND_EXACT_RULE) for p in _beyond_exact(ints)}
    return drop(json_ints(ints), errors), errors


def integer_cell(cell: Any) -> tuple[Any, str | None]:
    cell = plain(cell)
    value: int | None = None
    if isinstance(cell, bool):
        return None, "is a boolean, not an integer"
    if isinstance(cell, int):
        value = cell
    elif isinstance(cell, float | Decimal):
        if is_whole(cell):
            value = int(cell)
    elif isinstance(cell, str) and _INTEGER_TEXT.fullmatch(cell.strip()):
        value = int(cell.strip().split(".")[0])
    if value is None:
        return None, "is not an integer"
    if not -MAX_EXACT_INTEGER <= value <= MAX_EXACT_INTEGER:
        return None, BEYOND_EXACT_RULE
    return value, None


def is_whole(value: float | Decimal) -> bool:
    if isinstance(value, Decimal):
        return value.is_finite() and value == value.to_integral_value()
    return math.isfinite(value) and value.is_integer()


def to_number(series: pd.Series, column: str) -> Converted:
    text = text_array(series)
    if text is None:
        native = native_array(series)
        if native is not None and is_int64_compatible(native.type):
            return wrapped(json_ints(native), "", ".0"), {}  # a double, every digit kept
        if native is not None and pa.types.is_floating(native.type):
            floats = shortest_floats(native)
            # A stored NaN means missing, as pandas writes it; infinities stay invalid.
            present = ~null_mask(native) & ~bool_mask(pc.is_nan(floats))
            return _numbers_from_floats(floats, present, lambda p: native[p].as_py(), column)
        return per_unique(series, column, number_cell)
    trimmed = pc.utf8_trim_whitespace(text)
    try:
        floats = pc.cast(trimmed, pa.float64())
    except pa.ArrowInvalid:
        # Some cell is not a number: cast only those that look like one, the rest are invalid.
        looks = pc.match_substring_regex(trimmed, r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
        floats = pc.cast(pc.if_else(looks, trimmed, NULL_TEXT), pa.float64())
    return _numbers_from_floats(floats, ~null_mask(text), lambda p: text[p].as_py(), column)


def _numbers_from_floats(
    floats: pa.Array, present: np.ndarray, shown: Callable[[int], Any], column: str
) -> Converted:
    """Finite values as JSON doubles (whole ones keep a ".0": MoEngage fixes an attribute's
    type from its first value, so a number attribute must never receive an integer); present
    but not finite is invalid."""
    finite = pc.fill_null(pc.is_finite(floats), False)
    text = pc.replace_substring_regex(pc.cast(floats, pa.string()), r"^(-?\d+)$", r"\1.0")
    fragments = pc.if_else(finite, text, NULL_TEXT)
    bad = np.flatnonzero(~bool_mask(finite) & present)
    errors = {int(p): problem(column, shown(int(p)), "is not a number") for p in bad}
    return fragments, errors


def number_cell(cell: Any) -> tuple[Any, str | None]:
    """A finite number as a float (orjson writes 100.0 for a whole one: a JSON double)."""
    cell = plain(cell)
    if isinstance(cell, bool):
        return None, "is a boolean, not a number"
    if isinstance(cell, str):
        cell = cell.strip()
    if not isinstance(cell, int | float | Decimal | str):
        return None, "is not a number"
    try:
        value = float(cell)
    except (ValueError, OverflowError):
        return None, "is not a number"
    if not math.isfinite(value):
        return None, "is not a number"
    return value, None
