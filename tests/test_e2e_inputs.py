"""End to end, issue 9's input cases: the CLI against the sandbox (or on the file alone), the
exact outcome asserted: what the server received, the dead-letter file, the report, the exit."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from importer.config import ConfigError, load_job
from importer.moengage import EXPORT_PATH
from tests.sandbox_proc import start_sandbox
from tests.support import (
    SANDBOX_KEY,
    assert_report_adds_up,
    job_dict,
    read_dead_letters,
    read_report,
    run_cli,
    write_job,
)

FAST = ("--rate", "1000000")
MAPPING = {"customer_id": "user_id", "attributes": {"name": "name", "city": "city"}}


def _job(tmp_path: Path, url: str, data: Path, mapping: dict[str, Any], **sections: Any) -> Path:
    job = job_dict(tmp_path, url, data, mapping)
    for name, values in sections.items():
        job[name] = {**job.get(name, {}), **values}
    return write_job(tmp_path, job)


def _run(
    tmp_path: Path, data: Path, mapping: dict[str, Any] = MAPPING, **sections: Any
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """Import `source` into a fresh sandbox: (result, users the server accepted)."""
    with start_sandbox(tmp_path, *FAST) as sandbox:
        rate = {"updates": 1_000_000, "period_seconds": 60}
        job = _job(tmp_path, sandbox.url, data, mapping, rate_limit=rate, **sections)
        result = run_cli("run", str(job), "--no-progress")
        return result, sandbox.records()


def _validate(
    tmp_path: Path, data: Path, mapping: dict[str, Any] = MAPPING, **sections: Any
) -> subprocess.CompletedProcess[str]:
    job = _job(tmp_path, "http://127.0.0.1:9", data, mapping, **sections)
    return run_cli("validate", str(job), "--no-progress")


# --- 1. a stray quote never swallows the file --------------------------------------------


def _export_with_a_stray_quote(path: Path, rows: int, stray_row: int) -> dict[int, tuple[int, int]]:
    """A CSV export of `rows` users with blank lines, quoted newlines and, at `stray_row`, an
    unterminated quote; returns each data row's physical lines (first, last)."""
    lines = ["user_id,name,city"]
    spans: dict[int, tuple[int, int]] = {}
    for row in range(1, rows + 1):
        if row % 1000 == 0:
            lines.append("")  # blank lines: not rows, but lines
        first = len(lines) + 1
        if row == stray_row:
            lines.append(f'u{row},"Doe, J,Berlin')
        elif row % 997 == 0:
            lines += [f'u{row},"two', f'lines {row}",Paris']
        else:
            lines.append(f"u{row},name {row},city {row}")
        spans[row] = (first, len(lines))
    path.write_text("\n".join(lines) + "\n")
    return spans


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_a_stray_quote_costs_its_line_only_and_every_line_is_accounted(tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    spans = _export_with_a_stray_quote(source, 60_000, 49_999)
    result, records = _run(tmp_path, source)
    assert result.returncode == 1, result.stderr
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert (report["rows_read"], report["rows_accepted"], report["rows_invalid"]) == (
        60_000,
        59_999,
        1,
    )
    [letter] = read_dead_letters(tmp_path)
    stray_line = spans[49_999][0]
    physical = source.read_text().split("\n")
    assert (letter["row"], letter["line"], letter["lines"]) == (
        49_999,
        stray_line,
        [stray_line, stray_line],
    )
    assert letter["record"] == {"_raw": physical[stray_line - 1]}  # `sed -n LINEp`, whole
    assert "unterminated quote" in letter["error"]

    # Every physical line ends in an accepted row or in the dead-letter file, line by line.
    by_id = {r["customer_id"]: r["attributes"] for r in records}
    assert len(by_id) == 59_999
    accounted: dict[int, str] = {}
    for row, (first, last) in spans.items():
        if f"u{row}" in by_id:
            for line in range(first, last + 1):
                accounted[line] = f"u{row}"
    for line in range(letter["lines"][0], letter["lines"][1] + 1):
        assert line not in accounted
        accounted[line] = "dead letter"
    for number, text in enumerate(physical[:-1], start=1):
        if number == 1 or text == "":
            continue  # the header, and blank lines (no row)
        assert number in accounted, f"line {number} ({text!r}) is neither accepted nor dead"
    # And what arrived is what the file says, quoted newline included.
    assert by_id["u50000"] == {"name": "name 50000", "city": "city 50000"}
    assert by_id["u60000"] == {"name": "name 60000", "city": "city 60000"}
    assert by_id["u997"] == {"name": "two\nlines 997", "city": "Paris"}


@pytest.mark.subprocess
def test_a_malformed_record_spanning_lines_is_kept_whole_and_warned(tmp_path: Path) -> None:
    # Two stray quotes join rows 2..4 into one record with the wrong number of fields.
    source = tmp_path / "in.csv"
    source.write_text('user_id,name,city\nu1,a,b\nu2,"x,y\nu3,p,q\nu4,r",s,t\n\nu5,c,d\n')
    result = _validate(tmp_path, source)
    assert result.returncode == 1, result.stderr
    [letter] = read_dead_letters(tmp_path, dry_run=True)
    assert (letter["row"], letter["line"], letter["lines"]) == (2, 3, [3, 5])
    assert letter["record"] == {"_raw": 'u2,"x,y\nu3,p,q\nu4,r",s,t'}
    assert "expected 3 fields, found 4" in letter["error"]
    assert re.search(r"warning .*data row 2 .*spanning lines 3-5", result.stdout), result.stdout
    report = read_report(tmp_path, dry_run=True)
    assert any("lines 3-5" in w for w in report["warnings"])


@pytest.mark.subprocess
def test_a_record_too_large_names_the_option_that_raises_the_limit(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("user_id,name,city\nu1,a,b\nu2," + "n" * 3000 + ",c\nu3,e,f\n")
    result = _validate(tmp_path, source, source={"csv": {"max_record_bytes": 1024}})
    assert result.returncode == 1, result.stderr
    [letter] = read_dead_letters(tmp_path, dry_run=True)
    assert (letter["row"], letter["line"]) == (2, 3)
    assert "source.csv.max_record_bytes" in letter["error"]
    assert read_report(tmp_path, dry_run=True)["rows_read"] == 3


@pytest.mark.subprocess
def test_dead_letter_line_finds_the_record_when_blank_lines_shift_rows(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("user_id,name,city\n\nu1,a,b\n\n\nguest,c,d\n")
    result = _validate(tmp_path, source)
    assert result.returncode == 1, result.stderr
    [letter] = read_dead_letters(tmp_path, dry_run=True)
    assert (letter["row"], letter["line"]) == (2, 6)
    sed = subprocess.run(["sed", "-n", "6p", str(source)], capture_output=True, text=True)
    assert sed.stdout == "guest,c,d\n"


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_a_row_the_api_rejects_carries_its_line_too(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text('user_id,name,city\n\nu1,"a\nb",c\n\nbad-2,d,e\nu3,f,g\n')
    with start_sandbox(tmp_path, "--strict-bulk", "--reject-customer-ids", "^bad-") as sandbox:
        result = run_cli("run", str(_job(tmp_path, sandbox.url, source, MAPPING)), "--no-progress")
        received = [r["customer_id"] for r in sandbox.records()]
    assert result.returncode == 1, result.stderr
    assert received == ["u1", "u3"]
    [letter] = read_dead_letters(tmp_path)
    assert (letter["stage"], letter["row"], letter["line"]) == ("rejected", 2, 6)


@pytest.mark.subprocess
def test_a_replayed_row_that_fails_again_keeps_its_line(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("user_id,name,city\n\nguest,a,b\n\nu2,c\x01d,e\nu3,f,g\n")
    job = _job(tmp_path, "http://127.0.0.1:9", source, MAPPING)
    assert run_cli("validate", str(job), "--no-progress").returncode == 1
    first = read_dead_letters(tmp_path, dry_run=True)
    assert [(d["row"], d["line"]) for d in first] == [(1, 3), (2, 5)]
    replayed = tmp_path / "replayed.jsonl"
    dead_letter = str(tmp_path / "out" / "dead_letter.dry-run.jsonl")
    result = run_cli("replay", str(job), dead_letter, "--dry-run", "--dead-letter", str(replayed))
    assert result.returncode == 1, result.stderr
    again = [json.loads(line) for line in replayed.read_text().splitlines()]
    assert [(d["row"], d["line"]) for d in again] == [(1, 3), (2, 5)]


# --- 2. NaN never becomes a customer ---------------------------------------------------------


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_float_customer_ids_nan_control_characters_and_whitespace(tmp_path: Path) -> None:
    source = tmp_path / "users.parquet"
    table = pa.table(
        {
            "user_id": pa.array([7.0, float("nan"), 123456789.0, None, 8.0], pa.float64()),
            "name": ["Ann", "Bo", "Cy", "Di", "E\x00ve"],
            "city": ["A", "B", "C", "D", "E"],
        }
    )
    pq.write_table(table, source)
    result, records = _run(tmp_path, source)
    assert result.returncode == 1, result.stderr
    assert [r["customer_id"] for r in records] == ["7", "123456789"]
    letters = {d["row"]: d for d in read_dead_letters(tmp_path)}
    assert set(letters) == {2, 4, 5}
    assert "'nan' is NaN (a float column's missing value)" in letters[2]["error"]
    assert "customer_id (column 'user_id') is empty" in letters[4]["error"]
    assert "column 'name'" in letters[5]["error"] and "control character" in letters[5]["error"]
    assert re.search(r"warning .*floating-point.*lossy", result.stdout), result.stdout
    assert "nan" not in json.dumps(records).lower()


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize("strip", [False, True])
def test_whitespace_around_a_customer_id(tmp_path: Path, strip: bool) -> None:
    source = tmp_path / "in.csv"
    source.write_text('user_id,name,city\n" u1 ",a,b\nu2,c,d\n"u\x013",e,f\n')
    mapping = {**MAPPING, "strip_customer_id": strip}
    result, records = _run(tmp_path, source, mapping)
    assert result.returncode == 1, result.stderr
    letters = read_dead_letters(tmp_path)
    assert "control character" in letters[-1]["error"] and letters[-1]["row"] == 3
    if strip:
        assert [r["customer_id"] for r in records] == ["u1", "u2"]
        assert len(letters) == 1
    else:
        assert [r["customer_id"] for r in records] == ["u2"]
        assert letters[0]["row"] == 1
        assert "whitespace" in letters[0]["error"]
        assert "mapping.strip_customer_id" in letters[0]["error"]


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_control_characters_in_a_csv_value_are_invalid_tabs_and_newlines_are_data(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(b'user_id,name,city\nu1,"a\tb",c\nu2,"d\ne",f\nu3,g\x07h,i\nu4,j,k\x00\n')
    result, records = _run(tmp_path, source)
    assert result.returncode == 1, result.stderr
    assert [(r["customer_id"], r["attributes"]["name"]) for r in records] == [
        ("u1", "a\tb"),
        ("u2", "d\ne"),
    ]
    letters = read_dead_letters(tmp_path)
    assert [(d["row"], d["line"]) for d in letters] == [(3, 5), (4, 6)]
    assert "column 'name'" in letters[0]["error"] and "control character" in letters[0]["error"]
    assert "column 'city'" in letters[1]["error"] and "control character" in letters[1]["error"]


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_ids_written_as_floats_in_a_csv_are_sent_as_written_with_a_warning(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("user_id,name,city\n7.0,a,b\n8.0,c,d\n")
    result, records = _run(tmp_path, source)
    assert result.returncode == 0, result.stderr
    assert [r["customer_id"] for r in records] == ["7.0", "8.0"]  # text exactly as written
    assert re.search(r"warning .*'\.0'.*lossy", result.stdout), result.stdout


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_nan_written_as_text_is_not_a_customer(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("user_id,name,city\nnan,a,b\nNaN,c,d\n<NA>,e,f\nu4,g,h\n")
    result, records = _run(tmp_path, source)
    assert result.returncode == 1, result.stderr
    assert [r["customer_id"] for r in records] == ["u4"]
    letters = read_dead_letters(tmp_path)
    assert [d["row"] for d in letters] == [1, 2, 3]
    assert all("missing value written out as text" in d["error"] for d in letters)


# --- 3. INT96 timestamps exact -----------------------------------------------------------------


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_spark_int96_timestamps_arrive_exact_or_are_dead_lettered(tmp_path: Path) -> None:
    epoch = dt.datetime(1970, 1, 1)
    micros = [
        (dt.datetime(9999, 12, 31, 23, 59, 59) - epoch) // dt.timedelta(microseconds=1),
        (dt.datetime(2024, 5, 6, 7, 8, 9) - epoch) // dt.timedelta(microseconds=1),
        (dt.datetime(1500, 1, 1) - epoch) // dt.timedelta(microseconds=1),
        # 10000-01-01: Parquet holds it, YYYY-MM-DDTHH:MM:SSZ does not
        (dt.datetime(9999, 12, 31) - epoch) // dt.timedelta(microseconds=1) + 86_400_000_000,
    ]
    table = pa.table(
        {"user_id": ["u1", "u2", "u3", "u4"], "ends": pa.array(micros, pa.timestamp("us"))}
    )
    source = tmp_path / "spark.parquet"
    pq.write_table(table, source, use_deprecated_int96_timestamps=True)
    assert pq.ParquetFile(source).schema.column(1).physical_type == "INT96"
    mapping = {
        "customer_id": "user_id",
        "attributes": {"ends": {"column": "ends", "type": "datetime"}},
    }
    result, records = _run(tmp_path, source, mapping)
    assert result.returncode == 1, result.stderr
    assert [(r["customer_id"], r["attributes"]["ends"]) for r in records] == [
        ("u1", "9999-12-31T23:59:59Z"),
        ("u2", "2024-05-06T07:08:09Z"),
        ("u3", "1500-01-01T00:00:00Z"),
    ]
    [letter] = read_dead_letters(tmp_path)
    assert letter["row"] == 4
    assert "outside the years 0001-9999" in letter["error"]


# --- 4. encoding errors point at the row --------------------------------------------------------


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_one_latin1_byte_makes_only_its_row_invalid(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    lines = [b"user_id,name,city"] + [f"u{i},n{i},c{i}".encode() for i in range(1, 45_001)]
    lines[40_001] = b"u40001,Jos\xe9,Lisboa"
    source.write_bytes(b"\n".join(lines) + b"\n")
    result, records = _run(tmp_path, source)
    assert result.returncode == 1, result.stderr
    assert len(records) == 45_000 - 1
    [letter] = read_dead_letters(tmp_path)
    assert (letter["row"], letter["line"]) == (40_001, 40_002)
    assert "bytes not valid in utf-8: '\\xe9'" in letter["error"]
    assert "source.csv.encoding" in letter["error"]
    assert letter["record"] == {"_raw": "u40001,Jos\\xe9,Lisboa"}
    assert "\xe9" not in result.stderr + result.stdout


@pytest.mark.subprocess
@pytest.mark.parametrize("name", ["garbage.csv", "garbage.parquet", "garbage.csv.gz"])
def test_binary_garbage_is_refused_plainly(tmp_path: Path, name: str) -> None:
    rng = random.Random(7)
    source = tmp_path / name
    source.write_bytes(bytes(rng.randrange(256) for _ in range(20_000)))
    result = _validate(tmp_path, source)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert name in result.stderr
    assert all(c.isprintable() or c == "\n" for c in result.stderr), result.stderr


# --- 5. an empty export is noticed ----------------------------------------------------------


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize("kind", ["header-only csv", "empty parquet"])
def test_an_empty_export_exits_4_unless_allowed(tmp_path: Path, kind: str) -> None:
    if kind == "header-only csv":
        source = tmp_path / "in.csv"
        source.write_text("user_id,name,city\n")
    else:
        source = tmp_path / "in.parquet"
        pq.write_table(
            pa.table(
                {
                    "user_id": pa.array([], pa.string()),
                    "name": pa.array([], pa.string()),
                    "city": pa.array([], pa.string()),
                }
            ),
            source,
        )
    result, records = _run(tmp_path, source)
    assert (result.returncode, records) == (4, []), result.stderr
    assert "the input held no data rows" in result.stderr + result.stdout
    assert read_report(tmp_path)["exit_code"] == 4
    allowed, _ = _run(tmp_path, source, source={"allow_empty": True})
    assert allowed.returncode == 0, allowed.stderr
    assert read_report(tmp_path)["exit_code"] == 0


# --- 6. secrets in config errors -------------------------------------------------------------

KEY = "sk-live-Zq8Rt2Vw9Lm4Xp7Nc3"


def _every_output(tmp_path: Path, result: subprocess.CompletedProcess[str]) -> str:
    written = [p.read_bytes().decode(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    return "\n".join([result.stdout, result.stderr, *written])


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("section", "patch", "named"),
    [
        ("mapping", {"customer_id": "${MOENGAGE_API_KEY}"}, "mapping.customer_id"),
        (
            "mapping",
            {
                "attributes": {
                    "at": {"column": "city", "type": "datetime", "timezone": "${MY_TOKEN}"}
                }
            },
            "timezone",
        ),
        ("source", {"csv": {"encoding": "${MOENGAGE_API_KEY}"}}, ""),
        ("source", {"path": "${DB_PASSWORD}"}, ""),
    ],
)
def test_a_secret_put_in_the_wrong_key_is_never_printed(
    tmp_path: Path, section: str, patch: dict[str, Any], named: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("user_id,name,city\nu1,a,b\n")
    job = job_dict(tmp_path, "http://127.0.0.1:9", source, dict(MAPPING))
    job["api"]["api_key"] = "${MOENGAGE_API_KEY}"
    job[section] = {**job[section], **patch}
    path = write_job(tmp_path, job)
    env = {"MOENGAGE_API_KEY": KEY, "MY_TOKEN": KEY + "-t", "DB_PASSWORD": KEY + "-p"}
    for command in ("validate", "run"):
        result = run_cli(command, str(path), "--no-progress", env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert named in result.stderr
        everything = _every_output(tmp_path, result)
        assert KEY not in everything and KEY.lower() not in everything.lower()
        assert KEY[:12] not in everything


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_api_key_file_and_whitespace_hint(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("user_id,name,city\nu1,a,b\n")
    key_file = tmp_path / "keyfile"
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = job_dict(tmp_path, sandbox.url, source, MAPPING)
        del job["api"]["api_key"]
        job["api"]["api_key_file"] = str(key_file)
        path = write_job(tmp_path, job)
        key_file.write_text(SANDBOX_KEY + "\n")  # as `echo KEY > keyfile` writes it
        ok = run_cli("run", str(path), "--no-progress")
        assert ok.returncode == 0, ok.stderr
        assert [r["customer_id"] for r in sandbox.records()] == ["u1"]

        job = job_dict(tmp_path, sandbox.url, source, MAPPING)
        job["api"]["api_key"] = "${MOENGAGE_API_KEY}"
        path = write_job(tmp_path, job)
        padded = run_cli("run", str(path), "--fresh", env={"MOENGAGE_API_KEY": SANDBOX_KEY + "\n"})
        assert padded.returncode == 2
        assert "whitespace" in padded.stderr and "cat keyfile" in padded.stderr
        # Refused before sending: only the first run's (and its credential check).
        assert len(sandbox.arrivals()) == 1
        assert sandbox.arrivals(exports=True)[0]["path"] == EXPORT_PATH


@pytest.mark.subprocess
def test_validate_needs_no_credentials(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("user_id,name,city\nu1,a,b\n")
    job = job_dict(tmp_path, "http://127.0.0.1:9", source, MAPPING)
    job["api"].update(workspace_id="${NO_SUCH_WS}", api_key="${NO_SUCH_KEY}")
    path = write_job(tmp_path, job)
    assert run_cli("validate", str(path), "--no-progress").returncode == 0
    refused = run_cli("run", str(path), "--no-progress")
    assert refused.returncode == 2 and "NO_SUCH_KEY is not set" in refused.stderr


# --- 7. a YAML alias bomb ---------------------------------------------------------------------

BOMB = "\n".join(
    ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    + ["api: {workspace_id: W, api_key: k, extra: *a8}"]
)


@pytest.mark.subprocess
def test_a_yaml_alias_bomb_is_refused_in_under_a_second(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 1000
    started = time.monotonic()
    with pytest.raises(ConfigError, match="aliases"):
        load_job(path, {})
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    result = run_cli("validate", str(path), timeout=30)
    assert result.returncode == 2 and "aliases" in result.stderr
    assert time.monotonic() - started < 10  # the interpreter's start included


# --- 8. smaller -------------------------------------------------------------------------------


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize("workspace", ["a:b", "a/b", "a b", "ws?x=1", "w\u00e9"])
def test_a_workspace_id_that_cannot_be_in_a_url_is_refused_up_front(
    tmp_path: Path, workspace: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("user_id,name,city\nu1,a,b\n")
    with start_sandbox(tmp_path) as sandbox:
        job = job_dict(tmp_path, sandbox.url, source, MAPPING)
        job["api"]["workspace_id"] = workspace
        for command in ("validate", "run"):
            result = run_cli(command, str(write_job(tmp_path, job)), "--no-progress")
            assert result.returncode == 2, result.stderr
            assert "api.workspace_id: may hold only" in result.stderr
        assert sandbox.arrivals() == []


@pytest.mark.subprocess
def test_a_fifo_input_gets_a_clear_message(tmp_path: Path) -> None:
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    result = _validate(tmp_path, fifo)
    assert result.returncode == 2
    assert "named pipe (FIFO)" in result.stderr and "regular file" in result.stderr


@pytest.mark.subprocess
def test_fatal_errors_are_json_lines_with_log_format_json(tmp_path: Path) -> None:
    source = tmp_path / "missing.csv"
    job = write_job(tmp_path, job_dict(tmp_path, "http://127.0.0.1:9", source, MAPPING))
    result = run_cli("validate", str(job), "--log-format", "json")
    assert result.returncode == 2
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines and lines[-1]["level"] == "error" and "missing.csv" in lines[-1]["message"]
