"""End to end, issue 12's sources and init side: warehouse exports as they come (partitioned,
in object storage, in their dialects), the CLI against the sandbox and a real S3-protocol
server (moto's standalone server on loopback), the outcome asserted exactly."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.sandbox_proc import start_sandbox
from tests.support import (
    ROOT,
    S3_ENV,
    assert_report_adds_up,
    job_dict,
    read_dead_letters,
    read_report,
    run_cli,
    write_job,
)

FAST = ("--rate", "1000000")
RATE = {"updates": 1_000_000, "period_seconds": 60}
CREDENTIALS = {"MOENGAGE_WORKSPACE_ID": "SANDBOX", "MOENGAGE_API_KEY": "sandbox-key"}


# --- the S3 server -------------------------------------------------------------------------


def _bucket(endpoint: str, name: str) -> Any:
    """An s3fs filesystem on the test server with `name` created (the test side's client)."""
    import s3fs

    fs = s3fs.S3FileSystem(
        key=S3_ENV["AWS_ACCESS_KEY_ID"],
        secret=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"},
        skip_instance_cache=True,
        use_listings_cache=False,
    )
    fs.call_s3("create_bucket", Bucket=name)
    return fs


def _upload(fs: Any, folder: Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            fs.pipe(f"{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())


# --- an export as Spark and Redshift write it ----------------------------------------------


def _parquet(path: Path, columns: dict[str, pa.Array]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def _export(folder: Path) -> Path:
    """Partitioned Parquet (a column only in the later part) plus gzip CSV parts named as
    Redshift's UNLOAD names them, with the marker files writers leave beside them."""
    _parquet(
        folder / "dt=2024-01-01" / "part-00000-a1.snappy.parquet",
        {
            "user_id": pa.array(["u1", "u2"]),
            "name": pa.array(["Ann", "Bob"]),
            "points": pa.array([5, None], pa.int64()),
        },
    )
    _parquet(
        folder / "dt=2024-01-02" / "part-00000-b2.snappy.parquet",
        {
            "user_id": pa.array(["u3"]),
            "name": pa.array(["Cy"]),
            "points": pa.array([7], pa.int64()),
            "tier": pa.array(["gold"]),
        },
    )
    csv_dir = folder / "dt=2024-01-03"
    csv_dir.mkdir(parents=True)
    with gzip.open(csv_dir / "0000_part_00.gz", "wt", encoding="utf-8") as handle:
        handle.write("user_id,name,points,tier\nu4,Di,9,silver\nu5,Ed,,\n")
    with gzip.open(csv_dir / "0001_part_00.gz", "wt", encoding="utf-8") as handle:
        handle.write('user_id,name,points,tier\nu6,"Fa, Jr",11,gold\n')
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / "dt=2024-01-01" / ".part-00000-a1.snappy.parquet.crc").write_bytes(b"\x00crc")
    (folder / "dt=2024-01-02" / "_committed_4711").write_text('{"added":[]}')
    (folder / "dt=2024-01-02" / "_started_4711").write_bytes(b"")
    return folder


EXPORT_MAPPING = {
    "customer_id": "user_id",
    "attributes": {
        "name": "name",
        "points": {"column": "points", "type": "integer"},
        "tier": "tier",
        "export_day": {"column": "dt", "type": "date"},
    },
}
EXPECTED = {
    "u1": {"name": "Ann", "points": 5, "export_day": "2024-01-01T00:00:00Z"},
    "u2": {"name": "Bob", "export_day": "2024-01-01T00:00:00Z"},
    "u3": {"name": "Cy", "points": 7, "tier": "gold", "export_day": "2024-01-02T00:00:00Z"},
    "u4": {"name": "Di", "points": 9, "tier": "silver", "export_day": "2024-01-03T00:00:00Z"},
    "u5": {"name": "Ed", "export_day": "2024-01-03T00:00:00Z"},
    "u6": {"name": "Fa, Jr", "points": 11, "tier": "gold", "export_day": "2024-01-03T00:00:00Z"},
}


def _import(
    tmp_path: Path, source: dict[str, Any], mapping: dict[str, Any], env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]], dict[str, Any]]:
    """Run a job over `source` into a fresh sandbox: (result, users received, report)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = job_dict(tmp_path, sandbox.url, Path(source["path"]), mapping, rate_limit=RATE)
        job["source"] = source
        result = run_cli("run", str(write_job(tmp_path, job)), "--no-progress", env=env)
        return result, sandbox.records(), read_report(tmp_path)


def _attributes(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["customer_id"]: r["attributes"] for r in records}


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_partitioned_directory_reads_every_part_with_hive_columns(tmp_path: Path) -> None:
    export = _export(tmp_path / "export")
    result, records, report = _import(tmp_path / "disk", {"path": str(export)}, EXPORT_MAPPING, {})
    assert result.returncode == 0, result.stderr
    assert _attributes(records) == EXPECTED
    assert sorted(r["customer_id"] for r in records) == ["u1", "u2", "u3", "u4", "u5", "u6"]
    assert report["rows_read"] == 6 and report["rows_accepted"] == 6
    assert len(report.get("sources", [])) in (0, 4)  # the markers are not sources
    assert read_dead_letters(tmp_path / "disk") == []


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_a_column_missing_from_every_part_is_refused(tmp_path: Path) -> None:
    export = _export(tmp_path / "export")
    mapping = {**EXPORT_MAPPING, "attributes": {"plan": "plan_name"}}
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = job_dict(tmp_path, sandbox.url, export, mapping)
        result = run_cli("run", str(write_job(tmp_path, job)), "--no-progress")
        assert sandbox.records() == []
    assert result.returncode == 2
    assert "'plan_name'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_s3_export_imports_exactly_as_from_disk(tmp_path: Path, s3_env: dict[str, str]) -> None:
    export = _export(tmp_path / "export")
    endpoint = s3_env["AWS_ENDPOINT_URL"]
    fs = _bucket(endpoint, "exports-same")
    _upload(fs, export, "exports-same/spark/users")
    job_env = {k: v for k, v in s3_env.items() if k != "AWS_ENDPOINT_URL"}
    _, from_disk, _ = _import(tmp_path / "disk", {"path": str(export)}, EXPORT_MAPPING, {})
    source = {
        "path": "s3://exports-same/spark/users/",
        "storage": {"endpoint_url": endpoint, "region": "us-east-1"},
    }
    result, from_s3, report = _import(tmp_path / "s3", source, EXPORT_MAPPING, job_env)
    assert result.returncode == 0, result.stderr
    assert _attributes(from_s3) == _attributes(from_disk)
    assert len(from_s3) == len(from_disk) == 6
    assert _attributes(from_s3) == EXPECTED
    assert report["rows_accepted"] == 6 and report["rows_invalid"] == 0
    assert_report_adds_up(report)

    # A glob over the same bucket, and one object by its URL.
    source["path"] = "s3://exports-same/spark/users/dt=*/*.gz"
    result, globbed, _ = _import(tmp_path / "glob", source, EXPORT_MAPPING, job_env)
    assert result.returncode == 0, result.stderr
    assert _attributes(globbed) == {k: v for k, v in EXPECTED.items() if k in ("u4", "u5", "u6")}


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_s3_resume_is_keyed_by_etag_and_size(tmp_path: Path, s3_env: dict[str, str]) -> None:
    endpoint = s3_env["AWS_ENDPOINT_URL"]
    fs = _bucket(endpoint, "exports-resume")
    fs.pipe("exports-resume/a.csv", b"user_id,name\nu1,Ann\nu2,Bob\n")
    fs.pipe("exports-resume/b.csv", b"user_id,name\nu3,Cy\n")
    job_env = {k: v for k, v in s3_env.items() if k != "AWS_ENDPOINT_URL"}
    mapping = {"customer_id": "user_id", "attributes": {"name": "name"}}
    source = {"path": "s3://exports-resume/", "storage": {"endpoint_url": endpoint}}
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = job_dict(tmp_path, sandbox.url, Path("unused"), mapping, rate_limit=RATE)
        job["source"] = source
        path = str(write_job(tmp_path, job))
        first = run_cli("run", path, "--no-progress", env=job_env)
        assert first.returncode == 0, first.stderr
        again = run_cli("run", path, "--no-progress", env=job_env)
        assert again.returncode == 0, again.stderr
        assert read_report(tmp_path)["rows_skipped"] == 3  # nothing sent twice
        # Rewritten (same size, new ETag): its earlier progress no longer applies.
        fs.pipe("exports-resume/b.csv", b"user_id,name\nu3,Cz\n")
        third = run_cli("run", path, "--no-progress", env=job_env)
        assert third.returncode == 0, third.stderr
        report = read_report(tmp_path)
        assert (report["rows_skipped"], report["rows_accepted"]) == (2, 1)
        assert "changed since the last run" in third.stderr
        names = [(r["customer_id"], r["attributes"]["name"]) for r in sandbox.records()]
    assert names == [("u1", "Ann"), ("u2", "Bob"), ("u3", "Cy"), ("u3", "Cz")]


@pytest.mark.subprocess
def test_s3_errors_name_the_url(tmp_path: Path, s3_env: dict[str, str]) -> None:
    endpoint = s3_env["AWS_ENDPOINT_URL"]
    _bucket(endpoint, "exports-errors")
    job_env = {k: v for k, v in s3_env.items() if k != "AWS_ENDPOINT_URL"}
    mapping = {"customer_id": "user_id"}
    for path, expected in (
        ("s3://exports-errors/nothing/", "no CSV or Parquet files under s3://exports-errors/"),
        ("s3://no-such-bucket-here/x.csv", "s3://no-such-bucket-here/x.csv"),
    ):
        job = job_dict(tmp_path, "http://127.0.0.1:9", Path("unused"), mapping)
        job["source"] = {"path": path, "storage": {"endpoint_url": endpoint}}
        result = run_cli("validate", str(write_job(tmp_path, job)), env=job_env)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr
    # No credentials anywhere in the chain: said so, with what to set.
    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    bare |= {
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
        "AWS_CONFIG_FILE": "/nonexistent/config",
    }
    job = job_dict(tmp_path, "http://127.0.0.1:9", Path("unused"), mapping)
    job["source"] = {"path": "s3://exports-errors/x/", "storage": {"endpoint_url": endpoint}}
    path = str(write_job(tmp_path, job))
    result = subprocess.run(
        [sys.executable, "-m", "importer", "validate", path],
        cwd=ROOT,
        env=bare,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "no AWS credentials found" in result.stderr and "Traceback" not in result.stderr


# --- init, then validate with no edits -----------------------------------------------------


def _sent_by_a_real_run(tmp_path: Path, job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`job` (as `init` wrote it) run against the sandbox: the attributes it received, by
    customer."""
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job["api"] = {"base_url": sandbox.url, "workspace_id": "SANDBOX", "api_key": "sandbox-key"}
        job["rate_limit"] = RATE
        run = run_cli(
            "run", str(write_job(tmp_path, job, "run.yaml")), "--no-progress", cwd=tmp_path
        )
        assert run.returncode == 0, run.stderr
        return _attributes(sandbox.records())


def _init_and_validate(
    tmp_path: Path, input_path: str, env: dict[str, str] | None = None
) -> tuple[str, dict[str, Any], subprocess.CompletedProcess[str]]:
    env = {**CREDENTIALS, **(env or {})}
    init = run_cli("init", input_path, env=env)
    assert init.returncode == 0, init.stderr
    job_path = tmp_path / "init.yaml"
    job_path.write_text(init.stdout)
    validated = run_cli("validate", str(job_path), "--no-progress", cwd=tmp_path, env=env)
    return init.stdout, yaml.safe_load(init.stdout), validated


def _types(job: dict[str, Any]) -> dict[str, str]:
    attributes = job["mapping"]["attributes"]
    return {
        (spec if isinstance(spec, str) else spec["column"]): (
            "string" if isinstance(spec, str) else spec["type"]
        )
        for spec in attributes.values()
    }


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_init_then_validate_snowflake_export(tmp_path: Path) -> None:
    export = tmp_path / "snowflake.csv"
    export.write_text(
        "USER_ID,EMAIL,POINTS,CREATED_AT,LAST_SEEN\n"
        "u1,a@x.com,5,2024-03-01 12:34:56.789 -0800,\\N\n"
        "u2,\\N,\\N,2024-03-02 01:00:00.000 +0000,2024-03-02 01:00:00.000 -0800\n"
        "u3,c@x.com,7,2024-03-03 23:59:59.999 +0530,\\N\n"
    )
    _, job, validated = _init_and_validate(tmp_path, str(export))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert job["source"]["null_values"] == ["", "\\N"]
    assert _types(job) == {
        "EMAIL": "string",
        "POINTS": "integer",
        "CREATED_AT": "datetime",
        "LAST_SEEN": "datetime",
    }
    report = read_report_of(tmp_path, job)
    assert (report["rows_read"], report["rows_invalid"]) == (3, 0)
    # And a real run sends no "\N" as data, and the -0800 offsets converted to UTC.
    sent = _sent_by_a_real_run(tmp_path, job)
    assert "\\N" not in str(sent)
    created = next(k for k in sent["u1"] if sent["u1"][k] == "2024-03-01T20:34:56Z")
    assert created and "POINTS" not in sent["u2"] and sent["u3"]["POINTS"] == 7


def read_report_of(tmp_path: Path, job: dict[str, Any]) -> dict[str, Any]:
    import json

    report = tmp_path / job["output"]["report"]
    dry = report.with_name(f"{report.stem}.dry-run.json")
    loaded: dict[str, Any] = json.loads((dry if dry.exists() else report).read_text())
    return loaded


@pytest.mark.subprocess
def test_init_then_validate_bigquery_export(tmp_path: Path) -> None:
    export = tmp_path / "bigquery.csv"
    export.write_text(
        "user_id,name,updated_at,signup_date\n"
        "u1,Ann,2024-03-01 12:34:56.789000 UTC,2024-03-01\n"
        "u2,Bob,2024-03-02 00:00:01.000000 UTC,2024-03-02\n"
    )
    _, job, validated = _init_and_validate(tmp_path, str(export))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert _types(job)["updated_at"] == "datetime"
    assert "2024-03-01T12:34:56Z" in validated.stdout  # the sample of built elements
    report = read_report_of(tmp_path, job)
    assert (report["rows_read"], report["rows_invalid"]) == (2, 0)


@pytest.mark.subprocess
def test_init_then_validate_spark_export(tmp_path: Path) -> None:
    spark = tmp_path / "spark"
    for day, rows in (("2024-01-01", ["a1", "a2"]), ("2024-01-02", ["b1"])):
        columns: dict[str, pa.Array] = {
            "customer_id": pa.array(rows),
            "score": pa.array([1.5] * len(rows)),
        }
        if day == "2024-01-02":  # a column added in a later part
            columns["plan"] = pa.array(["pro"])
        _parquet(spark / f"dt={day}" / "part-00000.snappy.parquet", columns)
    (spark / "_SUCCESS").write_bytes(b"")
    (spark / "dt=2024-01-01" / ".part-00000.snappy.parquet.crc").write_bytes(b"crc")
    text, job, validated = _init_and_validate(tmp_path, str(spark))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert _types(job) == {"score": "number", "plan": "string", "dt": "date"}
    assert "2 parquet files" in text
    report = read_report_of(tmp_path, job)
    assert (report["rows_read"], report["rows_invalid"]) == (3, 0)


# --- init on real files ----------------------------------------------------------------------


@pytest.mark.subprocess
def test_init_empty_file_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    result = run_cli("init", str(empty))
    assert result.returncode == 2
    assert "empty" in result.stderr and "No columns to parse" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.subprocess
def test_init_skips_and_reports_malformed_lines(tmp_path: Path) -> None:
    export = tmp_path / "users.csv"
    export.write_text('user_id,name,points\nu1,Ann,5\nu2,"Bo"b",x,y\nu3,Cy,7\n')
    text, job, validated = _init_and_validate(tmp_path, str(export))
    assert "1 malformed record(s) left out of the sample" in text and "line 3" in text
    assert _types(job)["points"] == "integer"
    assert validated.returncode == 1  # run dead-letters the malformed record: not silent
    assert read_report_of(tmp_path, job)["rows_invalid"] == 1


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_redshift_escapes_and_gz_parts_without_csv_in_the_name(tmp_path: Path) -> None:
    unload = tmp_path / "unload"
    unload.mkdir()
    with gzip.open(unload / "0000_part_00.gz", "wt", encoding="utf-8") as handle:
        handle.write("user_id|note|points\nu1|a\\|b|5\nu2|plain|6\nu4|more|8\nu5|rows|9\n")
    with gzip.open(unload / "0001_part_00.gz", "wt", encoding="utf-8") as handle:
        handle.write("user_id|note|points\nu3|back\\\\slash|7\n")
    _, job, validated = _init_and_validate(tmp_path, str(unload))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert job["source"]["format"] == "auto"
    assert job["source"]["csv"] == {"delimiter": "|", "escapechar": "\\"}
    assert _types(job) == {"note": "string", "points": "integer"}
    sent = _sent_by_a_real_run(tmp_path, job)
    assert sent == {
        "u1": {"note": "a|b", "points": 5},
        "u2": {"note": "plain", "points": 6},
        "u3": {"note": "back\\slash", "points": 7},
        "u4": {"note": "more", "points": 8},
        "u5": {"note": "rows", "points": 9},
    }


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_duplicate_headers_are_refused_by_init_and_run(tmp_path: Path) -> None:
    export = tmp_path / "dup.csv"
    export.write_text("user_id,email,name,email\nu1,a@x.com,Ann,b@x.com\n")
    init = run_cli("init", str(export))
    assert init.returncode == 2
    assert "'email' is column 2, 4" in init.stderr and "Traceback" not in init.stderr
    mapping = {"customer_id": "user_id", "attributes": {"email": "email"}}
    with start_sandbox(tmp_path, *FAST) as sandbox:
        job = job_dict(tmp_path, sandbox.url, export, mapping)
        run = run_cli("run", str(write_job(tmp_path, job)), "--no-progress")
        assert sandbox.records() == []
    assert run.returncode == 2 and "'email' is column 2, 4" in run.stderr


@pytest.mark.subprocess
def test_init_on_s3_samples_across_parts(tmp_path: Path, s3_env: dict[str, str]) -> None:
    export = _export(tmp_path / "export")
    fs = _bucket(s3_env["AWS_ENDPOINT_URL"], "exports-init")
    _upload(fs, export, "exports-init/users")
    init = run_cli("init", "s3://exports-init/users/", env={**CREDENTIALS, **s3_env})
    assert init.returncode == 0, init.stderr
    job = yaml.safe_load(init.stdout)
    assert job["source"]["path"] == "s3://exports-init/users/"
    assert _types(job) == {"name": "string", "points": "integer", "tier": "string", "dt": "date"}


@pytest.mark.subprocess
@pytest.mark.slow
def test_s3_objects_are_streamed_not_downloaded_whole(s3_env: dict[str, str]) -> None:
    """Memory while reading an object stays flat: a 3x larger object takes no more of it."""
    import tracemalloc

    from importer import sources
    from importer.config import SourceConfig, StorageOptions

    fs = _bucket(s3_env["AWS_ENDPOINT_URL"], "exports-big")
    line = b"u%07d,Some Name Here,some.address@example.com,2024-03-01 12:34:56,1234\n"
    storage = StorageOptions(endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    peaks: dict[int, int] = {}
    for mib in (24, 72):
        rows = mib * (1 << 20) // len(line % 0)
        body = b"user_id,name,email,ts,n\n" + b"".join(line % i for i in range(rows))
        fs.pipe(f"exports-big/{mib}.csv", body)
        size = len(body)
        del body
        (file,) = sources.discover(
            f"s3://exports-big/{mib}.csv", sources.SourceFormat.AUTO, storage
        )
        assert file.size == size and file.etag
        tracemalloc.start()
        try:
            chunks = sources.iter_chunks(file, SourceConfig(storage=storage), columns=["user_id"])
            read = sum(len(chunk.frame) for chunk in chunks)
            peaks[mib] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert read == rows
    # Python memory (s3fs's read blocks and the scanner's buffer), measured at about 29 MiB
    # for either object with 8 MiB blocks: it follows the block size, not the object's.
    assert peaks[72] < 1.25 * peaks[24], peaks
    assert peaks[72] < 40 << 20, peaks
