"""Converters for type array and for add_to_array / remove_from_array.

A native list column keeps its item type unless `items:` says otherwise (list<int64> sends
integers). Text is split on `separator`; `separator: json` reads each cell as a JSON array;
without a separator, text that is a JSON array (`["a","b"]`) is parsed, other text is a
one-item array. Empty and missing items are dropped.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from importer import moengage
from importer.config import ItemType
from importer.mapping.arrow import combined, is_list_type, object_cells, text_array
from importer.mapping.cells import CellConverter, Converted, per_cell, per_unique, plain, show
from importer.mapping.numbers import integer_cell, number_cell
from importer.mapping.text import string_cell

# separator: json reads each text cell as a JSON array (a Snowflake or BigQuery ARRAY export).
JSON_SEPARATOR = "json"


def to_array(
    series: pd.Series, column: str, separator: str | None, items: ItemType | None
) -> Converted:
    """`items` None: the items as the column holds them (a list<int64> column's as integers,
    a list<double>'s as numbers), text as strings."""
    if isinstance(series.dtype, pd.ArrowDtype) and is_list_type(series.dtype.pyarrow_dtype):
        kind = items or _native_item_type(series.dtype.pyarrow_dtype.value_type)
        cells = combined(pa.array(series)).to_pylist()
        convert_item = _ITEM_CONVERTERS[kind]
        return per_cell(cells, column, partial(_items_cell, convert_item=convert_item))
    convert_item = _ITEM_CONVERTERS[items or "string"]
    if text_array(series) is None:  # Python lists or scalars in an object column
        cells = object_cells(series)
        return per_cell(cells, column, partial(_items_cell, convert_item=convert_item))
    return per_unique(
        series, column, partial(_array_text_cell, separator=separator, convert_item=convert_item)
    )


def _native_item_type(value_type: pa.DataType) -> ItemType:
    if pa.types.is_integer(value_type):
        return "integer"
    if pa.types.is_floating(value_type) or pa.types.is_decimal(value_type):
        return "number"
    return "string"


def _array_text_cell(
    cell: str, separator: str | None, convert_item: CellConverter
) -> tuple[Any, str | None]:
    if separator == JSON_SEPARATOR or (separator is None and cell.lstrip().startswith("[")):
        try:
            parts = orjson.loads(cell)
        except orjson.JSONDecodeError:
            return None, "is not a JSON array"
        if not isinstance(parts, list):
            return None, "is not a JSON array"
    elif separator is not None:
        parts = cell.split(separator)
    else:
        parts = [cell]
    return _items_cell(parts, convert_item)


def _items_cell(cell: Any, convert_item: CellConverter) -> tuple[Any, str | None]:
    """A list of items, checked and converted; empty and missing items are dropped."""
    raw = list(cell) if isinstance(cell, list | tuple | np.ndarray) else [cell]
    result: list[Any] = []
    for item in raw:
        item = plain(item)
        if isinstance(item, str):
            item = item.strip()
            if not item:
                continue
        elif item is None or (isinstance(item, float) and math.isnan(item)):
            continue
        value, rule = convert_item(item)
        if rule is not None:
            return None, f"has an item {show(item)} that {rule}"
        result.append(value)
    if len(result) > moengage.MAX_ARRAY_ITEMS:
        return None, f"has {len(result)} items; an array holds at most {moengage.MAX_ARRAY_ITEMS}"
    return (result or None), None


def _string_item(item: Any) -> tuple[Any, str | None]:
    if isinstance(item, str):
        if len(item) > moengage.MAX_ARRAY_ITEM_LENGTH:
            return None, f"is longer than {moengage.MAX_ARRAY_ITEM_LENGTH} characters"
        return item, None
    return string_cell(item)


_ITEM_CONVERTERS: dict[ItemType, CellConverter] = {
    "string": _string_item,
    "integer": integer_cell,
    "number": number_cell,
}
