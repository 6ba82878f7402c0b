"""In process, issue 25's value rules: ids exact or refused, one rule for big integers, floats
in their own width, binary text, and the vocabulary `init` shares with `run`."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pytest

from importer.config import ConfigError, MappingConfig
from importer.mapping import Mapper
from importer.mapping.booleans import BOOLEAN_WORDS, FALSE_WORDS, TRUE_WORDS, boolean_word
from importer.mapping.numbers import INTEGER_EXAMPLES, INTEGER_PATTERN, MAX_EXACT_INTEGER
from importer.rows import Chunk, MappedChunk, ValidRows


def _mapped(table: pa.Table, mapping: dict[str, Any]) -> MappedChunk:
    frame = table.to_pandas(types_mapper=pd.ArrowDtype)
    frame.index = pd.RangeIndex(1, 1 + len(frame))
    return Mapper(MappingConfig.model_validate(mapping)).map_chunk(Chunk("in.parquet", frame))


def _sent(mapped: MappedChunk) -> dict[str, dict[str, Any]]:
    assert isinstance(mapped.valid, ValidRows)
    elements = [orjson.loads(e) for e in mapped.valid.encoded]
    return {e["customer_id"]: e["attributes"] for e in elements}


def test_float_ids_keep_every_digit_or_are_refused() -> None:
    ids = [2.0**53, 2.0**53 + 2, 7.0, -3.0, 0.5, float("inf")]
    mapped = _mapped(pa.table({"id": pa.array(ids)}), {"customer_id": "id"})
    assert set(_sent(mapped)) == {"9007199254740992", "7", "-3"}
    errors = {bad.row: bad.error for bad in mapped.invalid}
    assert "beyond 2**53" in errors[2] and "fraction" in errors[5] and "finite" in errors[6]
    assert all(bad.customer_id is None for bad in mapped.invalid)  # never a rounded id


def test_float32_ids_are_read_in_their_own_width() -> None:
    mapped = _mapped(
        pa.table({"id": pa.array([16777216.0, 3.0], pa.float32())}), {"customer_id": "id"}
    )
    assert set(_sent(mapped)) == {"16777216", "3"}


@pytest.mark.parametrize("width", [pa.float16(), pa.float32(), pa.float64()])
def test_floats_shortest_for_their_width_as_number_and_string(width: pa.DataType) -> None:
    table = pa.table({"id": ["a", "b", "c"], "f": pa.array([0.1, 2.5, None], width)})
    mapping = {
        "customer_id": "id",
        "attributes": {"n": {"column": "f", "type": "number"}, "s": "f"},
    }
    sent = _sent(_mapped(table, mapping))
    assert sent["a"] == {"n": 0.1, "s": "0.1"}
    assert sent["b"] == {"n": 2.5, "s": "2.5"}
    assert sent["c"] == {}


def test_integer_beyond_2_53_is_refused_from_text_and_native_alike() -> None:
    big = MAX_EXACT_INTEGER + 1
    table = pa.table(
        {
            "id": ["a", "b"],
            "native": pa.array([big, -MAX_EXACT_INTEGER], pa.int64()),
            "text": [str(big), str(-MAX_EXACT_INTEGER)],
            "unsigned": pa.array([2**64 - 1, 1], pa.uint64()),
        }
    )
    attributes = {c: {"column": c, "type": "integer"} for c in ("native", "text", "unsigned")}
    mapped = _mapped(table, {"customer_id": "id", "attributes": {**attributes, "digits": "native"}})
    assert _sent(mapped) == {
        "b": {"native": -MAX_EXACT_INTEGER, "text": -MAX_EXACT_INTEGER, "unsigned": 1,
              "digits": str(-MAX_EXACT_INTEGER)},
    }  # fmt: skip
    [bad] = mapped.invalid
    assert bad.error.count("beyond 2**53") == 3
    assert bad.payload is not None
    assert bad.payload["attributes"] == {"digits": str(big)}  # the string attribute keeps them


def test_binary_columns_holding_utf8_are_text() -> None:
    table = pa.table(
        {"id": pa.array([b"u1"], pa.large_binary()), "c": pa.array([b"Z\xc3\xbcrich"])}
    )
    assert _sent(_mapped(table, {"customer_id": "id", "attributes": {"c": "c"}})) == {
        "u1": {"c": "Zürich"}
    }


def test_a_struct_id_is_named_a_struct() -> None:
    table = pa.table({"id": pa.array([{"k": 1}])})
    [bad] = _mapped(table, {"customer_id": "id"}).invalid
    assert "is a struct (or map), not text" in bad.error


def test_empty_strings_are_never_sent() -> None:
    table = pa.table({"id": ["a"], "s": [""]})
    assert _sent(_mapped(table, {"customer_id": "id", "attributes": {"s": "s"}})) == {"a": {}}


def test_whitespace_attribute_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="only whitespace"):
        Mapper(MappingConfig.model_validate({"customer_id": "id", "attributes": {"  ": "x"}}))


def test_the_shared_vocabulary_is_what_run_accepts() -> None:
    assert set(TRUE_WORDS) | set(FALSE_WORDS) == set(BOOLEAN_WORDS)
    assert {"y", "n", "yes", "no", "1", "0", "t", "f"} <= set(BOOLEAN_WORDS)
    words = [w.upper() for w in BOOLEAN_WORDS]
    table = pa.table({"id": [f"u{i}" for i in range(len(words))], "b": words})
    sent = _sent(
        _mapped(
            table, {"customer_id": "id", "attributes": {"b": {"column": "b", "type": "boolean"}}}
        )
    )
    assert [sent[f"u{i}"]["b"] for i in range(len(words))] == [boolean_word(w) for w in words]
    assert boolean_word(" Y ") is True and boolean_word("maybe") is None
    assert all(re.fullmatch(INTEGER_PATTERN, e) for e in INTEGER_EXAMPLES)
    table = pa.table(
        {"id": [f"u{i}" for i in range(len(INTEGER_EXAMPLES))], "n": list(INTEGER_EXAMPLES)}
    )
    sent = _sent(
        _mapped(
            table, {"customer_id": "id", "attributes": {"n": {"column": "n", "type": "integer"}}}
        )
    )
    assert [sent[f"u{i}"]["n"] for i in range(len(INTEGER_EXAMPLES))] == [
        int(float(e)) for e in INTEGER_EXAMPLES
    ]
