"""End to end, issue 25: every real export reads exactly or is refused clearly. Small files in
the shapes Spark, Impala, Hive and pandas write (INT96, binary strings, float ids, corrupt
pages), imported into the sandbox: what arrived, the dead letters, the report, the exit."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
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

FAST = ("--rate", "1000000")
RATE = {"updates": 1_000_000, "period_seconds": 60}

# Each test drives the CLI against the sandbox (or the CLI alone) in a subprocess.
pytestmark = pytest.mark.sandbox


def _run(
    tmp_path: Path, data: Path, mapping: dict[str, Any], **sections: Any
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = job_dict(tmp_path, sandbox.url, data, mapping, rate_limit=RATE)
        for name, values in sections.items():
            job[name] = {**job.get(name, {}), **values}
        result = run_cli("run", str(write_job(tmp_path, job)), "--no-progress")
        return result, sandbox.records()


def _attributes(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["customer_id"]: r["attributes"] for r in records}


# --- 1. corrupt pages -------------------------------------------------------------------------


def _corrupt_parquet(path: Path, rows: int, bad_value: str) -> None:
    """A Parquet file with page checksums, one byte changed inside the page holding `bad_value`."""
    table = pa.table(
        {"user_id": [f"u{i:05d}" for i in range(rows)], "name": [f"n{i:05d}" for i in range(rows)]}
    )
    pq.write_table(
        table, path, write_page_checksum=True, compression="NONE", use_dictionary=False,
        row_group_size=max(rows // 2, 1),
    )  # fmt: skip
    data = bytearray(path.read_bytes())
    at = data.find(bad_value.encode())
    assert at > 0
    data[at + 1] = ord("X")
    path.write_bytes(bytes(data))


def test_a_corrupt_page_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    source = tmp_path / "corrupt.parquet"
    _corrupt_parquet(source, 10, "n00002")  # in the first row group
    result, records = _run(
        tmp_path, source, {"customer_id": "user_id", "attributes": {"name": "name"}}
    )
    assert result.returncode == 2, result.stderr
    assert "corrupt Parquet page in column 'name'" in result.stderr
    assert str(source) in result.stderr
    assert records == []


def test_a_corrupt_later_page_stops_the_run_and_none_of_its_values_arrive(tmp_path: Path) -> None:
    source = tmp_path / "corrupt.parquet"
    _corrupt_parquet(source, 20_000, "n15000")  # in the second row group
    mapping = {"customer_id": "user_id", "attributes": {"name": "name"}}
    result, records = _run(tmp_path, source, mapping, source={"chunk_rows": 1000})
    assert result.returncode in (2, 3), result.stderr
    assert "corrupt Parquet page in column 'name'" in result.stderr
    names = {r["attributes"]["name"] for r in records}
    assert not any("X" in name for name in names)
    assert all(int(r["customer_id"][1:]) < 10_000 for r in records)  # none of the bad group
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    if result.returncode == 3:  # something was sent before the corrupt page was read
        assert report["rows_pending"] > 0 and report["rows_invalid"] == 0


# --- 2. INT96 out of range --------------------------------------------------------------------


def test_an_out_of_range_int96_is_refused_with_its_true_date(tmp_path: Path) -> None:
    micros = pa.array([1_700_000_000_000_000, 1_700_000_000_000_000], pa.timestamp("us"))
    table = pa.table({"user_id": ["u1", "u2"], "ts": micros})
    source = tmp_path / "spark.parquet"
    pq.write_table(table, source, use_deprecated_int96_timestamps=True, use_dictionary=False)
    data = bytearray(source.read_bytes())
    day = struct.pack("<I", 2_460_263)  # 2023-11-14 as a Julian day, in both INT96 values
    second = data.find(day) + 12  # INT96: 8 bytes of nanoseconds, then the day
    assert data[second : second + 4] == day
    data[second : second + 4] = struct.pack("<I", 0x7FFFFFFF)  # u2: millions of years ahead
    source.write_bytes(bytes(data))
    true_date = str(np.datetime64(0x7FFFFFFF - 2_440_588, "D"))  # Julian day 0 is 4713 BC
    mapping = {"customer_id": "user_id", "attributes": {"ts": {"column": "ts", "type": "datetime"}}}
    result, records = _run(tmp_path, source, mapping)
    assert result.returncode == 1, result.stderr
    assert _attributes(records) == {"u1": {"ts": "2023-11-14T22:13:20Z"}}
    [letter] = read_dead_letters(tmp_path)
    assert letter["customer_id"] == "u2"
    assert true_date in letter["error"] and "outside the years 0001-9999" in letter["error"]
    assert letter["record"]["user_id"] == "u2" and "29357" not in str(letter)


# --- 3. float ids -----------------------------------------------------------------------------


def test_float_ids_are_exact_or_refused_row_by_row(tmp_path: Path) -> None:
    ids = [1234567890123456789.0, 1234567890123456788.0, 42.0, 1.5, float("nan"), None, 1e21]
    table = pa.table({"user_id": pa.array(ids, pa.float64()), "name": [f"n{i}" for i in range(7)]})
    source = tmp_path / "pandas.parquet"
    pq.write_table(table, source)
    result, records = _run(
        tmp_path, source, {"customer_id": "user_id", "attributes": {"name": "name"}}
    )
    assert result.returncode == 1, result.stderr
    assert _attributes(records) == {"42": {"name": "n2"}}  # not "42.0"
    letters = {d["row"]: d["error"] for d in read_dead_letters(tmp_path)}
    assert sorted(letters) == [1, 2, 4, 5, 6, 7]
    assert "beyond 2**53" in letters[1] and "beyond 2**53" in letters[2]
    assert "1234567890123456768" not in letters[1]
    assert "fraction" in letters[4] and "NaN" in letters[5]
    assert "is empty" in letters[6] and "beyond 2**53" in letters[7]


# --- 4. binary strings, non-text ids ----------------------------------------------------------


def test_impala_binary_strings_read_as_text(tmp_path: Path) -> None:
    table = pa.table(
        {
            "user_id": pa.array([b"u1", b"u2", b"\xff\xfe"], pa.binary()),
            "city": pa.array(["Zürich".encode(), b"Oslo", b"Rome"], pa.binary()),
        }
    )
    source = tmp_path / "impala.parquet"
    pq.write_table(table, source)
    assert pq.ParquetFile(source).schema.column(0).logical_type.type == "NONE"
    result, records = _run(
        tmp_path, source, {"customer_id": "user_id", "attributes": {"city": "city"}}
    )
    assert result.returncode == 1, result.stderr
    assert _attributes(records) == {"u1": {"city": "Zürich"}, "u2": {"city": "Oslo"}}
    [letter] = read_dead_letters(tmp_path)
    assert letter["row"] == 3 and "binary data that is not UTF-8" in letter["error"]
    assert "is empty" not in letter["error"]


def test_a_list_customer_id_is_named_a_list(tmp_path: Path) -> None:
    table = pa.table({"user_id": pa.array([["a"], ["b", "c"]]), "name": ["x", "y"]})
    source = tmp_path / "lists.parquet"
    pq.write_table(table, source)
    result, records = _run(
        tmp_path, source, {"customer_id": "user_id", "attributes": {"name": "name"}}
    )
    assert result.returncode == 1, result.stderr
    assert records == []
    letters = read_dead_letters(tmp_path)
    assert [d["row"] for d in letters] == [1, 2]
    assert all("is a list, not text" in d["error"] for d in letters)


# --- 5. nested columns ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        (pa.array([{"a": 1}, {"a": 2}]), "a struct"),
        (pa.array([[("k", 1)], [("k", 2)]], pa.map_(pa.string(), pa.int64())), "a map"),
        (pa.array([[{"a": 1}], []]), "a list of structs"),
    ],
)
def test_a_nested_column_mapped_by_hand_is_refused_before_sending(
    tmp_path: Path, column: pa.Array, kind: str
) -> None:
    source = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"user_id": ["u1", "u2"], "extra": column}), source)
    result, records = _run(
        tmp_path, source, {"customer_id": "user_id", "attributes": {"extra": "extra"}}
    )
    assert result.returncode == 2, result.stderr
    assert f"column 'extra' is {kind} (nested)" in result.stderr
    assert records == []


# --- 6. one rule for big integers; floats in their own width ----------------------------------

BIG = 2**53 + 1


def test_big_integers_follow_one_rule_for_csv_and_parquet(tmp_path: Path) -> None:
    mapping = {
        "customer_id": "user_id",
        "attributes": {"n": {"column": "n", "type": "integer"}, "digits": "n"},
    }
    csv_dir, parquet_dir = tmp_path / "csv", tmp_path / "parquet"
    csv_dir.mkdir()
    parquet_dir.mkdir()
    (csv_dir / "in.csv").write_text(f"user_id,n\nu1,{BIG}\nu2,{2**53}\n")
    pq.write_table(
        pa.table({"user_id": ["u1", "u2"], "n": pa.array([BIG, 2**53], pa.int64())}),
        parquet_dir / "in.parquet",
    )
    for folder, name in ((csv_dir, "in.csv"), (parquet_dir, "in.parquet")):
        result, records = _run(folder, folder / name, mapping)
        assert result.returncode == 1, result.stderr
        # The digits kept as text by a string attribute; the integer beyond 2**53 refused.
        assert _attributes(records) == {"u2": {"n": 2**53, "digits": str(2**53)}}, name
        [letter] = read_dead_letters(folder)
        assert letter["customer_id"] == "u1" and "beyond 2**53" in letter["error"]


def test_floats_are_sent_in_their_own_width_and_never_nan(tmp_path: Path) -> None:
    table = pa.table(
        {
            "user_id": ["u1", "u2", "u3", "u4"],
            "f": pa.array([1.1, 0.1, float("nan"), float("inf")], pa.float32()),
        }
    )
    source = tmp_path / "floats.parquet"
    pq.write_table(table, source)
    mapping = {
        "customer_id": "user_id",
        "attributes": {"f": {"column": "f", "type": "number"}, "text": "f"},
    }
    result, records = _run(tmp_path, source, mapping)
    assert result.returncode == 1, result.stderr
    assert _attributes(records) == {
        "u1": {"f": 1.1, "text": "1.1"},
        "u2": {"f": 0.1, "text": "0.1"},
        "u3": {},  # NaN is a float column's missing value: omitted, never "nan"
    }
    [letter] = read_dead_letters(tmp_path)
    assert letter["customer_id"] == "u4"


# --- 7. empty quoted cells ----------------------------------------------------------------------


def test_a_quoted_empty_cell_is_omitted_whatever_null_values_says(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text('user_id,name,city\nu1,"",\\N\nu2,Ann,\n')
    mapping = {"customer_id": "user_id", "attributes": {"name": "name", "city": "city"}}
    result, records = _run(tmp_path, source, mapping, source={"null_values": ["\\N"]})
    assert result.returncode == 0, result.stderr
    assert _attributes(records) == {"u1": {}, "u2": {"name": "Ann"}}


# --- 8. messages naming the real problem ------------------------------------------------------


def _validate(
    tmp_path: Path, source: Path, mapping: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    job = job_dict(tmp_path, "http://127.0.0.1:9", source, mapping)
    return run_cli("validate", str(write_job(tmp_path, job)))


def _small_parquet(path: Path) -> bytes:
    pq.write_table(pa.table({"user_id": ["u1"], "name": ["a"]}), path)
    return path.read_bytes()


@pytest.mark.parametrize("name", ["users.parquet.encrypted", "users.parquet"])
def test_encrypted_parquet_is_called_encrypted(tmp_path: Path, name: str) -> None:
    data = bytearray(_small_parquet(tmp_path / "plain.parquet"))
    data[:4] = data[-4:] = b"PARE"  # what a file with an encrypted footer starts and ends with
    source = tmp_path / name
    source.write_bytes(bytes(data))
    result = _validate(tmp_path, source, {"customer_id": "user_id"})
    assert result.returncode == 2, result.stderr
    assert "encrypted Parquet" in result.stderr and "not a CSV" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_map_schema_is_called_a_schema_error(tmp_path: Path) -> None:
    table = pa.table(
        {"user_id": ["u1"], "m": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64()))}
    )
    path = tmp_path / "map.parquet"
    pq.write_table(table, path)
    # The map's key field made optional (thrift: repetition_type 0 -> 1): keys must be required.
    required_key = b"\x15\x0c\x25\x00\x18\x03key"
    data = path.read_bytes()
    assert data.count(required_key) == 1
    path.write_bytes(data.replace(required_key, b"\x15\x0c\x25\x02\x18\x03key"))
    result = _validate(tmp_path, path, {"customer_id": "user_id"})
    assert result.returncode == 2, result.stderr
    assert "schema error" in result.stderr and "not a Parquet file" not in result.stderr


def test_a_whitespace_only_header_is_refused_naming_its_position(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("user_id,  ,city\nu1,x,Oslo\n")
    result = _validate(tmp_path, source, {"customer_id": "user_id", "attributes": {"x": "  "}})
    assert result.returncode == 2, result.stderr
    assert "column 2 has a header of only whitespace" in result.stderr


# --- 11. max_invalid_fraction -----------------------------------------------------------------


@pytest.mark.parametrize(("fraction", "code"), [(0.05, 0), (0.02, 1), (0.0, 1)])
def test_invalid_rows_within_max_invalid_fraction_exit_0(
    tmp_path: Path, fraction: float, code: int
) -> None:
    lines = [f"u{i},{'x' if i in (3, 50, 77) else i}" for i in range(100)]
    source = tmp_path / "in.csv"
    source.write_text("user_id,points\n" + "\n".join(lines) + "\n")
    mapping = {
        "customer_id": "user_id",
        "attributes": {"points": {"column": "points", "type": "integer"}},
    }
    result, records = _run(tmp_path, source, mapping, delivery={"max_invalid_fraction": fraction})
    assert result.returncode == code, result.stderr
    assert len(records) == 97
    report = read_report(tmp_path)
    assert report["exit_code"] == code and report["rows_invalid"] == 3
    assert report["rows_invalid_tolerated"] == (3 if code == 0 else 0)
    assert any("ok with 3 invalid rows" in w for w in report["warnings"]) == (code == 0)
    assert len(read_dead_letters(tmp_path)) == 3  # tolerated, still kept
