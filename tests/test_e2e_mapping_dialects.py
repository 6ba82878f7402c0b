"""End to end, warehouse exports as they come (issue 12, mapping side): datetime export forms,
local times the clocks skip or repeat, date-only values in a zone, numbers always doubles, list
item types kept, JSON-array text cells."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.sandbox_proc import start_sandbox
from tests.support import (
    assert_report_adds_up,
    job_dict,
    read_dead_letters,
    read_report,
    run_cli,
    write_job,
)

NEW_YORK = "America/New_York"

# One row per form: Snowflake, BigQuery, Postgres/Redshift timestamptz, Spark/Databricks CSV,
# Redshift timestamp; then a local time in the spring gap, one in the repeated autumn hour,
# and text no warehouse writes.
EXPORT_CSV = (
    "id,seen,local,local_opts,day,score\n"
    "u1,2024-03-01 12:34:56.789 -0800,2024-03-01,,2024-03-01 12:34:56.789 +0000,100.0000\n"
    "u2,2024-03-01 12:34:56.789000 UTC,,,2024-03-01 12:34:56.789000 UTC,7\n"
    "u3,2024-03-01 12:34:56.789+00,,,2024-03-01T23:30:00-08:00,2.5\n"
    "u4,2024-03-01T12:34:56.789Z,,,,\n"
    "u5,2024-03-01 12:34:56,,,,\n"
    "u6,,2024-03-10 02:30,,,\n"
    "u7,,2024-11-03 01:30,,,\n"
    "u8,,,2024-03-10 02:30,,\n"
    "u9,,,2024-11-03 01:30,,\n"
    "u10,last tuesday,,,,\n"
)
EXPORT_MAPPING: dict[str, Any] = {
    "customer_id": "id",
    "attributes": {
        "seen": {"column": "seen", "type": "datetime"},
        "local": {"column": "local", "type": "datetime", "timezone": NEW_YORK},
        "local_opts": {
            "column": "local_opts",
            "type": "datetime",
            "timezone": NEW_YORK,
            "nonexistent": "shift_forward",
            "ambiguous": "latest",
        },
        "day": {"column": "day", "type": "date"},
        "score": {"column": "score", "type": "number"},
    },
}


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_warehouse_datetime_forms_and_local_times(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_text(EXPORT_CSV)
    with start_sandbox(tmp_path) as sandbox:
        job = job_dict(tmp_path, sandbox.url, source, EXPORT_MAPPING)
        result = run_cli("run", str(write_job(tmp_path, job)), "--no-progress")
        records = {r["customer_id"]: r["attributes"] for r in sandbox.records()}
    assert result.returncode == 1, result.stderr  # some rows dead-lettered
    assert records["u1"] == {
        "seen": "2024-03-01T20:34:56Z",  # -0800
        "local": "2024-03-01T05:00:00Z",  # a date-only value is midnight in its time zone
        "day": "2024-03-01T00:00:00Z",
        "score": 100.0,
    }
    for user in ("u2", "u3", "u4", "u5"):
        assert records[user]["seen"] == "2024-03-01T12:34:56Z", user
    assert records["u3"]["day"] == "2024-03-01T00:00:00Z"  # the calendar date as written
    # MoEngage fixes an attribute's type from its first value: always a double.
    assert [type(records[u]["score"]) for u in ("u1", "u2", "u3")] == [float] * 3
    assert records["u2"]["score"] == 7.0
    # Resolved as the attribute says: after the gap, the second 01:30.
    assert records["u8"] == {"local_opts": "2024-03-10T07:00:00Z"}
    assert records["u9"] == {"local_opts": "2024-11-03T06:30:00Z"}

    letters = {letter["customer_id"]: letter for letter in read_dead_letters(tmp_path)}
    assert set(letters) == {"u6", "u7", "u10"}
    assert "does not exist in America/New_York" in letters["u6"]["error"]
    assert "nonexistent: shift_forward" in letters["u6"]["error"]
    assert "occurs twice in America/New_York" in letters["u7"]["error"]
    assert "ambiguous: earliest or latest" in letters["u7"]["error"]
    assert "'last tuesday' is not a datetime" in letters["u10"]["error"]
    assert "2024-03-01 12:34:56.789000 UTC" in letters["u10"]["error"]  # the accepted forms
    # The dead letter's payload shows the row without the value that broke the rule.
    assert "local" not in letters["u6"]["payload"]["attributes"]
    report = read_report(tmp_path)
    assert report["rows_accepted"] == 7 and report["rows_invalid"] == 3
    assert_report_adds_up(report)
    # Cell values stay in the dead-letter file: not in the report or the logs.
    assert "last tuesday" not in (tmp_path / "out" / "report.json").read_text()
    assert "last tuesday" not in result.stdout + result.stderr


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_native_item_types_json_arrays_and_doubles_from_parquet(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": ["p1", "p2", "p3"],
            "lucky": pa.array([[7, 8], [9], None], pa.list_(pa.int64())),
            "unlucky": pa.array([[13], None, None], pa.list_(pa.int64())),
            "weights": pa.array([[0.5, 2.0], None, None], pa.list_(pa.float64())),
            "tags": ['["a","b"]', '[\n  "c"\n]', "not json"],  # a Snowflake ARRAY as text
            "visits": pa.array([100, 3, None], pa.int64()),
            "seen": pa.array(
                [dt.datetime(2024, 3, 1, 9), dt.datetime(2024, 3, 10, 2, 30), None],
                pa.timestamp("us"),
            ),
        }
    )
    source = tmp_path / "export.parquet"
    pq.write_table(table, source)
    mapping = {
        "customer_id": "id",
        "attributes": {
            "tags": {"column": "tags", "type": "array", "separator": "json"},
            "visits": {"column": "visits", "type": "number"},
            "seen": {"column": "seen", "type": "datetime", "timezone": NEW_YORK},
        },
        "add_to_array": {
            "lucky": {"column": "lucky"},
            "weights": {"column": "weights"},
        },
        "remove_from_array": {"unlucky": {"column": "unlucky"}},
    }
    with start_sandbox(tmp_path) as sandbox:
        job = job_dict(tmp_path, sandbox.url, source, mapping)
        result = run_cli("run", str(write_job(tmp_path, job)), "--no-progress")
        records = {r["customer_id"]: r["attributes"] for r in sandbox.records()}
    assert result.returncode == 1, result.stderr
    assert records["p1"] == {
        "tags": ["a", "b"],
        "visits": 100.0,
        "seen": "2024-03-01T14:00:00Z",
        "addValueToArrayField": {"lucky": [7, 8], "weights": [0.5, 2.0]},
        "removeValueFromArrayField": {"unlucky": [13]},
    }
    assert type(records["p1"]["visits"]) is float
    assert [type(v) for v in records["p1"]["addValueToArrayField"]["lucky"]] == [int, int]
    assert set(records) == {"p1"}
    letters = {letter["customer_id"]: letter for letter in read_dead_letters(tmp_path)}
    assert set(letters) == {"p2", "p3"}
    # A naive Parquet timestamp in the spring gap is no more shifted than text is.
    assert "does not exist in America/New_York" in letters["p2"]["error"]
    assert "'not json' is not a JSON array" in letters["p3"]["error"]
    assert letters["p2"]["payload"]["attributes"]["tags"] == ["c"]
    assert letters["p2"]["payload"]["attributes"]["addValueToArrayField"] == {"lucky": [9]}
    assert_report_adds_up(read_report(tmp_path))


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"column": "when", "type": "datetime", "nonexistent": "later"},
            "mapping.attributes.when.nonexistent: must be one of shift_forward, shift_backward,"
            " raise",
        ),
        (
            {"column": "when", "ambiguous": "earliest"},
            "mapping.attributes.when.ambiguous: only applies to type datetime",
        ),
        (
            {"column": "when", "type": "datetime", "ambigous": "earliest"},
            "mapping.attributes.when.ambigous",
        ),
    ],
)
def test_local_time_options_are_checked(tmp_path: Path, spec: Any, message: str) -> None:
    source = tmp_path / "export.csv"
    source.write_text("id,when\nu1,2024-03-01\n")
    mapping = {"customer_id": "id", "attributes": {"when": spec}}
    job = job_dict(tmp_path, "http://127.0.0.1:9", source, mapping)
    result = run_cli("validate", str(write_job(tmp_path, job)))
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
