"""Converters for type string, and the control-character rule for text columns."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer import moengage
from importer.mapping.arrow import (
    NULL_TEXT,
    bool_mask,
    combined,
    drop,
    is_list_type,
    native_array,
    shortest_floats,
    text_array,
)
from importer.mapping.cells import Converted, per_unique, plain, problem
from importer.mapping.jsontext import json_strings

# In attribute values tab and newlines are data (addresses); other control characters are not.
_VALUE_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
CONTROL_RULE = "holds a control character (NUL and the like)"


def to_string(series: pd.Series, column: str) -> Converted:
    text = text_array(series)
    if text is None:
        native = native_array(series)
        if native is not None and pa.types.is_floating(native.type):
            return _float_strings(native, column)
        return per_unique(series, column, string_cell)
    too_long = bool_mask(pc.greater(pc.utf8_length(text), moengage.MAX_STRING_LENGTH))
    rule = f"is longer than {moengage.MAX_STRING_LENGTH} characters"
    errors = {int(p): problem(column, text[int(p)].as_py(), rule) for p in np.flatnonzero(too_long)}
    empty = pc.equal(text, "")  # `""` is never sent: an empty string is missing
    return drop(json_strings(pc.if_else(empty, NULL_TEXT, text)), errors), errors


def _float_strings(native: pa.Array, column: str) -> Converted:
    """A float column as text: the shortest decimal for its width, whole values without
    ".0"; NaN is missing (as pandas writes it), an infinity is invalid: neither is sent."""
    floats = shortest_floats(native)
    finite = pc.fill_null(pc.is_finite(floats), False)
    whole = pc.and_(
        pc.fill_null(pc.equal(floats, pc.floor(floats)), False),
        pc.fill_null(pc.less_equal(pc.abs(floats), float(2**53)), False),
    )
    as_int = pc.cast(pc.if_else(whole, floats, pa.scalar(0.0)), pa.int64())
    text = pc.if_else(whole, pc.cast(as_int, pa.string()), pc.cast(floats, pa.string()))
    infinite = bool_mask(pc.is_inf(floats))
    errors = {
        int(p): problem(column, str(floats[int(p)].as_py()), "is not a finite number")
        for p in np.flatnonzero(infinite)
    }
    return json_strings(pc.if_else(finite, text, NULL_TEXT)), errors


def string_cell(cell: Any) -> tuple[Any, str | None]:
    cell = plain(cell)
    if isinstance(cell, bytes):
        try:
            cell = cell.decode("utf-8")
        except UnicodeDecodeError:
            return None, "is binary data, not UTF-8 text"
    if isinstance(cell, float) and not math.isfinite(cell):
        return None, "is not a finite number"
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


def control_problems(series: pd.Series, column: str) -> dict[int, str]:
    """Cells of a text column that hold control characters (list items too)."""
    text = text_array(series)
    if text is not None:
        found = bool_mask(pc.match_substring_regex(text, _VALUE_CONTROL))
        return {
            int(p): problem(column, text[int(p)].as_py(), CONTROL_RULE)
            for p in np.flatnonzero(found)
        }
    if isinstance(series.dtype, pd.ArrowDtype) and is_list_type(series.dtype.pyarrow_dtype):
        lists = combined(pa.array(series))
        items = pc.list_flatten(lists)
        if not (pa.types.is_string(items.type) or pa.types.is_large_string(items.type)):
            return {}
        found = bool_mask(pc.match_substring_regex(items, _VALUE_CONTROL))
        if not found.any():
            return {}
        parents = pc.list_parent_indices(lists).to_numpy()
        return {
            int(parents[p]): problem(
                column, items[int(p)].as_py(), "has an item that " + CONTROL_RULE
            )
            for p in np.flatnonzero(found)
        }
    return {}
