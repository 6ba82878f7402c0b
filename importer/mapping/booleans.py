"""Converter for type boolean."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer.mapping.arrow import native_array, text_array
from importer.mapping.cells import Converted, per_unique, plain

_BOOLEANS = {
    "true": True, "false": False, "1": True, "0": False, "yes": True, "no": False,
    "t": True, "f": False, "y": True, "n": False,
}  # fmt: skip


def to_boolean(series: pd.Series, column: str) -> Converted:
    native = None if text_array(series) is not None else native_array(series)
    if native is not None and pa.types.is_boolean(native.type):
        return pc.if_else(native, "true", "false"), {}
    return per_unique(series, column, _boolean_cell)


def _boolean_cell(cell: Any) -> tuple[Any, str | None]:
    cell = plain(cell)
    if isinstance(cell, bool):
        return cell, None
    if isinstance(cell, int) and cell in (0, 1):
        return bool(cell), None
    if isinstance(cell, str):
        value = _BOOLEANS.get(cell.strip().lower())
        if value is not None:
            return value, None
    return None, "is not a boolean"
