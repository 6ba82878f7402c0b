"""`moe-import init`: the scaffolded job loads, passes the job rules and has the right types."""

from __future__ import annotations

import gzip
import os
import re
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from importer.config import ConfigError, JobConfig, check_job_rules, load_job
from importer.init import ScaffoldError, scaffold_job
from importer.init.naming import attribute_name_for

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"
ENV = {"MOENGAGE_WORKSPACE_ID": "WS123", "MOENGAGE_API_KEY": "sk-test-key"}

SAMPLE_TYPES = {
    "first_name": "string",
    "email": "string",
    "phone": "string",
    "country": "string",
    "loyalty_points": "integer",
    "lifetime_value": "number",
    "is_super": "boolean",
    "signup_at": "datetime",
    "birthday": "date",
    "interests": "array",
    "plan": "string",
}


def scaffolded(input_path: str | Path, tmp_path: Path) -> tuple[JobConfig, str]:
    """Scaffold, write the file and load it the way `validate` would."""
    text = scaffold_job(str(input_path))
    job_file = tmp_path / "job.yaml"
    job_file.write_text(text, encoding="utf-8")
    job = load_job(job_file, env=ENV)
    check_job_rules(job)  # load_job applies them; called again to say what is being tested
    return job, text


def types_by_column(job: JobConfig) -> dict[str, str]:
    return {spec.column: spec.type for spec in job.mapping.attributes.values()}


@pytest.mark.parametrize("name", ["customers.csv", "customers.parquet", ""])
def test_sample_data_scaffolds_to_a_valid_job(name: str, tmp_path: Path) -> None:
    input_path = SAMPLE / name if name else f"{SAMPLE}/"
    job, text = scaffolded(input_path, tmp_path)
    assert job.source.path == str(input_path)
    assert job.api.data_center == "01"
    assert job.api.workspace_id == "WS123"
    assert "api_key: ${MOENGAGE_API_KEY}" in text
    assert job.mapping.customer_id == "user_id"
    assert types_by_column(job).items() >= SAMPLE_TYPES.items()
    assert "user_id" not in types_by_column(job)  # customer_id is not also an attribute
    assert job.mapping.platforms is not None and job.mapping.platforms.column == "platform"
    assert "# check:" in text  # the sample's bad rows and placeholder ids are pointed out


def test_csv_arrays_get_their_separator_and_parquet_lists_need_none(tmp_path: Path) -> None:
    csv_job, _ = scaffolded(SAMPLE / "customers.csv", tmp_path)
    parquet_job, _ = scaffolded(SAMPLE / "customers.parquet", tmp_path)
    assert csv_job.mapping.attributes["interests"].separator == "|"
    assert parquet_job.mapping.attributes["interests"].separator is None


def test_sample_csv_tolerates_the_odd_bad_value_and_says_so(tmp_path: Path) -> None:
    # Row 555 holds "2.5" and row 890 "maybe", both inside the 1,000-row sample.
    _, text = scaffolded(SAMPLE / "customers.csv", tmp_path)
    assert "do not read as an integer" in text
    assert "do not read as a boolean" in text
    assert "placeholder customer_id" in text


TRICKY_CSV = (
    "customer_id,id,moe_score,moe_mobile,zip,phone,amount,joined,is_active,visits,tags,"
    "platforms,born,note,country\n"
    "C-001,1,10,+4915112345678,00123,+4930123456,1.5,2024-01-02T03:04:05+01:00,1,1,a;b,web,"
    "31.12.1990,hello,NA\n"
    "C-002,2,20,+4915112345679,01234,030123456,2,2024-02-03T10:00:00Z,0,0,c,iOS,01.02.1985,NA,DE\n"
    "C-003,3,,+4915112345670,10115,+4930999,,2024-03-04T05:06:07-05:00,1,1,d;e;f,ANDROID,"
    "15.06.2000,,NA\n"
)


def test_tricky_csv(tmp_path: Path) -> None:
    source = tmp_path / "tricky.csv"
    source.write_text(TRICKY_CSV, encoding="utf-8")
    job, text = scaffolded(source, tmp_path)
    attributes = job.mapping.attributes
    assert job.mapping.customer_id == "customer_id"
    # Blocked and reserved names are renamed, and the file says why.
    assert attributes["source_id"].column == "id"
    assert attributes["score"].column == "moe_score"
    assert "id" not in attributes and "moe_score" not in attributes
    assert "renamed from column 'id'" in text
    assert "renamed from column 'moe_score'" in text
    # A MoEngage system attribute keeps its name.
    assert attributes["moe_mobile"].column == "moe_mobile"
    # Codes and phone numbers stay text; so does an id column of digits.
    assert attributes["zip"].type == "string"
    # A phone column becomes MoEngage's standard mobile attribute (importer/catalogue.py).
    assert (attributes["u_mb"].column, attributes["u_mb"].type) == ("phone", "string")
    assert attributes["source_id"].type == "string"
    assert attributes["score"].type == "integer"
    assert attributes["amount"].type == "number"
    assert attributes["joined"].type == "datetime"
    assert attributes["is_active"].type == "boolean"  # 0/1 in a flag-named column
    assert attributes["visits"].type == "integer"  # 0/1 elsewhere is a count
    assert (attributes["tags"].type, attributes["tags"].separator) == ("array", ";")
    assert (attributes["born"].type, attributes["born"].format) == ("date", "%d.%m.%Y")
    assert attributes["country"].type == "string"
    assert job.mapping.platforms is not None and job.mapping.platforms.column == "platforms"


def test_a_renamed_column_does_not_take_another_columns_name(tmp_path: Path) -> None:
    source = tmp_path / "scores.csv"
    source.write_text("user_id,moe_score,score\nu1,1,2\nu2,3,4\n", encoding="utf-8")
    job, _ = scaffolded(source, tmp_path)
    assert {n: s.column for n, s in job.mapping.attributes.items()} == {
        "score_2": "moe_score",
        "score": "score",
    }


def test_id_column_alone_becomes_customer_id(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    source.write_text("id,name\nA100,Ann\nA101,Bo\n", encoding="utf-8")
    job, _ = scaffolded(source, tmp_path)
    assert job.mapping.customer_id == "id"
    assert list(job.mapping.attributes) == ["name"]


def test_no_id_column_leaves_customer_id_for_the_user(tmp_path: Path) -> None:
    source = tmp_path / "anon.csv"
    source.write_text("city,score\nBerlin,3\nParis,4\n", encoding="utf-8")
    text = scaffold_job(str(source))
    assert "customer_id: null" in text
    assert "no customer id column recognised" in text
    job_file = tmp_path / "job.yaml"
    job_file.write_text(text, encoding="utf-8")
    # Valid YAML and model; the job rules then ask for an id or identifiers, on purpose.
    with pytest.raises(ConfigError, match=r"mapping\.customer_id: no customer_id column"):
        load_job(job_file, env=ENV)


def test_gzipped_semicolon_csv_and_glob(tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    with gzip.open(folder / "part-1.csv.gz", "wt", encoding="utf-8") as handle:
        handle.write("user_id;points;joined\nu1;5;2024-01-01\nu2;;2024-01-02\nu3;7;2024-01-03\n")
    job, _ = scaffolded(f"{folder}/*.csv.gz", tmp_path)
    assert job.source.csv.delimiter == ";"
    assert job.source.path == f"{folder}/*.csv.gz"
    assert types_by_column(job) == {"points": "integer", "joined": "date"}
    assert str(job.output.report).startswith("out/exports/")


def test_parquet_native_types(tmp_path: Path) -> None:
    table = pa.table(
        {
            "uid": pa.array(["a1", "a2"]),
            "account_id": pa.array([1001, 1002], pa.int64()),
            "scores": pa.array([[1, 2], None], pa.list_(pa.int64())),
            "seen_at": pa.array([datetime(2024, 1, 1), None], pa.timestamp("ms")),
            "ratio": pa.array([0.5, None], pa.float32()),
            "meta": pa.array([{"k": 1}, {"k": 2}]),
        }
    )
    pq.write_table(table, tmp_path / "users.parquet")
    job, text = scaffolded(tmp_path / "users.parquet", tmp_path)
    attributes = job.mapping.attributes
    assert job.mapping.customer_id == "uid"
    assert attributes["account_id"].type == "string"  # an id stays text even as int64
    assert (attributes["scores"].type, attributes["scores"].items) == ("array", "integer")
    assert attributes["seen_at"].type == "datetime"
    assert "timestamps without a time zone are read as UTC" in text
    assert attributes["ratio"].type == "number"
    assert "meta" not in types_by_column(job)  # a struct is not a MoEngage type
    assert "# meta: skipped" in text


def test_a_value_that_does_not_parse_in_a_small_sample_keeps_text(tmp_path: Path) -> None:
    source = tmp_path / "small.csv"
    source.write_text("user_id,points,flag_is\nu1,5,true\nu2,2.5x,maybe\nu3,7,false\n")
    job, _ = scaffolded(source, tmp_path)
    assert types_by_column(job) == {"points": "string", "flag_is": "string"}


def test_output_is_yaml_with_comments_a_person_can_read(tmp_path: Path) -> None:
    text = scaffold_job(str(SAMPLE / "customers.csv"))
    tree = yaml.safe_load(text)
    assert list(tree) == ["api", "rate_limit", "source", "mapping", "sync", "output"]
    # Lines stay within 100 characters, except where they quote the input's path (a path
    # is not wrapped; its length depends on where the checkout is).
    assert all(len(line) <= 100 for line in text.splitlines() if str(SAMPLE) not in line)
    assert text.startswith("# moe-import job for")


def test_missing_input_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="no such file or directory"):
        scaffold_job(str(tmp_path / "nope.csv"))
    with pytest.raises(ScaffoldError, match="no CSV or Parquet files"):
        scaffold_job(str(tmp_path))


@pytest.mark.parametrize(
    ("column", "taken", "expected"),
    [
        ("city", set(), "city"),
        ("id", set(), "source_id"),
        ("_id", set(), "source_id"),
        ("moe_points", set(), "points"),
        ("moe_points", {"points"}, "points_2"),
        ("moe_", set(), "column_value"),
        ("moe_email", set(), "moe_email"),
        ("platforms", set(), "platforms_value"),
        ("x" * 250, set(), "x" * 200),
    ],
)
def test_attribute_names_are_made_valid(column: str, taken: set[str], expected: str) -> None:
    name, reason = attribute_name_for(column, taken)
    assert name == expected
    assert (reason is None) == (name == column)


def test_codes_and_long_digit_strings_stay_text(tmp_path: Path) -> None:
    rows = [f"u{i},{100 + i},{4111111111111111 + i},{i}" for i in range(300)]
    rows[150] = "u150,00250,4111111111111261,150"  # one zero-padded code among plain numbers
    source = tmp_path / "codes.csv"
    source.write_text("user_id,store,card,visits\n" + "\n".join(rows) + "\n")
    job, _ = scaffolded(source, tmp_path)
    assert types_by_column(job) == {"store": "string", "card": "string", "visits": "integer"}


def test_second_platform_column_is_a_plain_attribute(tmp_path: Path) -> None:
    source = tmp_path / "devices.csv"
    source.write_text("user_id,platform,first_platform\nu1,web,iOS\nu2,ANDROID,web\n")
    job, text = scaffolded(source, tmp_path)
    assert job.mapping.platforms is not None and job.mapping.platforms.column == "platform"
    assert types_by_column(job) == {"first_platform": "string"}
    assert "mapping.platforms reads 'platform'" in text


@pytest.mark.slow
def test_more_columns_than_moengage_allows_are_left_commented(tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(300)]
    source = tmp_path / "wide.csv"
    source.write_text("user_id," + ",".join(names) + "\nu1," + ",".join("x" * 300) + "\n")
    job, text = scaffolded(source, tmp_path)
    assert len(job.mapping.attributes) == 256
    assert "# c299: c299" in text


@pytest.mark.subprocess
def test_a_csv_named_txt_in_a_folder_scaffolds_a_job_that_validates(tmp_path: Path) -> None:
    """init finds files as the job does (sources.discover), so validate reads the same."""
    from tests.support import run_cli

    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "users.txt").write_text("user_id,first_name\nu1,Ann\nu2,Bo\n")
    init = run_cli("init", str(folder))
    assert init.returncode == 0, init.stderr
    assert "format: csv" in init.stdout
    job = yaml.safe_load(init.stdout)
    job["output"] = {k: str(tmp_path / "out" / Path(v).name) for k, v in job["output"].items()}
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(job))
    # No credentials in the environment: validate sends nothing and needs none.
    assert "MOENGAGE_API_KEY" not in os.environ
    validate = run_cli("validate", str(job_file), "--no-progress")
    assert validate.returncode == 0, validate.stderr
    assert re.search(r"rows read +2\n", validate.stdout), validate.stdout


def test_the_state_file_is_named_after_the_job_not_the_input(tmp_path: Path) -> None:
    from importer.config import load_job

    text = scaffold_job(str(SAMPLE / "customers.csv"))
    assert "state" not in yaml.safe_load(text)["output"]
    states = []
    for name in ("rehearsal.yaml", "nightly.yaml"):
        (tmp_path / name).write_text(text)
        job = load_job(tmp_path / name, env={"MOENGAGE_WORKSPACE_ID": "W", "MOENGAGE_API_KEY": "k"})
        states.append(job.output.state)
        assert job.output.state.parent == job.output.dead_letter.parent
    assert [s.name for s in states] == ["rehearsal.state.db", "nightly.state.db"]


# --- warehouse dialects (issue 12) ----------------------------------------------------------


def test_null_tokens_where_a_column_shows_them(tmp_path: Path) -> None:
    export = tmp_path / "pg.csv"
    export.write_text(
        "user_id,points,nickname,joined\n"
        "u1,5,NULL,2024-01-01\n"
        "u2,NULL,Bee,NULL\n"
        "u3,7,Cee,2024-01-03\n"
    )
    job, text = scaffolded(export, tmp_path)
    assert job.source.null_values == ["", "NULL"]
    assert types_by_column(job) == {"points": "integer", "nickname": "string", "joined": "date"}
    assert "NULL is read as missing in every column (seen in points, joined)" in text


def test_null_text_alone_stays_data(tmp_path: Path) -> None:
    export = tmp_path / "names.csv"
    export.write_text("user_id,nickname\nu1,NULL\nu2,Bee\n")
    job, _ = scaffolded(export, tmp_path)
    assert job.source.null_values == [""]


@pytest.mark.parametrize(
    "values",
    [
        ["2024-03-01 12:34:56.789 -0800", "2024-03-02 00:00:00.000 +0000"],  # Snowflake
        ["2024-03-01 12:34:56+00", "2024-03-02 01:00:00.5-08"],  # Redshift / Postgres
        ["2024-03-01T12:34:56.789Z", "2024-03-01T12:34:56.789+0000"],  # Databricks
        ["2024-03-01 12:34:56.123456+05:30", "2024-03-01 12:34:56"],  # Postgres
    ],
)
def test_warehouse_timestamps_are_datetimes(values: list[str]) -> None:
    from importer.init.inference import guess_text_column

    assert guess_text_column("seen_at", values).type == "datetime"


def test_bigquery_utc_suffix_is_a_datetime_run_reads_without_a_format() -> None:
    from importer.init.inference import guess_text_column

    guess = guess_text_column("ts", ["2024-03-01 12:34:56.789000 UTC", "2024-03-02 00:00:00 UTC"])
    assert (guess.type, guess.options) == ("datetime", {})
    assert guess_text_column("ts", ["2024-13-01 12:34:56 UTC"]).type == "string"


def test_empty_parts_are_skipped_and_the_dialect_read_from_one_with_text(tmp_path: Path) -> None:
    unload = tmp_path / "unload"
    unload.mkdir()
    (unload / "0000_part_00.csv").write_bytes(b"")
    (unload / "0001_part_00.csv").write_text("user_id|points\nu1|5\nu2|6\n")
    job, text = scaffolded(unload, tmp_path)
    assert job.source.csv.delimiter == "|"
    assert types_by_column(job) == {"points": "integer"}
    assert "0001_part_00.csv (2 rows)" in text
    (unload / "0001_part_00.csv").write_bytes(b"")
    with pytest.raises(ScaffoldError, match="all 2 files are empty"):
        scaffold_job(str(unload))


@pytest.mark.parametrize(
    ("encoding", "written"),
    [("cp1252", "cp1252"), ("utf-16", "utf-16"), ("utf-8", "utf-8-sig")],
)
def test_encoding_is_detected(encoding: str, written: str, tmp_path: Path) -> None:
    export = tmp_path / "users.csv"
    export.write_bytes("user_id;city\nu1;München\nu2;Zürich\n".encode(written))
    job, _ = scaffolded(export, tmp_path)
    assert (job.source.csv.encoding, job.source.csv.delimiter) == (encoding, ";")
    assert types_by_column(job) == {"city": "string"}


def test_dates_in_mixed_forms_and_mostly_numbers_say_what_to_set() -> None:
    from importer.init.inference import guess_text_column

    dates = guess_text_column("joined", ["2024-01-15", "2024/02/03", "03/04/2024"])
    assert dates.type == "string" and "dates in more than one form" in " ".join(dates.checks)
    points = guess_text_column("points", ["10", "20", "x", "40", "50"])
    assert points.type == "string"
    assert "4 of 5 sampled values read as an integer" in " ".join(points.checks)
    versions = guess_text_column("app", ["1.2.3", "10.0.1"])
    assert not any("dates" in check for check in versions.checks)
    words = guess_text_column("city", ["Oslo", "Lima", "7"])
    assert not any("read as" in check for check in words.checks)
