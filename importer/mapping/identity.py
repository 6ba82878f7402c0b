"""customer_id: text exactly as written, and the rules an id must meet."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer import moengage
from importer.mapping.arrow import (
    bool_mask,
    native_array,
    null_mask,
    object_cells,
    shortest_floats,
    text_array,
)
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

    Missing, blank or placeholder ids, control characters, and surrounding whitespace (unless
    `strip`) are problems. A float column's ids are exact or refused: a whole value within
    2**53 is sent without ".0"; a fraction, one beyond 2**53 (digits may be lost) or NaN is
    refused. A cell that is no text (a list, a struct, binary that is not UTF-8) is refused
    naming what it is.
    """
    warnings: list[str] = []
    where = f"customer_id (column {column!r})"
    text, refused = _id_text(series, column, warnings)
    trimmed = pc.utf8_trim_whitespace(text)
    if strip:
        text = trimmed
    values = text.to_numpy(zero_copy_only=False).tolist()
    errors = _id_problems(text, trimmed, values, where, strip)
    errors.update({p: f"{where}: {rule}" for p, rule in refused.items()})
    return values, json_strings(text), errors, warnings


def sent_ids(series: pd.Series, strip: bool = False, *, check_lossy: bool = True) -> pa.Array:
    """The column's ids as text, as `customer_ids` sends them (null where none would be):
    what a run's slice is chosen by, before the rest of the row is mapped (without the
    look for lossy '.0' text, which only makes a warning: `check_lossy=False`)."""
    text, _ = _id_text(series, "", [], check_lossy=check_lossy)
    return pc.utf8_trim_whitespace(text) if strip else text


def _id_text(
    series: pd.Series, column: str, warnings: list[str], *, check_lossy: bool = True
) -> tuple[pa.Array, dict[int, str]]:
    """The column's ids as arrow text, as written, and the rule each refused cell broke;
    what looks lossy is added to `warnings`."""
    text = text_array(series)
    if text is not None:
        if check_lossy and pc.any(pc.match_substring_regex(text, r"^[+-]?\d+\.0+$")).as_py():
            warnings.append(
                f"customer_id column {column!r} has whole numbers written with '.0' (a float "
                "column written out by pandas or Spark?); they are sent as written, so '7.0' and "
                "'7' would be two customers: export the column as integer or text (the export is "
                "lossy)"
            )
        return text, {}
    native = native_array(series)
    if native is not None and pa.types.is_integer(native.type):
        return pc.cast(native, pa.string()), {}
    if native is not None and pa.types.is_floating(native.type):
        text, refused = float_ids(native)
        if text.null_count < len(text) or refused:
            warnings.append(
                f"customer_id column {column!r} holds floating-point numbers (an export from "
                "pandas or Spark?): whole values up to 2**53 are sent without '.0'; others are "
                "refused; export it as integer or text (the export is lossy)"
            )
        return text, refused
    return _cell_ids(object_cells(series))


def _cell_ids(cells: list[Any]) -> tuple[pa.Array, dict[int, str]]:
    """Python cells as id text; those that are not text are refused naming what they are."""
    texts: list[str | None] = []
    refused: dict[int, str] = {}
    for position, cell in enumerate(cells):
        text = None if is_missing(cell) else string_cell(cell)[0]
        texts.append(text)
        if text is None and not is_missing(cell):
            refused[position] = f"{show(_shown(cell))} is {_kind(cell)}, not text"
    return pa.array(texts, pa.string()), refused


def _kind(cell: Any) -> str:
    if isinstance(cell, bytes):
        return "binary data that is not UTF-8"
    if isinstance(cell, list | tuple | np.ndarray):
        return "a list"
    if isinstance(cell, dict):
        return "a struct (or map)"
    return f"a {type(cell).__name__} value"


def _shown(cell: Any) -> Any:
    return cell.tolist() if isinstance(cell, np.ndarray) else cell


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


def float_ids(native: pa.Array) -> tuple[pa.Array, dict[int, str]]:
    """A float column's ids: whole values within 2**53 as text without ".0" (a double holds
    each of them exactly); every other present value refused, saying why."""
    floats = shortest_floats(native)
    whole = pc.fill_null(pc.equal(floats, pc.floor(floats)), False)
    exact = pc.fill_null(pc.less_equal(pc.abs(floats), float(2**53)), False)
    kept = pc.and_(pc.and_(whole, exact), pc.is_finite(floats))
    as_int = pc.if_else(kept, floats, pa.scalar(None, pa.float64()))
    text = pc.cast(pc.cast(as_int, pa.int64()), pa.string())
    refused: dict[int, str] = {}
    for position in np.flatnonzero(~bool_mask(kept) & ~null_mask(floats)):
        value = floats[int(position)].as_py()
        refused[int(position)] = f"{show(repr(value))} {_float_rule(value)}"
    return text, refused


def _float_rule(value: float) -> str:
    if math.isnan(value):
        return "is NaN (a float column's missing value)"
    if not math.isfinite(value):
        return "is not a finite number"
    if not value.is_integer():
        return "is a float with a fraction, not an id"
    return (
        "is a float beyond 2**53, where digits may have been lost (two ids can become one); "
        "export the column as integer or text"
    )
