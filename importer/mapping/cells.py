"""Python conversion once per distinct value (per cell for lists); how problems show values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from importer.mapping.jsontext import json_values

# The JSON text of one mapped column's values (null = omit) and its problems by row position.
Converted = tuple[pa.Array, dict[int, str]]
# Converts one distinct cell value: (value, None) or (None, the rule it broke).
CellConverter = Callable[[Any], tuple[Any, str | None]]
SHOWN_VALUE_CHARS = 40


def show(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if len(text) > SHOWN_VALUE_CHARS:
        text = text[: SHOWN_VALUE_CHARS - 1] + "…"
    return repr(text)


def problem(column: str, value: Any, rule: str) -> str:
    return f"column {column!r}: {show(value)} {rule}"


def per_unique(series: pd.Series, column: str, convert: CellConverter) -> Converted:
    """Apply `convert` once per distinct cell and spread the JSON of the results over the rows."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    texts: list[str | None] = []
    broken: dict[int, str] = {}
    for code, cell in enumerate(uniques):
        value, rule = convert(cell)
        texts.append(None if value is None else orjson.dumps(value).decode())
        if rule is not None:
            broken[code] = problem(column, cell, rule)
    fragments = pa.array(texts, pa.string()).take(pa.array(codes, mask=codes < 0))
    errors: dict[int, str] = {}
    if broken:
        for position in np.flatnonzero(np.isin(codes, list(broken))):
            errors[int(position)] = broken[int(codes[position])]
    return fragments, errors


def per_cell(cells: list[Any], column: str, convert: CellConverter) -> Converted:
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
            errors[position] = problem(column, cell, rule)
    return json_values(values), errors


def plain(value: Any) -> Any:
    """A native cell as a plain Python value (numpy scalars unwrapped)."""
    return value.item() if isinstance(value, np.generic) else value
