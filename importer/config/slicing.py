"""`slice: "K/N"` (and `run --slice K/N`): which customer-hash slice of N a run handles."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

_SLICE = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
# A slice count past this is a typo, not a plan (each slice reads the whole input).
MAX_SLICES = 1024


def parse_slice(text: str) -> tuple[int, int]:
    """(K, N) of "K/N", K from 0 to N-1 as Kubernetes and Airflow number their tasks;
    a ValueError saying what is wrong otherwise."""
    match = _SLICE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not K/N (e.g. 0/4: the first of 4 slices)")
    k, n = int(match.group(1)), int(match.group(2))
    if not 1 <= n <= MAX_SLICES:
        raise ValueError(f"{text!r}: N must be from 1 to {MAX_SLICES}")
    if k >= n:
        raise ValueError(f"{text!r}: K counts from 0 to N-1 (0/{n} to {n - 1}/{n})")
    return k, n


def slice_text(value: Any) -> Any:
    """The job key's value normalised to "K/N" (a pydantic before-validator)."""
    if isinstance(value, str):
        k, n = parse_slice(value)
        return f"{k}/{n}"
    if value is not None:
        raise ValueError('must be a string "K/N", e.g. "0/4"')
    return value


def slice_problems(slice_: str | None, customer_id: str | None) -> Iterator[str]:
    if slice_ is not None and customer_id is None:
        yield (
            "slice: an Identity Resolution job (no mapping.customer_id) cannot be sliced: "
            "slices are made by the hash of customer_id"
        )
