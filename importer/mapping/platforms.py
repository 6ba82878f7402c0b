"""Converter for mapping.platforms: platform names to MoEngage's platform entries."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from importer import moengage
from importer.mapping.arrow import combined, is_list_type
from importer.mapping.cells import Converted, per_cell, per_unique, show

_PLATFORMS = {name.lower(): name for name in moengage.PLATFORM_NAMES}
_PLATFORM_SEPARATORS = re.compile(r"[|,]")
NOT_A_PLATFORM = f"is not a platform ({', '.join(moengage.PLATFORM_NAMES)})"


def platform_entries(names: Iterable[str]) -> tuple[list[dict[str, str]] | None, str | None]:
    """The payload entries for these platform names, or (None, the first unknown name)."""
    entries: list[dict[str, str]] = []
    seen: set[str] = set()
    for name in names:
        name = name.strip()
        if not name:
            continue
        canonical = _PLATFORMS.get(name.lower())
        if canonical is None:
            return None, name
        if canonical not in seen:
            seen.add(canonical)
            entries.append({"platform": canonical, "active": "true"})
    return (entries or None), None


def _platforms_cell(cell: Any) -> tuple[Any, str | None]:
    if isinstance(cell, list | tuple | np.ndarray):
        names = [str(item) for item in cell if item is not None]
    else:
        names = _PLATFORM_SEPARATORS.split(str(cell))
    entries, unknown = platform_entries(names)
    if unknown is None:
        return entries, None
    if isinstance(cell, str) and cell.strip() == unknown:
        return None, NOT_A_PLATFORM
    return None, f"has {show(unknown)}, which {NOT_A_PLATFORM}"


def to_platforms(series: pd.Series, column: str) -> Converted:
    if isinstance(series.dtype, pd.ArrowDtype) and is_list_type(series.dtype.pyarrow_dtype):
        return per_cell(combined(pa.array(series)).to_pylist(), column, _platforms_cell)
    return per_unique(series, column, _platforms_cell)
