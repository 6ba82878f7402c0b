"""customer_id: text exactly as written, and the rules an id must meet."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer import moengage
from importer.mapping.arrow import bool_mask, native_array, null_mask, object_cells, text_array
from importer.mapping.cells import show
from importer.mapping.jsontext import json_strings
from importer.mapping.text import CONTROL_RULE, string_cell

_PLACEHOLDERS = pa.array(sorted(moengage.PLACEHOLDER_CUSTOMER_IDS | {""}), pa.string())

_ID_CONTROL = r"[\x00-\x1f\x7f]"


def customer_ids(
    series: pd.Series, column: str, strip: bool = False
) -> tuple[list[Any], pa.Array, dict[int, str], list[str]]:
    """customer_id as text exactly as written: (values, JSON text, problems by position,
    warnings for the summary).

    Missing (NaN too), blank or placeholder ids, control characters, and surrounding
    whitespace (unless `strip`) are problems. A float column's whole values lose their ".0".
    """
    warnings: list[str] = []
    text = _id_text(series, column, warnings)
    trimmed = pc.utf8_trim_whitespace(text)
    if strip:
        text = trimmed
    values = text.to_numpy(zero_copy_only=False).tolist()
    errors = _id_problems(text, trimmed, values, f"customer_id (column {column!r})", strip)
    return values, json_strings(text), errors, warnings


def _id_text(series: pd.Series, column: str, warnings: list[str]) -> pa.Array:
    """The column's ids as arrow text, as written; what looks lossy is added to `warnings`."""
    text = text_array(series)
    if text is not None:
        if pc.any(pc.match_substring_regex(text, r"^[+-]?\d+\.0+$")).as_py():
            warnings.append(
                f"customer_id column {column!r} has whole numbers written with '.0' (a float "
                "column written out by pandas or Spark?); they are sent as written, so '7.0' and "
                "'7' would be two customers: export the column as integer or text (the export is "
                "lossy)"
            )
        return text
    native = native_array(series)
    if native is not None and pa.types.is_integer(native.type):
        return pc.cast(native, pa.string())
    if native is not None and pa.types.is_floating(native.type):
        text = _float_ids(native)
        if text.null_count < len(text):
            warnings.append(
                f"customer_id column {column!r} holds floating-point numbers (an export from "
                "pandas or Spark?): whole values are sent without '.0' and missing ones are "
                "invalid, but ids beyond 2**53 may have lost digits; export it as integer "
                "or text (the export is lossy)"
            )
        return text
    cells = object_cells(series)
    return pa.array([None if is_missing(c) else string_cell(c)[0] for c in cells], pa.string())


def _id_problems(
    text: pa.Array, trimmed: pa.Array, values: list[Any], where: str, strip: bool
) -> dict[int, str]:
    """Each position's problem with its id (the last rule that applies wins)."""
    normal = pc.utf8_lower(trimmed)
    placeholder = bool_mask(pc.is_in(normal, value_set=_PLACEHOLDERS))
    errors = {int(p): f"{where} is empty" for p in np.flatnonzero(null_mask(text))}
    control = bool_mask(pc.match_substring_regex(text, _ID_CONTROL))
    for position in np.flatnonzero(control):
        errors[int(position)] = f"{where}: {show(values[position])} {CONTROL_RULE}"
    if not strip:
        padded = bool_mask(pc.not_equal(text, trimmed)) & ~placeholder & ~control
        for position in np.flatnonzero(padded):
            errors[int(position)] = (
                f"{where}: {show(values[position])} has whitespace at its start or end "
                "(set mapping.strip_customer_id: true to remove it)"
            )
    for position in np.flatnonzero(placeholder):
        shown = values[position]
        rule = "is blank" if not shown.strip() else "is a placeholder MoEngage refuses"
        errors[int(position)] = f"{where}: {show(shown)} {rule}"
    for position in np.flatnonzero(bool_mask(pc.is_in(normal, value_set=_MISSING_AS_TEXT))):
        errors[int(position)] = (
            f"{where}: {show(values[position])} is a missing value written out as text"
            " (pandas' NaN / <NA> / NaT)"
        )
    return errors


# What pandas writes for a missing value when an id column is turned into text.
_MISSING_AS_TEXT = pa.array(["nan", "<na>", "nat"], pa.string())


def is_missing(cell: Any) -> bool:
    return cell is None or (isinstance(cell, float) and math.isnan(cell))


def _float_ids(native: pa.Array) -> pa.Array:
    """A float column's ids as text: NaN missing, whole values without ".0"."""
    floats = pc.cast(native, pa.float64())
    present = pc.and_kleene(pc.invert(pc.is_nan(floats)), pc.is_finite(floats))
    floats = pc.if_else(present, floats, pa.scalar(None, pa.float64()))
    whole = pc.fill_null(pc.equal(floats, pc.floor(floats)), False)
    small = pc.fill_null(pc.less(pc.abs(floats), float(2**63)), False)
    as_int = pc.if_else(pc.and_(whole, small), floats, pa.scalar(None, pa.float64()))
    int_text = pc.cast(pc.cast(as_int, pa.int64()), pa.string())
    return pc.coalesce(int_text, pc.cast(floats, pa.string()))
