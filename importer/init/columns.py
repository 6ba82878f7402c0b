"""A guess for every column of the input: text or native type, merged across its files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from importer import moengage
from importer.init.arrow_types import guess_arrow_column
from importer.init.inference import BAD_VALUE_SHARE, guess_text_column
from importer.init.model import Guess, Sample
from importer.sources import SourceFormat


def _guess_sample_column(sample: Sample, name: str) -> Guess:
    if sample.kind == SourceFormat.PARQUET:
        arrow_type = sample.arrow_types.get(name, pa.string())
        guess = guess_arrow_column(name, arrow_type, sample.values[name])
        if name in sample.unreadable and guess.type != "skip":
            # Typed by its type alone, but the sample could not be read: do not guess past it.
            guess = Guess(name, "skip", checks=[f"not typed: {sample.unreadable[name]}"])
        return guess
    return guess_text_column(name, sample.values[name], sample.delimiter)


def _guess_safely(sample: Sample, name: str) -> Guess:
    """One column's guess; a failure there skips that column (saying why), never all of init."""
    if not name.strip():  # no attribute can be named after it, and validate refuses one
        note = "the header names this column with whitespace only: name it in the export"
        return Guess(name, "skip", checks=[note])
    try:
        if _platform_cells(sample.values[name]):
            return Guess(name, "platforms")
        return _guess_sample_column(sample, name)
    except Exception as error:  # any failure typing one column skips only that column
        # The exception's text may quote a cell (personal data): only its kind is shown.
        note = f"not typed: init failed reading its values ({type(error).__name__})"
        return Guess(name, "skip", checks=[note])


def _merge(first: Guess, second: Guess) -> Guess:
    """One guess for a column seen in a CSV and a Parquet file of the same input."""
    if first.type == second.type:
        options = {**second.options, **first.options}  # a CSV's separator still applies to text
        return Guess(first.column, first.type, options, first.checks + second.checks)
    if {first.type, second.type} == {"integer", "number"}:
        return Guess(first.column, "number", checks=first.checks + second.checks)
    note = f"the files disagree ({first.type} / {second.type}); guessed string"
    return Guess(first.column, checks=[note])


def _platform_cells(values: Sequence[Any]) -> bool:
    present = [v for v in values if v is not None]
    others = sum(1 for v in present if v not in moengage.PLATFORM_NAMES)
    return bool(present) and others <= int(len(present) * BAD_VALUE_SHARE)


def guess_columns(samples: Sequence[Sample]) -> dict[str, Guess]:
    """A guess for every column of the input, in the order the first file has them."""
    guesses: dict[str, Guess] = {}
    for sample in samples:
        for name in sample.columns:
            guess = _guess_safely(sample, name)
            guesses[name] = _merge(guesses[name], guess) if name in guesses else guess
    return guesses


def placeholder_count(samples: Sequence[Sample], column: str) -> tuple[int, int]:
    """How many sampled values of `column` are empty or placeholders, and of how many."""
    values = [v for s in samples if column in s.values for v in s.values[column]]
    refused = sum(
        1
        for v in values
        if v is None
        or not str(v).strip()
        or str(v).strip().lower() in moengage.PLACEHOLDER_CUSTOMER_IDS
    )
    return refused, len(values)
