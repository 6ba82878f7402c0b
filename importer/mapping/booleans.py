"""Converter for type boolean, and the boolean vocabulary `init` and the README share.

A native boolean is itself; an integer 0 or 1 is false or true; text is one of TRUE_WORDS or
FALSE_WORDS in any case, surrounding whitespace ignored (Y/N included). Anything else is
invalid."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer.mapping.arrow import native_array, text_array
from importer.mapping.cells import Converted, per_unique, plain

TRUE_WORDS = ("true", "yes", "t", "y", "1")
FALSE_WORDS = ("false", "no", "f", "n", "0")
# Each word (lower case) -> its value.
BOOLEAN_WORDS: dict[str, bool] = {
    **dict.fromkeys(TRUE_WORDS, True),
    **dict.fromkeys(FALSE_WORDS, False),
}


def boolean_word(text: str) -> bool | None:
    """What a text cell means as a boolean (None: not a boolean)."""
    return BOOLEAN_WORDS.get(text.strip().lower())


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
        value = boolean_word(cell)
        if value is not None:
            return value, None
    return None, "is not a boolean"
