"""Slices on runners that keep nothing: `--workers 2` with every output in S3 (moto's server on
loopback, conftest.s3_endpoint), two nights on two runners whose disks are thrown away."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox_proc import start_sandbox
from tests.support import (
    USERS_MAPPING,
    assert_report_adds_up,
    bucket_json,
    job_dict,
    job_in_bucket,
    run_cli,
    user_ids,
    users_csv,
)


def _job_in_bucket(runner: Path, url: str, source: Path, s3: Any, endpoint: str) -> Path:
    job = job_dict(runner, url, source, USERS_MAPPING, sync={"mode": "changed"})
    return job_in_bucket(runner, job, s3.bucket, endpoint)


def _object(s3: Any, key: str) -> dict[str, Any]:
    return bucket_json(s3, f"jobs/users/{key}")


def _keys(s3: Any) -> set[str]:
    listed = s3.list_objects_v2(Bucket=s3.bucket, Prefix="jobs/users/")
    return {item["Key"].rpartition("/")[2] for item in listed.get("Contents", [])}


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_workers_with_outputs_in_s3_resume_their_slices_on_another_runner(
    tmp_path: Path, s3: Any, s3_env: dict[str, str]
) -> None:
    endpoint = s3_env["AWS_ENDPOINT_URL"]
    source = users_csv(tmp_path, 200)
    with start_sandbox(tmp_path) as sandbox:
        runner_a = tmp_path / "runner-a"
        job = _job_in_bucket(runner_a, sandbox.url, source, s3, endpoint)
        first = run_cli("run", str(job), "--workers", "2", "--no-progress", cwd=runner_a)
        assert first.returncode == 0, first.stderr
        shutil.rmtree(runner_a)  # the pod is gone, and its disk with it
        night_one = Counter(str(r["customer_id"]) for r in sandbox.records())
        night_one_report = _object(s3, "report.json")
        lines = source.read_text().splitlines()
        lines[5] = lines[5].replace("name5", "renamed5")  # u00005 changes
        lines[9] = lines[9].replace("name9", "renamed9")
        source.write_text("\n".join(lines) + "\n")
        runner_b = tmp_path / "runner-b"
        job = _job_in_bucket(runner_b, sandbox.url, source, s3, endpoint)
        second = run_cli("run", str(job), "--workers", "2", "--no-progress", cwd=runner_b)
        assert second.returncode == 0, second.stderr
        night_two = Counter(str(r["customer_id"]) for r in sandbox.records()) - night_one
    # Night one: every customer once, across the two slices; the merged report in the bucket.
    assert night_one == Counter(user_ids(200))
    assert_report_adds_up(night_one_report)
    assert night_one_report["rows_accepted"] == 200
    # Each slice kept its own state, dead letters and report in the bucket, nothing on disk.
    keys = _keys(s3)
    for k in range(2):
        assert f"state.slice-{k}-of-2.db" in keys
        assert f"report.slice-{k}-of-2.json" in keys
    assert "state.db" not in keys  # no unsliced state: the slices are the job's memory
    assert not list(runner_b.glob("**/*.db"))
    # Night two on a fresh runner: the slices' snapshots came from S3, only changes went.
    assert night_two == Counter({"u00005": 1, "u00009": 1})
    merged = _object(s3, "report.json")
    assert_report_adds_up(merged)
    assert (merged["rows_accepted"], merged["rows_unchanged"]) == (2, 198)
    slices = [_object(s3, f"report.slice-{k}-of-2.json") for k in range(2)]
    assert sum(r["rows_unchanged"] for r in slices) == 198
    assert all(r["rows_read"] + r["other_slices_rows"] == 200 for r in slices)
