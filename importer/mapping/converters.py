"""The converter of each mapped column, chosen from CONVERTERS by the attribute's type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pandas as pd

from importer.config import ArrayOpSpec, AttributeSpec, AttributeType
from importer.mapping.arrays import to_array
from importer.mapping.booleans import to_boolean
from importer.mapping.cells import Converted
from importer.mapping.numbers import to_integer, to_number
from importer.mapping.standard import checked_values
from importer.mapping.temporal import LocalTimeRules, to_date, to_datetime
from importer.mapping.text import to_string
from importer.moengage import catalogue

# A column's converter: the JSON text of its values and the problems found.
ColumnConverter = Callable[[pd.Series], Converted]


@dataclass(frozen=True, slots=True)
class Field:
    """One mapped column: where it goes, where it is configured, how it converts."""

    name: str  # attribute name (or payload key)
    column: str
    key_path: str  # the job-file key naming the column, for errors
    kind: str  # shown by `validate`
    convert: ColumnConverter


# From an attribute's spec, its column's converter and how `validate` shows its type.
ConverterFactory = Callable[[AttributeSpec], tuple[ColumnConverter, str]]


def _string(spec: AttributeSpec) -> tuple[ColumnConverter, str]:
    return partial(to_string, column=spec.column), "string"


def _integer(spec: AttributeSpec) -> tuple[ColumnConverter, str]:
    return partial(to_integer, column=spec.column), "integer"


def _number(spec: AttributeSpec) -> tuple[ColumnConverter, str]:
    return partial(to_number, column=spec.column), "number"


def _boolean(spec: AttributeSpec) -> tuple[ColumnConverter, str]:
    return partial(to_boolean, column=spec.column), "boolean"


def _datetime(spec: AttributeSpec) -> tuple[ColumnConverter, str]:
    rules = LocalTimeRules(spec.timezone, spec.ambiguous or "raise", spec.nonexistent or "raise")
    converter = partial(to_datetime, column=spec.column, fmt=spec.format, rules=rules)
    kind = _with_options(
        "datetime",
        format=spec.format,
        timezone=spec.timezone,
        ambiguous=spec.ambiguous,
        nonexistent=spec.nonexistent,
    )
    return converter, kind


def _date(spec: AttributeSpec) -> tuple[ColumnConverter, str]:
    converter = partial(to_date, column=spec.column, fmt=spec.format, as_text=spec.as_text)
    kind = "date as text" if spec.as_text else "date"
    return converter, _with_options(kind, format=spec.format)


def _array(spec: AttributeSpec | ArrayOpSpec) -> tuple[ColumnConverter, str]:
    # Unless `items` is given, a native list column's items keep their type.
    items = spec.items if "items" in spec.model_fields_set else None
    converter = partial(to_array, column=spec.column, separator=spec.separator, items=items)
    return converter, _with_options(f"array of {spec.items}", separator=spec.separator)


CONVERTERS: dict[AttributeType, ConverterFactory] = {
    "string": _string,
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "datetime": _datetime,
    "date": _date,
    "array": _array,
}


def attribute_field(name: str, spec: AttributeSpec) -> Field:
    converter, kind = CONVERTERS[spec.type](spec)
    standard = catalogue.lookup(name)
    if standard is not None and (standard.enum or standard.shape):
        converter = partial(
            checked_values, convert=converter, standard=standard, column=spec.column
        )
    return Field(name, spec.column, f"mapping.attributes.{name}.column", kind, converter)


def array_op_field(section: str, name: str, spec: ArrayOpSpec) -> Field:
    converter, kind = _array(spec)
    return Field(name, spec.column, f"mapping.{section}.{name}.column", kind, converter)


def _with_options(kind: str, **options: str | None) -> str:
    shown = ", ".join(f"{key} {value!r}" for key, value in options.items() if value is not None)
    return f"{kind} ({shown})" if shown else kind
