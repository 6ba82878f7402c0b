"""Warehouse dialects in the mapping package: export datetime forms, local-time rules, doubles,
native list item types, JSON-array cells (unit level; end to end in test_e2e_mapping_dialects)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pytest

from importer.config import ArrayOpSpec, AttributeSpec
from importer.mapping import looks_like_datetime, parse_export_datetime
from importer.mapping.converters import CONVERTERS, array_op_field
from importer.mapping.numbers import to_number
from importer.mapping.temporal import LocalTimeRules, to_date, to_datetime

NEW_YORK = "America/New_York"
UTC = dt.UTC


def sent(fragments: pa.Array) -> list[Any]:
    return [None if text is None else orjson.loads(text) for text in fragments.to_pylist()]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("2024-03-01 12:34:56.789 -0800", "2024-03-01T20:34:56Z"),  # Snowflake
        ("2024-03-01 12:34:56.789000 UTC", "2024-03-01T12:34:56Z"),  # BigQuery
        ("2024-03-01 12:34:56 UTC", "2024-03-01T12:34:56Z"),
        ("2024-03-01 12:34:56.789+00", "2024-03-01T12:34:56Z"),  # Postgres, Redshift
        ("2024-03-01 12:34:56+05:30", "2024-03-01T07:04:56Z"),
        ("2024-03-01T12:34:56.789Z", "2024-03-01T12:34:56Z"),  # Spark, Databricks
        ("2024-03-01T12:34:56.123456789Z", "2024-03-01T12:34:56Z"),  # nanoseconds
        ("2024-03-01 12:34:56.789", "2024-03-01T12:34:56Z"),  # naive: UTC
        ("2024-03-01", "2024-03-01T00:00:00Z"),
    ],
)
def test_export_forms_alone_and_mixed(cell: str, expected: str) -> None:
    # Alone (the fast paths) and beside the other forms (the normalizing path) alike.
    alone, errors = to_datetime(pd.Series([cell], dtype=object), "c", None)
    assert not errors and sent(alone) == [expected]
    mixed = pd.Series([cell, "2024-03-01 00:00:00 -0100", "2024-03-01"], dtype=object)
    fragments, errors = to_datetime(mixed, "c", None)
    assert not errors and sent(fragments)[0] == expected


def test_not_a_datetime_names_the_expected_forms() -> None:
    _, errors = to_datetime(pd.Series(["2024-03-01", "soon"], dtype=object), "c", None)
    assert list(errors) == [1]
    assert "'soon' is not a datetime (expected ISO 8601" in errors[1]
    assert "2024-03-01 12:34:56.789 -0800" in errors[1]


@pytest.mark.parametrize(
    ("rules", "gap", "repeat"),
    [
        (LocalTimeRules(NEW_YORK), None, None),
        (LocalTimeRules(NEW_YORK, "earliest", "shift_backward"), "06:59:59Z", "05:30:00Z"),
        (LocalTimeRules(NEW_YORK, "latest", "shift_forward"), "07:00:00Z", "06:30:00Z"),
    ],
)
def test_local_times_the_clocks_skip_or_repeat(
    rules: LocalTimeRules, gap: str | None, repeat: str | None
) -> None:
    cells = ["2024-03-10 02:30", "2024-11-03 01:30", "2024-07-01 12:00"]
    for series in (
        pd.Series(cells, dtype=object),  # text
        pd.Series(pd.to_datetime(cells)).astype(pd.ArrowDtype(pa.timestamp("us"))),  # native
        pd.Series([dt.datetime.fromisoformat(c) for c in cells], dtype=object),  # Python
    ):
        fragments, errors = to_datetime(series, "c", None, rules)
        values = sent(fragments)
        assert values[2] == "2024-07-01T16:00:00Z"
        if gap is None:
            assert values[:2] == [None, None]
            assert "does not exist in America/New_York" in errors[0]
            assert "occurs twice in America/New_York" in errors[1]
        else:
            assert not errors
            assert values[:2] == [f"2024-03-10T{gap}", f"2024-11-03T{repeat}"]


def test_timezone_applies_to_date_only_values_and_native_dates() -> None:
    rules = LocalTimeRules("Asia/Kolkata")
    text, _ = to_datetime(pd.Series(["2024-03-01"], dtype=object), "c", None, rules)
    native = pd.Series([dt.date(2024, 3, 1)]).astype(pd.ArrowDtype(pa.date32()))
    dates, _ = to_datetime(native, "c", None, rules)
    assert sent(text) == sent(dates) == ["2024-02-29T18:30:00Z"]


@pytest.mark.parametrize(
    "cell",
    [
        "2024-03-01 12:34:56.789 +0000",
        "2024-03-01 23:34:56.789 -0800",
        "2024-03-01 12:34:56.789000 UTC",
        "2024-03-01T12:34:56Z",
        "2024-03-01",
    ],
)
def test_date_reads_what_datetime_reads(cell: str) -> None:
    fragments, errors = to_date(pd.Series([cell], dtype=object), "c", None)
    assert not errors and sent(fragments) == ["2024-03-01T00:00:00Z"]


def test_helpers_for_init() -> None:
    assert looks_like_datetime(["2024-03-01 12:34:56.789 -0800", "", None])
    assert looks_like_datetime(["2024-03-01 12:34:56.789000 UTC", "2024-03-01"])
    assert not looks_like_datetime(["2024-03-01", "12"])
    assert not looks_like_datetime(["", None])
    assert parse_export_datetime("2024-03-01 12:34:56.789 -0800") == dt.datetime(
        2024, 3, 1, 20, 34, 56, 789000, tzinfo=UTC
    )
    assert parse_export_datetime("2024-03-01 12:34:56") == dt.datetime(2024, 3, 1, 12, 34, 56)
    assert parse_export_datetime("nope") is None


def test_number_is_always_a_double() -> None:
    text, _ = to_number(pd.Series(["100.0000", "7", "-0.5", "1e3"], dtype=object), "c")
    assert text.to_pylist() == ["100.0", "7.0", "-0.5", "1000.0"]
    ints, _ = to_number(pd.Series([100, 2**62]), "c")
    assert ints.to_pylist() == ["100.0", f"{2**62}.0"]  # a double literal, every digit kept
    objects, _ = to_number(pd.Series([5, None], dtype=object), "c")
    assert objects.to_pylist() == ["5.0", None]


def test_list_columns_keep_their_item_type_unless_items_says() -> None:
    series = pd.Series(
        pa.chunked_array([pa.array([[1, 2], None], pa.list_(pa.int64()))]),
        dtype=pd.ArrowDtype(pa.list_(pa.int64())),
    )
    native = array_op_field("add_to_array", "lucky", ArrayOpSpec(column="c"))
    as_text = array_op_field("add_to_array", "lucky", ArrayOpSpec(column="c", items="string"))
    assert sent(native.convert(series)[0]) == [[1, 2], None]
    assert sent(as_text.convert(series)[0]) == [["1", "2"], None]


def test_json_separator_reads_json_array_cells() -> None:
    convert, kind = CONVERTERS["array"](AttributeSpec(column="c", type="array", separator="json"))
    cells = pd.Series(['["a", "b"]', "[]", '"a"', "a,b"], dtype=object)
    fragments, errors = convert(cells)
    assert sent(fragments) == [["a", "b"], None, None, None]
    assert sorted(errors) == [2, 3] and "is not a JSON array" in errors[3]
    assert kind == "array of string (separator 'json')"
