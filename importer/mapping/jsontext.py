"""JSON text built in arrow: string literals, integers, and members joined per row."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from importer.mapping.arrow import bool_mask, replace_at

_NEEDS_ESCAPE = r"[\x00-\x1f\"\\]"  # what JSON must escape inside a string


def json_strings(text: pa.Array) -> pa.Array:
    """Text as JSON string literals; only cells holding quotes, backslashes or control
    characters go through orjson, the rest are just quoted."""
    literals = quoted(text)
    if not _may_need_escape(text):
        return literals
    needs = bool_mask(pc.match_substring_regex(text, _NEEDS_ESCAPE))
    escaped = {int(p): orjson.dumps(text[int(p)].as_py()).decode() for p in np.flatnonzero(needs)}
    return replace_at(literals, escaped)


def json_ints(ints: pa.Array) -> pa.Array:
    return pc.cast(pc.cast(ints, pa.int64()), pa.string())


def json_values(values: list[Any]) -> pa.Array:
    """Python values (None = omit) as JSON text."""
    dumps = orjson.dumps
    return pa.array([None if v is None else dumps(v).decode() for v in values], pa.string())


def _may_need_escape(text: pa.Array) -> bool:
    """Whether any byte of the column is one JSON escapes: one numpy pass over the data."""
    _, offsets, data = text.buffers()
    if data is None:
        return False
    bounds = np.frombuffer(offsets, dtype=np.int32)[text.offset : text.offset + len(text) + 1]
    raw = np.frombuffer(data, dtype=np.uint8)[bounds[0] : bounds[-1]]
    return bool(np.any((raw < 0x20) | (raw == ord('"')) | (raw == ord("\\"))))


def wrapped(text: pa.Array, prefix: str, suffix: str) -> pa.Array:
    """prefix + text + suffix, nulls kept (slice replacement is the cheapest concatenation)."""
    end = np.iinfo(np.int32).max
    if suffix:
        text = pc.binary_replace_slice(text, end, end, suffix)
    return pc.binary_replace_slice(text, 0, 0, prefix) if prefix else text


def quoted(text: pa.Array) -> pa.Array:
    """Text known to need no escaping (dates we formatted) as JSON strings."""
    return wrapped(text, '"', '"')


def join_members(members: list[pa.Array]) -> pa.Array:
    """The members of each row joined with commas, omitted (null) ones skipped.

    A constant "" leads the join: with null_handling="skip", pyarrow drops the rows whose
    arguments are all null from the result (misaligning every later row), so no row may be
    all null; the leading comma it adds is then cut off.
    """
    joined = pc.binary_join_element_wise("", *members, ",", null_handling="skip")
    return pc.utf8_slice_codeunits(joined, 1)


def member_texts(names: list[str], fragments: list[pa.Array]) -> list[pa.Array]:
    """`"name":value` for each column, null where the value is omitted."""
    return [
        wrapped(values, orjson.dumps(name).decode() + ":", "")
        for name, values in zip(names, fragments, strict=True)
    ]
