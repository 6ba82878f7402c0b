"""Converters for type string, and the control-character rule for text columns."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer import moengage
from importer.mapping.arrow import bool_mask, combined, drop, is_list_type, text_array
from importer.mapping.cells import Converted, per_unique, plain, problem
from importer.mapping.jsontext import json_strings

# In attribute values tab and newlines are data (addresses); other control characters are not.
_VALUE_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
CONTROL_RULE = "holds a control character (NUL and the like)"


def to_string(series: pd.Series, column: str) -> Converted:
    text = text_array(series)
    if text is None:
        return per_unique(series, column, string_cell)
    too_long = bool_mask(pc.greater(pc.utf8_length(text), moengage.MAX_STRING_LENGTH))
    rule = f"is longer than {moengage.MAX_STRING_LENGTH} characters"
    errors = {int(p): problem(column, text[int(p)].as_py(), rule) for p in np.flatnonzero(too_long)}
    return drop(json_strings(text), errors), errors


def string_cell(cell: Any) -> tuple[Any, str | None]:
    cell = plain(cell)
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
