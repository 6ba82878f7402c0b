"""Guessing a Parquet column's attribute type from its native arrow type (text is sniffed)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from importer import moengage
from importer.init.inference import guess_text_column, string_checks
from importer.init.model import Guess
from importer.init.naming import looks_like_identifier


def _list_item_type(item_type: pa.DataType) -> str | None:
    if pa.types.is_integer(item_type):
        return "integer"
    if pa.types.is_floating(item_type) or pa.types.is_decimal(item_type):
        return "number"
    if pa.types.is_string(item_type) or pa.types.is_large_string(item_type):
        return "string"
    return None


def _guess_list_column(name: str, arrow_type: pa.DataType, values: Sequence[Any]) -> Guess:
    items = _list_item_type(arrow_type.value_type)
    if items is None:
        return Guess(
            name, "skip", checks=[f"a list of {arrow_type.value_type}: not a MoEngage type"]
        )
    options = {"items": items} if items != "string" else {}
    longest = max((len(v) for v in values if v is not None), default=0)
    checks = []
    if longest > moengage.MAX_ARRAY_ITEMS:
        checks.append(
            f"a sampled cell has {longest} items; MoEngage takes at most"
            f" {moengage.MAX_ARRAY_ITEMS}, so such rows will be dead-lettered"
        )
    return Guess(name, "array", options, checks)


def _guess_scalar_arrow(name: str, arrow_type: pa.DataType) -> Guess | None:
    """The guess a native scalar type fixes without looking at values (None: not one)."""
    if pa.types.is_boolean(arrow_type):
        return Guess(name, "boolean")
    if pa.types.is_integer(arrow_type):
        if looks_like_identifier(name):
            return Guess(name, checks=["numbers in the file, sent as text because it names an id"])
        return Guess(name, "integer")
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return Guess(name, "number")
    if pa.types.is_timestamp(arrow_type):
        checks = [] if arrow_type.tz else ["timestamps without a time zone are read as UTC"]
        return Guess(name, "datetime", checks=checks)
    if pa.types.is_date(arrow_type):
        return Guess(name, "date")
    return None


def utf8_texts(values: Sequence[Any]) -> list[str] | None:
    """Binary cells as text when every present one is UTF-8 without control characters (how
    Impala and Hive write strings: BYTE_ARRAY without the UTF8 annotation); else None."""
    texts = []
    for value in values:
        if value is None:
            continue
        try:
            text = bytes(value).decode("utf-8")
        except (UnicodeDecodeError, TypeError):
            return None
        if _CONTROL.search(text):
            return None
        texts.append(text)
    return texts


# What marks binary data rather than text (tab and line breaks are text).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _guess_binary_column(name: str, values: Sequence[Any]) -> Guess:
    texts = utf8_texts(values)
    if texts is None:
        return Guess(
            name, "skip", checks=["Parquet binary that is not UTF-8 text: not a MoEngage type"]
        )
    note = "Parquet binary holding UTF-8 text (as Impala and Hive write strings): read as text"
    if not texts:
        note = "Parquet binary with no values in the sample; guessed string (if it is UTF-8 text)"
    return Guess(name, checks=[note, *string_checks(texts)])


def guess_arrow_column(name: str, arrow_type: pa.DataType, values: Sequence[Any]) -> Guess:
    """The attribute type for a Parquet column, from its native type (text is sniffed)."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return guess_text_column(name, values)
    scalar = _guess_scalar_arrow(name, arrow_type)
    if scalar is not None:
        return scalar
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return _guess_binary_column(name, values)
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return _guess_list_column(name, arrow_type, values)
    if pa.types.is_null(arrow_type):
        return Guess(name, checks=["no values in the file; guessed string"])
    return Guess(name, "skip", checks=[f"Parquet type {arrow_type} is not a MoEngage type"])
