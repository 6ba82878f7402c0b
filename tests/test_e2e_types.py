"""End to end, the nasty inputs: a hostile CSV, a Parquet directory of native types, both
endpoints, Portfolio's project_code, identity resolution, and `init` output that validates."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.sandbox_proc import start_sandbox
from tests.support import (
    ROOT,
    assert_report_adds_up,
    job_dict,
    read_dead_letters,
    read_report,
    run_cli,
    write_job,
)

# BOM, quoted delimiters and newlines, a zero-padded id, empty cells in an integer column,
# text that merely looks like a missing value, a phone with +.
NASTY_CSV = (
    "\ufeffuser_id,name,points,phone,bio,score\n"
    '00123,"Smith, Ada",20,+4930123,"line one\nline two",1.5\n'
    "00124,Bob,,0049301,NA,\n"
    '00125,"Quote ""Q"" Person",7,,None,-2\n'
    "00126,Dan,x7,,,abc\n"
)
NASTY_MAPPING = {
    "customer_id": "user_id",
    "attributes": {
        "name": "name",
        "points": {"column": "points", "type": "integer"},
        "phone": "phone",
        "bio": "bio",
        "score": {"column": "score", "type": "number"},
    },
}


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_nasty_csv_through_the_one_user_endpoint(tmp_path: Path) -> None:
    source = tmp_path / "nasty.csv"
    source.write_text(NASTY_CSV, encoding="utf-8")
    with start_sandbox(tmp_path) as sandbox:
        job = job_dict(
            tmp_path,
            sandbox.url,
            source,
            NASTY_MAPPING,
            api={"endpoint": "customer", "project_code": "PORTFOLIO1"},
        )
        result = run_cli("run", str(write_job(tmp_path, job)), "--no-progress")
        records = {r["customer_id"]: r for r in sandbox.records()}
        arrivals = sandbox.arrivals()
    assert result.returncode == 1, result.stderr
    assert {r["endpoint"] for r in records.values()} == {"customer"}
    assert all(a["path"].startswith("/v1/customer/") for a in arrivals)
    assert all(a.get("project_code") == "PORTFOLIO1" for a in arrivals)
    assert len(arrivals) == 3  # one user a request
    assert records["00123"]["attributes"] == {
        "name": "Smith, Ada",
        "points": 20,
        "phone": "+4930123",
        "bio": "line one\nline two",
        "score": 1.5,
    }
    assert records["00124"]["attributes"] == {"name": "Bob", "phone": "0049301", "bio": "NA"}
    assert records["00125"]["attributes"] == {
        "name": 'Quote "Q" Person',
        "points": 7,
        "bio": "None",
        "score": -2,
    }
    (letter,) = read_dead_letters(tmp_path)
    # Row 4 is the fourth data row although the file's fourth line is inside a quoted field.
    assert letter["row"] == 4 and letter["customer_id"] == "00126"
    assert "points" in letter["error"] and "'x7' is not an integer" in letter["error"]
    assert "score" in letter["error"] and "'abc' is not a number" in letter["error"]
    assert letter["record"] == {
        "user_id": "00126",
        "name": "Dan",
        "points": "x7",
        "phone": None,
        "bio": None,
        "score": "abc",
    }


def _parquet_directory(root: Path) -> Path:
    folder = root / "export"
    folder.mkdir()
    utc = dt.UTC
    first = pa.table(
        {
            "user_id": pa.array([1001, 1002, 1003], pa.int64()),
            "points": pa.array([20, None, 5], pa.int64()),
            "vip": pa.array([True, False, None], pa.bool_()),
            "seen_at": pa.array(
                [
                    dt.datetime(2024, 1, 31, 10, 0, tzinfo=utc),
                    None,
                    dt.datetime(2023, 6, 1, tzinfo=utc),
                ],
                pa.timestamp("us", tz="Europe/Berlin"),
            ),
            "naive_at": pa.array([dt.datetime(2024, 2, 1, 8, 30), None, None], pa.timestamp("ms")),
            "born": pa.array([dt.date(1990, 5, 1), None, dt.date(2001, 12, 24)], pa.date32()),
            "balance": pa.array(
                [decimal.Decimal("12.50"), None, decimal.Decimal("-3.25")], pa.decimal128(10, 2)
            ),
            "tags": pa.array([["a", "b"], None, []], pa.list_(pa.string())),
            "tier": pa.array(["gold", None, "silver"]).dictionary_encode(),
        }
    )
    pq.write_table(first, folder / "part-0.parquet")
    second = first.slice(0, 1).set_column(0, "user_id", pa.array([1004], pa.int64()))
    pq.write_table(second, folder / "part-1.parquet")
    return folder


PARQUET_MAPPING = {
    "customer_id": "user_id",
    "attributes": {
        "points": {"column": "points", "type": "integer"},
        "vip": {"column": "vip", "type": "boolean"},
        "seen_at": {"column": "seen_at", "type": "datetime"},
        "naive_at": {"column": "naive_at", "type": "datetime"},
        "born": {"column": "born", "type": "date"},
        "balance": {"column": "balance", "type": "number"},
        "tags": {"column": "tags", "type": "array"},
        "tier": "tier",
    },
}


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_parquet_directory_of_native_types(tmp_path: Path) -> None:
    folder = _parquet_directory(tmp_path)
    with start_sandbox(tmp_path) as sandbox:
        job = write_job(tmp_path, job_dict(tmp_path, sandbox.url, folder, PARQUET_MAPPING))
        result = run_cli("run", str(job), "--no-progress")
        records = {r["customer_id"]: r["attributes"] for r in sandbox.records()}
    assert result.returncode == 0, result.stderr
    assert records["1001"] == {
        "points": 20,
        "vip": True,
        "seen_at": "2024-01-31T10:00:00Z",
        "naive_at": "2024-02-01T08:30:00Z",
        "born": "1990-05-01T00:00:00Z",
        "balance": 12.5,
        "tags": ["a", "b"],
        "tier": "gold",
    }
    assert records["1002"] == {"vip": False}
    assert records["1003"]["points"] == 5 and isinstance(records["1003"]["points"], int)
    assert records["1003"]["balance"] == -3.25
    assert "vip" not in records["1003"]
    assert records["1004"] == records["1001"]
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_read"] == 4 and report["rows_accepted"] == 4


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_identity_resolution_requires_an_identifier(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    source.write_text("mobile,name\n+4915111,Ann\n,Bo\n")
    mapping = {
        "customer_id": None,
        "identifiers": ["moe_mobile"],
        "attributes": {"moe_mobile": "mobile", "name": "name"},
    }
    with start_sandbox(tmp_path) as sandbox:
        job = write_job(tmp_path, job_dict(tmp_path, sandbox.url, source, mapping))
        result = run_cli("run", str(job), "--no-progress")
        records = sandbox.records()
    assert result.returncode == 1, result.stderr
    assert [(r["customer_id"], r["attributes"]) for r in records] == [
        (None, {"moe_mobile": "+4915111", "name": "Ann"})
    ]
    (letter,) = read_dead_letters(tmp_path)
    assert letter["row"] == 2 and "moe_mobile" in letter["error"]


@pytest.mark.subprocess
def test_init_output_validates_unchanged(tmp_path: Path) -> None:
    scaffold = run_cli("init", "sample_data/")
    assert scaffold.returncode == 0, scaffold.stderr
    job = tmp_path / "job.yaml"
    job.write_text(scaffold.stdout)
    env = {"MOENGAGE_WORKSPACE_ID": "WS1", "MOENGAGE_API_KEY": "k"}
    result = run_cli(
        "validate",
        str(job),
        "--report",
        str(tmp_path / "report.json"),
        "--dead-letter",
        str(tmp_path / "dead.jsonl"),
        env=env,
        cwd=ROOT,
    )
    # Exit 1 is the sample's deliberately bad rows; the job file itself is accepted.
    assert result.returncode in (0, 1), result.stderr
    assert "attributes:" in result.stdout and "sample of 3 built elements" in result.stdout
    assert "rows read" in result.stdout and "5,000" in result.stdout


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_malformed_records_are_dead_lettered_and_not_twice(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    source.write_text('user_id,name\nu1,Ann\nu2,"Bo\nB",extra\nu3,Cy\nu4\nu5,Di\n')
    mapping = {"customer_id": "user_id", "attributes": {"name": "name"}}
    with start_sandbox(tmp_path) as sandbox:
        job = write_job(tmp_path, job_dict(tmp_path, sandbox.url, source, mapping))
        first = run_cli("run", str(job), "--no-progress")
        again = run_cli("run", str(job), "--no-progress")
        recorded = [r["customer_id"] for r in sandbox.records()]
    assert first.returncode == 1, first.stderr
    assert recorded == ["u1", "u3", "u5"]
    letters = read_dead_letters(tmp_path)
    assert [(d["row"], d["stage"]) for d in letters] == [(2, "validation"), (4, "validation")]
    assert "expected 2 fields, found 3" in letters[0]["error"]
    assert letters[1]["record"] == {"_raw": "u4"}
    assert again.returncode == 1, again.stderr  # the dead-lettered rows are still there
    report = read_report(tmp_path)
    assert report["rows_read"] == 5 and report["rows_skipped"] == 5
    assert report["rows_skipped_dead_lettered"] == 2
