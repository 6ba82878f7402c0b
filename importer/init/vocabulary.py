"""What `run` reads as a boolean, an integer or a number, asked of run's own converters.

`init` never keeps a second list of spellings: a value counts as a boolean (Y/N, yes/no, t/f,
1/0, true/false, any case) or an integer (12, +12, 12.0) exactly when `run`'s converter for
that type sends it, so `init` never warns about a value `run` sends, nor the other way round.
The converters live in importer.mapping.booleans and importer.mapping.numbers (the single
reference: change the vocabulary there, and `init` follows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import pandas as pd

from importer.mapping.booleans import to_boolean
from importer.mapping.cells import Converted
from importer.mapping.numbers import integer_cell, number_cell, to_integer, to_number

Vocabulary = Literal["boolean", "integer", "number"]

_COLUMN_CONVERTERS: dict[Vocabulary, Callable[[pd.Series, str], Converted]] = {
    "boolean": to_boolean,
    "integer": to_integer,
    "number": to_number,
}


def accepted(kind: Vocabulary, values: Sequence[str]) -> list[bool]:
    """For each text cell, whether `run` sends it as a `kind` attribute (not dead-lettered)."""
    # Each cell is converted on its own, so asking once per distinct value is the same answer.
    distinct = list(dict.fromkeys(values))
    if not distinct:
        return []
    _fragments, errors = _COLUMN_CONVERTERS[kind](pd.Series(distinct, dtype=object), "sample")
    sent = {value: position not in errors for position, value in enumerate(distinct)}
    return [sent[value] for value in values]


def rejected_count(kind: Vocabulary, values: Sequence[str]) -> int:
    """How many text cells `run` would dead-letter as a `kind` attribute."""
    return accepted(kind, values).count(False)


def item_accepted(kind: Literal["integer", "number"], item: str) -> bool:
    """Whether `run` sends one text item of an array as an `items: kind` item."""
    convert = integer_cell if kind == "integer" else number_cell
    return convert(item)[1] is None
