"""Arrow helpers: columns as arrow arrays, masks, and replacing values at positions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

NULL_TEXT = pa.scalar(None, pa.string())


def combined(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def text_array(series: pd.Series) -> pa.Array | None:
    """The column as an arrow string array if it holds text (CSV cells, Parquet strings)."""
    dtype = series.dtype
    if isinstance(dtype, pd.ArrowDtype):
        arrow_type = dtype.pyarrow_dtype
        if pa.types.is_dictionary(arrow_type):
            arrow_type = arrow_type.value_type
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            return combined(pc.cast(pa.array(series), pa.string()))
        if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
            return utf8_text(pa.array(series))
        return None
    if pd.api.types.is_object_dtype(dtype) or isinstance(dtype, pd.StringDtype):
        try:
            return pa.array(series, type=pa.string(), from_pandas=True)
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            return None  # an object column of Python values, not text
    return None


def utf8_text(binary: pa.Array | pa.ChunkedArray) -> pa.Array | None:
    """Parquet binary without a UTF8 annotation (as Impala and Hive write strings) as text,
    if every value is valid UTF-8; None otherwise (its cells are then judged one by one)."""
    try:
        return combined(pc.cast(pc.cast(binary, pa.binary()), pa.string()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def shortest_floats(native: pa.Array) -> pa.Array:
    """A float column as float64 holding, for each value, the shortest decimal that reads back
    as it in its own width: float32 1.1 is 1.1, not 1.100000023841858."""
    if pa.types.is_float64(native.type):
        return native
    values = native.to_numpy(zero_copy_only=False)
    texts = pa.array(np.asarray(values).astype(str), pa.string())
    floats = pc.cast(texts, pa.float64())
    return pc.if_else(native.is_null(), pa.scalar(None, pa.float64()), floats)


def object_cells(series: pd.Series) -> list[Any]:
    """The cells as Python objects, missing ones as None."""
    # pandas-stubs has no overload for na_value=None with dtype=object, which pandas supports.
    return series.to_numpy(dtype=object, na_value=None).tolist()  # type: ignore[call-overload,no-any-return]


def native_array(series: pd.Series) -> pa.Array | None:
    """The column as an arrow array of its native type; None for a mixed object column."""
    if isinstance(series.dtype, pd.ArrowDtype):
        return combined(pa.array(series))
    try:
        return combined(pa.array(series, from_pandas=True))
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return None


def is_list_type(arrow_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
        or pa.types.is_fixed_size_list(arrow_type)
    )


def is_int64_compatible(arrow_type: pa.DataType) -> bool:
    return pa.types.is_integer(arrow_type) and not pa.types.is_uint64(arrow_type)


def bool_mask(array: pa.Array) -> np.ndarray:
    """A boolean arrow array as numpy, null counting as False."""
    return np.asarray(array.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def null_mask(array: pa.Array) -> np.ndarray:
    return np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def drop(fragments: pa.Array, positions: Iterable[int]) -> pa.Array:
    """The fragments with the values at `positions` omitted."""
    mask = np.zeros(len(fragments), dtype=bool)
    mask[list(positions)] = True
    if not mask.any():
        return fragments
    return pc.if_else(pa.array(mask), NULL_TEXT, fragments)


def replace_at(fragments: pa.Array, replacements: dict[int, str]) -> pa.Array:
    """The fragments with the JSON text at some positions replaced."""
    if not replacements:
        return fragments
    mask = np.zeros(len(fragments), dtype=bool)
    positions = sorted(replacements)
    mask[positions] = True
    texts = pa.array([replacements[p] for p in positions], pa.string())
    return pc.replace_with_mask(fragments, pa.array(mask), texts)
