"""Mapping: each type's conversions, the row rules, and native Parquet types without loss."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from importer import moengage
from importer.config import ConfigError, MappingConfig, SourceConfig
from importer.mapping import Mapper
from importer.rows import Chunk, InvalidRow, MappedChunk, Row
from importer.sources import iter_chunks

OMITTED = object()


class Invalid:
    def __init__(self, *fragments: str) -> None:
        self.fragments = fragments


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def map_file(path: Path, mapping: dict[str, Any], **mapper_options: Any) -> MappedChunk:
    mapper = Mapper(MappingConfig.model_validate(mapping), **mapper_options)
    result = MappedChunk(source=str(path), rows_read=0)
    valid: list[Row] = []
    for chunk in iter_chunks(path, SourceConfig(chunk_rows=3), mapper.columns):
        mapped = mapper.map_chunk(chunk)
        result.rows_read += mapped.rows_read
        valid += mapped.valid
        result.invalid += mapped.invalid
    result.valid = valid
    return result


def payload_of(invalid: InvalidRow) -> dict[str, Any]:
    assert invalid.payload is not None
    return invalid.payload


def map_cells(tmp_path: Path, spec: Any, cells: list[str]) -> MappedChunk:
    path = write_csv(tmp_path / "in.csv", ["id", "v"], [[f"u{i}", c] for i, c in enumerate(cells)])
    return map_file(path, {"customer_id": "id", "attributes": {"a": spec}})


def check_outcome(mapped: MappedChunk, expected: Any) -> None:
    assert mapped.rows_read == 1
    if isinstance(expected, Invalid):
        assert not mapped.valid, mapped.valid[0].element
        error = mapped.invalid[0].error
        for fragment in expected.fragments:
            assert fragment in error
        assert "a" not in payload_of(mapped.invalid[0])["attributes"]
        return
    assert not mapped.invalid, mapped.invalid[0].error
    row = mapped.valid[0]
    assert orjson.loads(row.encoded) == row.element
    attributes = row.element["attributes"]
    if expected is OMITTED:
        assert "a" not in attributes
    else:
        assert attributes["a"] == expected
        assert type(attributes["a"]) is type(expected)


TYPE_CASES = [
    ("string", "Berlin", "Berlin"),
    ("string", "  spaced  ", "  spaced  "),
    ("string", "NA", "NA"),
    ("string", "null", "null"),
    ("string", "None", "None"),
    ("string", 'say "hi"\\ now', 'say "hi"\\ now'),
    ("string", "x" * 512, "x" * 512),
    ("string", "x" * 513, Invalid("'v'", "xxx…'", "longer than 512")),
    ("string", "", OMITTED),
    ({"type": "integer"}, "20", 20),
    ({"type": "integer"}, "-3", -3),
    ({"type": "integer"}, "+7", 7),
    ({"type": "integer"}, "20.0", 20),
    ({"type": "integer"}, " 42 ", 42),
    ({"type": "integer"}, "9007199254740992", 9007199254740992),
    ({"type": "integer"}, "-9007199254740992", -9007199254740992),
    ({"type": "integer"}, "9007199254740993", Invalid("beyond 2**53")),
    ({"type": "integer"}, "9223372036854775807", Invalid("beyond 2**53")),
    ({"type": "integer"}, "9223372036854775808", Invalid("beyond 2**53")),
    ({"type": "integer"}, "12.0", 12),
    ({"type": "boolean"}, "Y", True),
    ({"type": "boolean"}, " n ", False),
    ({"type": "integer"}, "2.5", Invalid("'2.5' is not an integer")),
    ({"type": "integer"}, "1e3", Invalid("'1e3' is not an integer")),
    ({"type": "integer"}, "abc", Invalid("'abc' is not an integer")),
    ({"type": "integer"}, "", OMITTED),
    ({"type": "number"}, "2.5", 2.5),
    ({"type": "number"}, "20", 20.0),  # always a JSON double
    ({"type": "number"}, "20.0", 20.0),
    ({"type": "number"}, "100.0000", 100.0),
    ({"type": "number"}, "-0.125", -0.125),
    ({"type": "number"}, "1e3", 1000.0),
    ({"type": "number"}, "nan", Invalid("'nan' is not a number")),
    ({"type": "number"}, "inf", Invalid("'inf' is not a number")),
    ({"type": "number"}, "twelve", Invalid("'twelve' is not a number")),
    ({"type": "boolean"}, "true", True),
    ({"type": "boolean"}, "FALSE", False),
    ({"type": "boolean"}, "1", True),
    ({"type": "boolean"}, "0", False),
    ({"type": "boolean"}, "Yes", True),
    ({"type": "boolean"}, "no", False),
    ({"type": "boolean"}, "t", True),
    ({"type": "boolean"}, "F", False),
    ({"type": "boolean"}, "maybe", Invalid("'maybe' is not a boolean")),
    ({"type": "boolean"}, "", OMITTED),
    ({"type": "datetime"}, "2024-01-31T10:00:00Z", "2024-01-31T10:00:00Z"),
    ({"type": "datetime"}, "2024-01-31T10:00:00+02:00", "2024-01-31T08:00:00Z"),
    ({"type": "datetime"}, "2024-01-31 10:00:00", "2024-01-31T10:00:00Z"),
    ({"type": "datetime"}, "2024-01-31T10:00:00.987", "2024-01-31T10:00:00Z"),
    ({"type": "datetime"}, "2024-01-31", "2024-01-31T00:00:00Z"),
    ({"type": "datetime"}, "31/31/2024", Invalid("'31/31/2024' is not a datetime")),
    ({"type": "datetime", "format": "%d/%m/%Y %H:%M"}, "31/01/2024 10:30", "2024-01-31T10:30:00Z"),
    (
        {"type": "datetime", "timezone": "Europe/Berlin"},
        "2024-07-01 12:00:00",
        "2024-07-01T10:00:00Z",
    ),
    (
        {"type": "datetime", "timezone": "Europe/Berlin"},
        "2024-07-01T12:00:00Z",
        "2024-07-01T12:00:00Z",
    ),
    # Dates go as midnight UTC date-times, the only date form MoEngage documents.
    ({"type": "date"}, "2024-01-31", "2024-01-31T00:00:00Z"),
    ({"type": "date", "as_text": True}, "2024-01-31", "2024-01-31"),
    ({"type": "date"}, "2024-01-31T23:30:00-05:00", "2024-01-31T00:00:00Z"),
    ({"type": "date", "as_text": True}, "2024-01-31T23:30:00-05:00", "2024-01-31"),
    ({"type": "date"}, "2024-01-31 10:00:00", "2024-01-31T00:00:00Z"),
    ({"type": "date"}, "2024-01-31T10:00:00.987Z", "2024-01-31T00:00:00Z"),
    ({"type": "date"}, " 2024-01-31 ", "2024-01-31T00:00:00Z"),
    ({"type": "date"}, "2024-02-30", Invalid("'2024-02-30' is not a date")),
    ({"type": "date", "format": "%d.%m.%Y"}, "31.01.2024", "2024-01-31T00:00:00Z"),
    ({"type": "date", "format": "%d.%m.%Y"}, "2024-01-31", Invalid("is not a date in the format")),
    ({"type": "array", "separator": "|"}, "a| b ||c", ["a", "b", "c"]),
    ({"type": "array", "separator": "|"}, " | ", OMITTED),
    ({"type": "array", "separator": "|", "items": "integer"}, "1|2", [1, 2]),
    (
        {"type": "array", "separator": "|", "items": "integer"},
        "1|x",
        Invalid("item 'x'", "integer"),
    ),
    ({"type": "array", "separator": "|", "items": "number"}, "1.5|2", [1.5, 2.0]),
    ({"type": "array"}, '["a", "b"]', ["a", "b"]),
    ({"type": "array"}, "just one", ["just one"]),
    ({"type": "array"}, "[broken", Invalid("not a JSON array")),
    ({"type": "array", "separator": "|"}, "|".join(["t"] * 50), ["t"] * 50),
    ({"type": "array", "separator": "|"}, "|".join(["t"] * 51), Invalid("51 items", "at most 50")),
    ({"type": "array", "separator": "|"}, "ok|" + "y" * 513, Invalid("longer than 512")),
]


@pytest.mark.parametrize(("spec", "cell", "expected"), TYPE_CASES)
def test_type_conversion(tmp_path: Path, spec: Any, cell: str, expected: Any) -> None:
    spec = {"column": "v", **spec} if isinstance(spec, dict) else {"column": "v", "type": spec}
    check_outcome(map_cells(tmp_path, spec, [cell]), expected)


def test_an_integer_column_with_empty_cells_sends_integers(tmp_path: Path) -> None:
    mapped = map_cells(tmp_path, {"column": "v", "type": "integer"}, ["20", "", "7"])
    assert b'"a":20}' in mapped.valid[0].encoded
    assert [r.element["attributes"].get("a") for r in mapped.valid] == [20, None, 7]


def test_rows_with_every_attribute_omitted_stay_aligned(tmp_path: Path) -> None:
    cells = ["x", "", "", "y", ""]
    mapped = map_cells(tmp_path, {"column": "v"}, cells)
    assert [(r.row, r.customer_id, r.element["attributes"]) for r in mapped.valid] == [
        (1, "u0", {"a": "x"}),
        (2, "u1", {}),
        (3, "u2", {}),
        (4, "u3", {"a": "y"}),
        (5, "u4", {}),
    ]


CUSTOMER_ID_CASES = [
    ("00123", "00123", None),
    ("+4915", "+4915", None),
    ("guest", None, "'guest' is a placeholder"),
    ("  Unknown ", None, "placeholder"),
    ("N/A", None, "placeholder"),
    ("0", None, "placeholder"),
    ("   ", None, "is blank"),
    ("", None, "customer_id (column 'id') is empty"),
]


@pytest.mark.parametrize(("cell", "sent", "reason"), CUSTOMER_ID_CASES)
def test_customer_id(tmp_path: Path, cell: str, sent: str | None, reason: str | None) -> None:
    path = write_csv(tmp_path / "in.csv", ["id", "name"], [[cell, "Ann"]])
    mapped = map_file(path, {"customer_id": "id", "attributes": {"name": "name"}})
    if reason is None:
        assert mapped.valid[0].customer_id == sent
        assert mapped.valid[0].element["customer_id"] == sent
    else:
        assert not mapped.valid
        assert reason in mapped.invalid[0].error
        assert mapped.invalid[0].record == {"id": cell or None, "name": "Ann"}


def test_empty_cells_are_omitted_and_na_is_text(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "in.csv",
        ["id", "country", "city", "points"],
        [["u1", "NA", "", ""], ["u2", "null", "Paris", "3"]],
    )
    mapping = {
        "customer_id": "id",
        "attributes": {
            "country": "country",
            "city": "city",
            "points": {"column": "points", "type": "integer"},
        },
    }
    mapped = map_file(path, mapping)
    assert [r.element["attributes"] for r in mapped.valid] == [
        {"country": "NA"},
        {"country": "null", "city": "Paris", "points": 3},
    ]
    for row in mapped.valid:
        assert b"NaN" not in row.encoded and b"null" not in row.encoded.replace(b'"null"', b"")


PLATFORM_CASES = [
    ("android", [{"platform": "ANDROID", "active": "true"}]),
    ("IOS|Web", [{"platform": "iOS", "active": "true"}, {"platform": "web", "active": "true"}]),
    ("web, web", [{"platform": "web", "active": "true"}]),
    ("", OMITTED),
    ("Windows", Invalid("'Windows' is not a platform (ANDROID, iOS, web)")),
    ("iOS|Windows", Invalid("has 'Windows', which is not a platform")),
]


@pytest.mark.parametrize(("cell", "expected"), PLATFORM_CASES)
def test_platforms_column(tmp_path: Path, cell: str, expected: Any) -> None:
    path = write_csv(tmp_path / "in.csv", ["id", "p"], [["u1", cell]])
    mapped = map_file(path, {"customer_id": "id", "platforms": {"column": "p"}})
    if isinstance(expected, Invalid):
        assert expected.fragments[0] in mapped.invalid[0].error
    elif expected is OMITTED:
        assert "platforms" not in mapped.valid[0].element["attributes"]
    else:
        assert mapped.valid[0].element["attributes"]["platforms"] == expected


def test_platforms_constant_and_unknown_constant(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["id"], [["u1"], ["u2"]])
    mapped = map_file(path, {"customer_id": "id", "platforms": ["ANDROID", "web"]})
    assert [r.element["attributes"]["platforms"][1]["platform"] for r in mapped.valid] == [
        "web"
    ] * 2
    # The Mapper applies the job file's rule (config.check_mapping_rules), worded once.
    with pytest.raises(ConfigError, match=r"mapping\.platforms\.values\[0\]: 'Symbian'"):
        Mapper(MappingConfig.model_validate({"customer_id": "id", "platforms": ["Symbian"]}))
    with pytest.raises(ConfigError, match=r"'android' is not a platform; write it as ANDROID"):
        Mapper(MappingConfig.model_validate({"customer_id": "id", "platforms": ["android"]}))


def test_add_and_remove_from_array(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "in.csv", ["id", "add", "drop"], [["u1", "a|b", ""], ["u2", "", ""]]
    )
    mapping = {
        "customer_id": "id",
        "add_to_array": {"tags": {"column": "add", "separator": "|"}},
        "remove_from_array": {"old": {"column": "drop", "separator": "|"}},
    }
    mapped = map_file(path, mapping)
    assert mapped.valid[0].element["attributes"] == {
        moengage.ADD_TO_ARRAY_KEY: {"tags": ["a", "b"]}
    }
    assert mapped.valid[1].element["attributes"] == {}


IDENTIFIER_CASES = [
    (["+4915000", ""], True),
    (["", "a@example.com"], True),
    (["", ""], False),
]


@pytest.mark.parametrize(("cells", "valid"), IDENTIFIER_CASES)
def test_identity_resolution_needs_an_identifier(
    tmp_path: Path, cells: list[str], valid: bool
) -> None:
    path = write_csv(tmp_path / "in.csv", ["mobile", "email"], [cells])
    mapping = {
        "attributes": {"moe_mobile": "mobile", "email": "email"},
        "identifiers": ["moe_mobile", "email"],
    }
    mapped = map_file(path, mapping)
    if valid:
        assert "customer_id" not in mapped.valid[0].element
        assert mapped.valid[0].customer_id is None
    else:
        assert "none of the identifiers (moe_mobile, email)" in mapped.invalid[0].error
        assert "customer_id" not in payload_of(mapped.invalid[0])


def test_identity_resolution_without_identifiers_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"mapping\.customer_id"):
        Mapper(MappingConfig.model_validate({"attributes": {"a": "a"}}))


def test_element_too_large_is_invalid(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["id", "bio"], [["u1", "x" * 300], ["u2", "short"]])
    mapped = map_file(
        path, {"customer_id": "id", "attributes": {"bio": "bio"}}, max_element_bytes=200
    )
    assert [r.row for r in mapped.valid] == [2]
    assert mapped.invalid[0].row == 1
    assert "element is" in mapped.invalid[0].error and "at most 200" in mapped.invalid[0].error
    assert payload_of(mapped.invalid[0])["attributes"]["bio"] == "x" * 300


def test_several_problems_are_joined_and_payload_keeps_good_attributes(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["id", "n", "b", "c"], [["u1", "2.5", "maybe", "Rome"]])
    mapping = {
        "customer_id": "id",
        "attributes": {
            "n": {"column": "n", "type": "integer"},
            "b": {"column": "b", "type": "boolean"},
            "city": "c",
        },
    }
    invalid = map_file(path, mapping).invalid[0]
    assert invalid.error == (
        "column 'n': '2.5' is not an integer; column 'b': 'maybe' is not a boolean"
    )
    assert invalid.payload == {
        "type": "customer",
        "customer_id": "u1",
        "attributes": {"city": "Rome"},
        "update_existing_only": False,
    }
    assert invalid.record == {"id": "u1", "n": "2.5", "b": "maybe", "c": "Rome"}
    assert invalid.row == 1 and invalid.customer_id == "u1"


def test_escaping_matches_orjson(tmp_path: Path) -> None:
    tricky = ['quote " here', "back\\slash", "tab\there", "line\nbreak", "ünïcødé ✓"]
    path = write_csv(tmp_path / "in.csv", ["id", "t"], [[f"u{i}", t] for i, t in enumerate(tricky)])
    mapped = map_file(path, {"customer_id": "id", "attributes": {"t": "t"}})
    assert [orjson.loads(r.encoded)["attributes"]["t"] for r in mapped.valid] == tricky


def test_update_existing_only_and_key_order(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["id", "a"], [["u1", "x"]])
    mapped = map_file(
        path, {"customer_id": "id", "update_existing_only": True, "attributes": {"a": "a"}}
    )
    expected = moengage.customer_element("u1", {"a": "x"}, True)
    assert mapped.valid[0].encoded == orjson.dumps(expected)


def test_check_columns_names_key_file_and_close_matches() -> None:
    mapper = Mapper(
        MappingConfig.model_validate(
            {
                "customer_id": "user_id",
                "attributes": {"points": {"column": "loyalty_pts", "type": "integer"}},
            }
        )
    )
    with pytest.raises(ConfigError) as caught:
        mapper.check_columns(["user_id", "loyalty_points", "email"], "data/users.csv")
    message = str(caught.value)
    assert "mapping.attributes.points.column" in message
    assert "'loyalty_pts'" in message and "data/users.csv" in message
    assert "did you mean 'loyalty_points'" in message
    mapper.check_columns(["user_id", "loyalty_pts"], "ok.csv")


def test_columns_and_describe() -> None:
    mapping = {
        "customer_id": "uid",
        "attributes": {
            "name": "name",
            "seen": {"column": "seen", "type": "datetime", "timezone": "Europe/Berlin"},
        },
        "add_to_array": {"tags": {"column": "new_tags", "separator": "|"}},
        "platforms": {"column": "name"},
    }
    mapper = Mapper(MappingConfig.model_validate(mapping))
    assert mapper.columns == ["uid", "name", "seen", "new_tags"]
    assert mapper.describe() == [
        ("customer_id", "uid", "customer_id"),
        ("name", "name", "string"),
        ("seen", "seen", "datetime (timezone 'Europe/Berlin')"),
        ("addValueToArrayField.tags", "new_tags", "array of string (separator '|')"),
        ("platforms", "name", "platforms"),
    ]


def test_unknown_timezone_is_a_config_error() -> None:
    mapping = {
        "customer_id": "id",
        "attributes": {"t": {"column": "t", "type": "datetime", "timezone": "Mars/Olympus"}},
    }
    with pytest.raises(ConfigError, match=r"mapping\.attributes\.t\.timezone"):
        Mapper(MappingConfig.model_validate(mapping))


def test_parquet_native_types_map_without_loss(tmp_path: Path) -> None:
    utc = dt.UTC
    table = pa.table(
        {
            "id": pa.array([123, 456, 789], pa.int64()),
            "points": pa.array([20, None, 3], pa.int64()),
            "ratio": pa.array([0.5, None, float("nan")], pa.float64()),
            "vip": pa.array([True, None, False]),
            "seen_tz": pa.array(
                [
                    dt.datetime(2024, 1, 1, 10, tzinfo=utc),
                    None,
                    dt.datetime(2024, 6, 1, 22, 30, tzinfo=utc),
                ],
                pa.timestamp("us", tz="America/New_York"),
            ),
            "seen_naive": pa.array([dt.datetime(2024, 1, 1, 10), None, None], pa.timestamp("ms")),
            "born": pa.array([dt.date(1990, 5, 17), None, dt.date(2000, 2, 29)], pa.date32()),
            "balance": pa.array(
                [decimal.Decimal("12.50"), None, decimal.Decimal("7")], pa.decimal128(10, 2)
            ),
            "tags": pa.array([["a", "b"], None, []], pa.list_(pa.string())),
            "lucky": pa.array([[7, 8], [None], None], pa.list_(pa.int64())),
            "tier": pa.array(["gold", None, "gold"]).dictionary_encode(),
        }
    )
    path = tmp_path / "users.parquet"
    pq.write_table(table, path)
    mapping = {
        "customer_id": "id",
        "attributes": {
            "points": {"column": "points", "type": "integer"},
            "ratio": {"column": "ratio", "type": "number"},
            "vip": {"column": "vip", "type": "boolean"},
            "seen_tz": {"column": "seen_tz", "type": "datetime"},
            "seen_naive": {"column": "seen_naive", "type": "datetime", "timezone": "Europe/Berlin"},
            "born": {"column": "born", "type": "date"},
            "born_at": {"column": "born", "type": "datetime"},
            "seen_day": {"column": "seen_tz", "type": "date"},
            "balance": {"column": "balance", "type": "number"},
            "tags": {"column": "tags", "type": "array"},
            "lucky": {"column": "lucky", "type": "array", "items": "integer"},
            "tier": "tier",
        },
    }
    mapped = map_file(path, mapping)
    assert not mapped.invalid
    attributes = [r.element["attributes"] for r in mapped.valid]
    assert [r.customer_id for r in mapped.valid] == ["123", "456", "789"]
    assert attributes[0] == {
        "points": 20,
        "ratio": 0.5,
        "vip": True,
        "seen_tz": "2024-01-01T10:00:00Z",
        "seen_naive": "2024-01-01T09:00:00Z",
        "born": "1990-05-17T00:00:00Z",
        "born_at": "1990-05-17T00:00:00Z",
        "seen_day": "2024-01-01T00:00:00Z",
        "balance": 12.5,
        "tags": ["a", "b"],
        "lucky": [7, 8],
        "tier": "gold",
    }
    assert attributes[1] == {}
    assert attributes[2]["points"] == 3 and type(attributes[2]["points"]) is int
    assert attributes[2]["vip"] is False and attributes[2]["balance"] == 7
    assert "ratio" not in attributes[2] and "tags" not in attributes[2]
    assert attributes[2]["seen_day"] == "2024-06-01T00:00:00Z"  # 18:30 in New York
    assert orjson.loads(mapped.valid[2].encoded) == mapped.valid[2].element


def test_object_frame_of_python_values(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"id": ["a1", "a2"], "n": [5, None], "when": [dt.datetime(2024, 1, 1, 12), None]},
        dtype=object,
        index=[1, 2],
    )
    mapping = {
        "customer_id": "id",
        "attributes": {
            "n": {"column": "n", "type": "integer"},
            "when": {"column": "when", "type": "datetime"},
        },
    }
    mapped = Mapper(MappingConfig.model_validate(mapping)).map_chunk(Chunk("mem", frame))
    assert [r.element["attributes"] for r in mapped.valid] == [
        {"n": 5, "when": "2024-01-01T12:00:00Z"},
        {},
    ]
