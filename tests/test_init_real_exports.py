"""`init` on files in the shapes real exports have (issue 25): Spark INT96 timestamps beyond
Python's dates, pandas' float64 ids, Impala / Hive strings as Parquet binary, a header of
blanks, and the boolean / integer spellings `run` sends."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from importer.config import JobConfig, load_job
from importer.init import scaffold_job
from importer.init.inference import guess_text_column
from importer.init.vocabulary import accepted
from importer.mapping.booleans import to_boolean
from importer.mapping.numbers import to_integer

ENV = {"MOENGAGE_WORKSPACE_ID": "WS123", "MOENGAGE_API_KEY": "sk-test-key"}
MICROS_A_DAY = 86_400 * 10**6


def loaded(text: str, tmp_path: Path) -> JobConfig:
    """The scaffolded text as `validate` loads it (YAML, model, job rules)."""
    job_file = tmp_path / "job.yaml"
    job_file.write_text(text, encoding="utf-8")
    return load_job(job_file, env=ENV)


def types_by_column(job: JobConfig) -> dict[str, str]:
    return {spec.column: spec.type for spec in job.mapping.attributes.values()}


def skip_comment(text: str, column: str) -> str:
    """The '# check:' note just above a skipped column's line, its wrapped lines joined."""
    lines = text.splitlines()
    at = next(
        i
        for i, ln in enumerate(lines)
        if ln.lstrip() == f"# {column}: skipped, not importable as it is"
    )
    notes: list[str] = []
    for previous in reversed(lines[:at]):
        part = previous.lstrip()
        if not part.startswith("# check: ") and not part.startswith("#        "):
            break
        notes.insert(0, part[len("# check: ") :].strip())
        if part.startswith("# check: "):
            break  # the first line of the note just above
    return " ".join(notes)


# --- Spark INT96 beyond Python's dates -------------------------------------------------------


def _int96_file(path: Path) -> None:
    # Year 10000 and about year -25000: INT96 holds them, Python's datetime cannot.
    year_10000 = (datetime(9999, 12, 31) - datetime(1970, 1, 1)).days * MICROS_A_DAY
    year_10000 += 2 * MICROS_A_DAY
    long_ago = -10_000_000 * MICROS_A_DAY
    seen = pa.array([year_10000, long_ago, 0, None], pa.int64()).cast(pa.timestamp("us"))
    table = pa.table(
        {
            "customer_id": ["c1", "c2", "c3", "c4"],
            "seen": seen,
            "nested": pa.StructArray.from_arrays([seen], ["at"]),
            "ok_at": pa.array([0, 1, 2, 3], pa.int64()).cast(pa.timestamp("us")),
            "name": ["a", "b", "c", "d"],
        }
    )
    pq.write_table(table, path, use_deprecated_int96_timestamps=True)
    assert pq.ParquetFile(path).schema.column(1).physical_type == "INT96"


def test_int96_timestamps_beyond_python_dates_are_skipped_saying_why(tmp_path: Path) -> None:
    source = tmp_path / "spark.parquet"
    _int96_file(source)
    text = scaffold_job(str(source))  # crashed with "OverflowError: date value out of range"
    job = loaded(text, tmp_path)
    assert types_by_column(job) == {"ok_at": "datetime", "name": "string"}
    reason = skip_comment(text, "seen")
    assert "outside the years 1-9999" in reason and "INT96" in reason
    assert "struct" in skip_comment(text, "nested")
    assert "10000-" not in text and "+10000" not in text  # no cell value is shown


def test_int96_events_file_does_not_crash(tmp_path: Path) -> None:
    source = tmp_path / "events.parquet"
    _int96_file(source)
    table = pq.read_table(source, coerce_int96_timestamp_unit="us")
    table = table.append_column("event_name", pa.array(["open", "buy", "open", "buy"]))
    pq.write_table(table, source, use_deprecated_int96_timestamps=True)
    text = scaffold_job(str(source), events=True)
    assert "      # seen: skipped, not importable as it is" in text
    assert loaded(text, tmp_path).mapping.event is not None


def test_one_column_failing_to_type_skips_only_that_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importer.init.arrow_types import guess_arrow_column as real

    def failing(name: str, arrow_type: pa.DataType, values: list[object]) -> object:
        if name == "points":
            raise ValueError("secret cell value 4242")
        return real(name, arrow_type, values)

    monkeypatch.setattr("importer.init.columns.guess_arrow_column", failing)
    source = tmp_path / "users.parquet"
    pq.write_table(
        pa.table({"user_id": ["u1", "u2"], "points": [1, 2], "city": ["x", "y"]}), source
    )
    text = scaffold_job(str(source))
    assert types_by_column(loaded(text, tmp_path)) == {"city": "string"}
    assert "ValueError" in skip_comment(text, "points")
    assert "4242" not in text  # the exception's text may quote a cell: not shown


# --- float customer ids ----------------------------------------------------------------------


def test_a_float64_customer_id_column_gets_a_warning_and_the_fix_at_the_source(
    tmp_path: Path,
) -> None:
    source = tmp_path / "pandas.parquet"
    # An integer column with a missing value: pandas stores it as float64.
    frame = pd.DataFrame({"customer_id": [1234567890123456789, None, 3], "name": ["a", "b", "c"]})
    assert frame["customer_id"].dtype == "float64"
    frame.to_parquet(source)
    text = scaffold_job(str(source))
    id_line = next(ln for ln in text.splitlines() if ln.startswith("  customer_id:"))
    assert "read as text exactly as written" not in id_line
    assert "floating point" in id_line
    flat = " ".join(ln.strip("# ") for ln in text.splitlines())
    assert "as floating point (double)" in flat
    assert "2^53" in flat and "Int64" in flat and "at the source" in flat
    assert loaded(text, tmp_path).mapping.customer_id == "customer_id"


def test_a_csv_customer_id_written_as_float_text_gets_the_same_warning(tmp_path: Path) -> None:
    source = tmp_path / "pandas.csv"
    pd.DataFrame({"customer_id": [7, None, 9], "name": ["a", "b", "c"]}).to_csv(source, index=False)
    assert "7.0" in source.read_text()
    text = scaffold_job(str(source))
    id_line = next(ln for ln in text.splitlines() if ln.startswith("  customer_id:"))
    assert "read as text exactly as written" not in id_line
    assert "7.0 and 7 would be" in " ".join(ln.strip("# ") for ln in text.splitlines())


def test_a_text_customer_id_is_still_read_as_written(tmp_path: Path) -> None:
    source = tmp_path / "users.parquet"
    pq.write_table(pa.table({"customer_id": ["u1", "u2"], "n": [1, 2]}), source)
    assert "# read as text exactly as written" in scaffold_job(str(source))


def test_a_customer_id_column_of_another_native_type_is_named_by_its_type(tmp_path: Path) -> None:
    source = tmp_path / "lists.parquet"
    pq.write_table(pa.table({"customer_id": [["a"], ["b"]], "name": ["x", "y"]}), source)
    text = scaffold_job(str(source))
    id_line = next(ln for ln in text.splitlines() if ln.startswith("  customer_id:"))
    assert "# list<" in id_line and "string> in the file" in id_line
    assert "MoEngage ids are text" in text


# --- Impala / Hive strings as binary ---------------------------------------------------------


def test_utf8_binary_is_proposed_as_text_and_other_binary_skipped(tmp_path: Path) -> None:
    source = tmp_path / "impala.parquet"
    table = pa.table(
        {
            "customer_id": pa.array([b"u1", b"u2", b"u3"], pa.binary()),
            "city": pa.array([b"Paris", "Zürich".encode(), None], pa.binary()),
            "note": pa.array([b"a", b"b", b"c"], pa.large_binary()),
            "blob": pa.array([b"\xff\xfe", b"\x00\x81", None], pa.binary()),
            "bytes": pa.array([b"\x00\x01", b"\x02", None], pa.binary()),  # UTF-8, not text
        }
    )
    pq.write_table(table, source)
    assert str(pq.ParquetFile(source).schema.column(1).logical_type) == "None"  # no UTF8
    text = scaffold_job(str(source))
    job = loaded(text, tmp_path)
    assert types_by_column(job) == {"city": "string", "note": "string"}
    assert "not UTF-8 text" in skip_comment(text, "blob")
    assert "not UTF-8 text" in skip_comment(text, "bytes")
    assert "Impala and Hive" in text


# --- nothing typed ---------------------------------------------------------------------------


def test_nothing_typed_writes_an_empty_mapping_that_validates(tmp_path: Path) -> None:
    source = tmp_path / "blobs.parquet"
    table = pa.table({"customer_id": ["a", "b"], "blob": pa.array([b"\xff", b"\xfe"], pa.binary())})
    pq.write_table(table, source)
    text = scaffold_job(str(source))
    assert "  attributes: {}" in text and "nothing typed" in text
    assert yaml.safe_load(text)["mapping"]["attributes"] == {}
    assert loaded(text, tmp_path).mapping.attributes == {}


def test_nothing_typed_in_an_events_job_writes_an_empty_mapping(tmp_path: Path) -> None:
    source = tmp_path / "events.parquet"
    table = pa.table(
        {
            "customer_id": ["a", "b"],
            "event_name": ["open", "buy"],
            "occurred_at": pa.array([0, 1], pa.int64()).cast(pa.timestamp("s", tz="UTC")),
            "blob": pa.array([b"\xff", b"\xfe"], pa.binary()),
        }
    )
    pq.write_table(table, source)
    text = scaffold_job(str(source))
    assert "    attributes: {}" in text and "nothing typed" in text
    assert yaml.safe_load(text)["mapping"]["event"]["attributes"] == {}
    loaded(text, tmp_path)


# --- a whitespace-only header ----------------------------------------------------------------


@pytest.mark.parametrize("header", ["  ", "\t"])
def test_a_whitespace_only_header_is_skipped_with_a_comment(header: str, tmp_path: Path) -> None:
    source = tmp_path / "blank.csv"
    # Platform names in it too: still no column to map.
    source.write_text(f"customer_id,{header},name\na,web,x\nb,iOS,y\n", encoding="utf-8")
    text = scaffold_job(str(source))
    job = loaded(text, tmp_path)
    assert types_by_column(job) == {"name": "string"}
    assert job.mapping.platforms is None
    assert "whitespace only" in text


# --- one boolean and integer vocabulary with `run` -------------------------------------------

BOOLEAN_SPELLINGS = ["Y", "N", "y", "n", "yes", "No", "T", "f", "TRUE", "false", "1", "0"]


def test_every_boolean_spelling_run_sends_is_a_boolean_to_init(tmp_path: Path) -> None:
    cells = BOOLEAN_SPELLINGS * 20
    _fragments, errors = to_boolean(pd.Series(cells, dtype=object), "c")
    assert errors == {}  # what run sends today
    guess = guess_text_column("active", cells)
    assert (guess.type, guess.checks) == ("boolean", [])
    source = tmp_path / "flags.csv"
    source.write_text("customer_id,active\n" + "".join(f"u{i},{c}\n" for i, c in enumerate(cells)))
    assert types_by_column(loaded(scaffold_job(str(source)), tmp_path)) == {"active": "boolean"}


def test_y_and_n_alone_are_booleans_with_no_warning() -> None:
    guess = guess_text_column("subscribed", ["Y", "N", "N", "Y"] * 50)
    assert (guess.type, guess.checks) == ("boolean", [])


def test_init_counts_bad_booleans_as_run_does() -> None:
    cells = ["Y", "N"] * 150 + ["maybe"]
    guess = guess_text_column("subscribed", cells)
    assert guess.type == "boolean"
    _fragments, errors = to_boolean(pd.Series(cells, dtype=object), "c")
    assert guess.checks == [
        f"{len(errors)} of {len(cells)} sampled values do not read as a boolean; such rows get"
        " dead-lettered"
    ]


def test_whole_numbers_written_as_floats_are_integers_as_run_reads_them(tmp_path: Path) -> None:
    cells = ["12.0", "3.0", "4", "150.0"] * 10
    _fragments, errors = to_integer(pd.Series(cells, dtype=object), "c")
    assert errors == {}
    guess = guess_text_column("visits", cells)
    assert guess.type == "integer"
    assert any("12.0" in check for check in guess.checks)
    assert guess_text_column("amount", ["12.5", "3.0"] * 10).type == "number"
    # run reads 12.00 as 12 too, but two zeros are more often money: a number, no warning.
    money = guess_text_column("amount", ["12.00", "3.00"] * 10)
    assert (money.type, money.checks) == ("number", [])


@pytest.mark.parametrize(
    "cell", ["Y", "n", " yes ", "T", "maybe", "2", "", "12.0", "+12", "1e3", "12.5", "nan"]
)
def test_the_vocabulary_is_run_s_converters(cell: str) -> None:
    series = pd.Series([cell], dtype=object)
    assert accepted("boolean", [cell]) == [not to_boolean(series, "c")[1]]
    assert accepted("integer", [cell]) == [not to_integer(series, "c")[1]]
