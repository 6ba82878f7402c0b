"""A sliced job's memory and hooks end to end: `--workers N` sends one notification (the
merged report), `status` and `verify` read every slice's state, `replay` of a slice's
dead-letter file works with that slice's state, and a state of another N in object storage
(s3://) is refused by the objects' LastModified."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.sandbox_proc import start_sandbox
from tests.support import S3_ENV, assert_report_adds_up, run_cli
from tests.test_e2e_slices import CUSTOMERS, ROWS, _job, _messy_csv, _report
from tests.test_ops_hooks import webhook


def _slices_of(folder: Path, stem: str, suffix: str) -> list[Path]:
    return [folder / f"{stem}.slice-{k}-of-2{suffix}" for k in range(2)]


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_workers_send_one_notification_with_the_merged_report(tmp_path: Path) -> None:
    source = _messy_csv(tmp_path / "users.csv")
    with webhook() as hook, start_sandbox(tmp_path) as sandbox:
        notify = {"url": hook.url, "on": ["failure", "success"]}
        job = _job(tmp_path / "out", sandbox.url, source, output={
            "dead_letter": str(tmp_path / "out" / "dead_letter.jsonl"),
            "state": str(tmp_path / "out" / "state.db"),
            "report": str(tmp_path / "out" / "report.json"),
            "notify": notify,
        })  # fmt: skip
        done = run_cli("run", str(job), "--workers", "2", "--no-progress")
        flag = run_cli("run", str(job), "--workers", "2", "--no-progress", "--notify", hook.url)
        refused = run_cli("run", str(job), "--workers", "2", "--slice", "0/2", "--no-progress")
    assert done.returncode == 1, done.stderr
    assert flag.returncode in (0, 1) and refused.returncode == 2, flag.stderr + refused.stderr
    # One a command: the merged report of the first, the rerun's (all skipped), the refusal.
    assert [post["exit_code"] for post in hook.posts] == [1, flag.returncode, 2], hook.posts
    first = hook.posts[0]
    assert first["counts"]["rows_read"] == ROWS + 3
    assert first["counts"]["rows_invalid"] == 3 and first["status"] == "failure"
    assert first["report"] == str(tmp_path / "out" / "report.json")
    assert hook.posts[1]["counts"]["rows_skipped"] == ROWS + 3
    assert "cannot be combined" in hook.posts[2]["error"]


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_status_and_verify_of_a_sliced_job_read_every_slice(tmp_path: Path) -> None:
    source = _messy_csv(tmp_path / "users.csv")
    out = tmp_path / "out"
    with start_sandbox(tmp_path, "--rate", "1000000") as sandbox:
        job = _job(out, sandbox.url, source)
        done = run_cli("run", str(job), "--workers", "2", "--no-progress")
        assert done.returncode == 1, done.stderr
        # Every customer delivered is sampled: half of them are in each slice's state.
        verified = run_cli("verify", str(job), "--sample", "1000")
    as_json = run_cli("status", str(job), "--json")
    text = run_cli("status", str(job))
    assert verified.returncode == 0, verified.stderr
    assert f"{CUSTOMERS} customers checked, {CUSTOMERS} found, 0 differences" in verified.stdout
    assert (out / "report.verify.json").exists()
    assert as_json.returncode == 0 and text.returncode == 0, as_json.stderr + text.stderr
    status = json.loads(as_json.stdout)
    assert status["slices"] == 2
    states = [one["state"] for one in status["by_slice"]]
    assert states == [str(path) for path in _slices_of(out, "state", ".db")]
    reports = [_report(path) for path in _slices_of(out, "report", ".json")]
    for one, report in zip(status["by_slice"], reports, strict=True):
        assert one["runs"][0]["counts"]["rows_read"] == report["rows_read"] > 0
        assert one["dead_letters"]["lines"] == report["rows_invalid"]
    total = status["total"]
    assert total["last_run_counts"]["rows_read"] == ROWS + 3
    assert total["last_run_counts"]["rows_invalid"] == 3 == total["dead_letters"]["validation"]
    assert total["rows_pending"] == 0
    assert "slice 0/2" in text.stdout and "slice 1/2" in text.stdout
    assert "total of 2 slices" in text.stdout and f"read {ROWS + 3:,}" in text.stdout


# One row a request, a few at a time: a customer the sandbox always fails then fails on its
# own while the others are answered (a whole run failing would read as an outage).
ONE_BY_ONE: dict[str, Any] = {
    "api": {"endpoint": "customer"},
    "delivery": {"max_attempts": 2, "concurrency": 3, "backoff_base_seconds": 0.01},
}


def _one_by_one(folder: Path, url: str, source: Path) -> Path:
    path = _job(folder, url, source)
    job = yaml.safe_load(path.read_text())
    job["api"].update(ONE_BY_ONE["api"])
    job["delivery"] = ONE_BY_ONE["delivery"]
    job["rate_limit"] = {"updates": 100000, "period_seconds": 1}
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_replay_of_a_slices_dead_letters_works_with_that_slices_state(tmp_path: Path) -> None:
    source = _messy_csv(tmp_path / "users.csv", rows=120)
    out = tmp_path / "out"
    # Every tenth row's customer (ids ending in 7): failures spread out, never an outage.
    failing = ("--fail-customer-ids", "^c0[0-9][0-9]7$", "--latency-ms", "20")
    (tmp_path / "night").mkdir()
    with start_sandbox(tmp_path / "night", *failing) as down:
        job = _one_by_one(out, down.url, source)
        night = run_cli("run", str(job), "--workers", "2", "--no-progress")
    assert night.returncode == 1, night.stderr
    letters = {
        k: [json.loads(line) for line in path.read_text().splitlines()]
        for k, path in enumerate(_slices_of(out, "dead_letter", ".jsonl"))
    }
    failed = {
        k: {x["customer_id"] for x in v if x["stage"] == "delivery"} for k, v in letters.items()
    }
    assert failed[0] and failed[1], letters  # the failed customers fall in both slices
    (tmp_path / "replay").mkdir()
    with start_sandbox(tmp_path / "replay", "--latency-ms", "0") as up:
        job = _one_by_one(out, up.url, source)
        dead = _slices_of(out, "dead_letter", ".jsonl")[1]
        replayed = run_cli("replay", str(job), str(dead), "--no-progress")
        report = _report(out / "dead_letter.slice-1-of-2.replay.report.json")
        again = run_cli("replay", str(job), str(dead), "--no-progress")
        named = run_cli("replay", str(job), str(dead), "--slice", "1/2", "--no-progress")
        sent = [r["customer_id"] for r in up.records()]
    assert replayed.returncode in (0, 1), replayed.stderr
    assert set(sent) == failed[1] and len(sent) == len(failed[1]), sent
    assert_report_adds_up(report)
    assert report["rows_accepted"] == len(failed[1])
    # The slice's state holds what the replay settled: a second replay sends nothing, with
    # the slice from the file's name or from --slice.
    assert again.returncode in (0, 1) and named.returncode in (0, 1), again.stderr
    assert not (out / "state.db").exists()
    assert not list(out.glob("*.slice-1-of-2.replay.slice-*"))


@pytest.mark.subprocess
def test_a_state_in_object_storage_made_with_another_n_is_refused(
    tmp_path: Path, s3_env: dict[str, str]
) -> None:
    import botocore.session

    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=s3_env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    bucket = "slices-other-n"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="jobs/users/state.slice-3-of-4.db", Body=b"")
    client.put_object(Bucket=bucket, Key="jobs/users/state.slice-3-of-4.db.lease", Body=b"")
    source = _messy_csv(tmp_path / "users.csv")
    prefix = f"s3://{bucket}/jobs/users"
    storage = {"endpoint_url": s3_env["AWS_ENDPOINT_URL"], "region": "us-east-1"}
    output = {
        "state": f"{prefix}/state.db",
        "dead_letter": f"{prefix}/dead_letter.jsonl",
        "report": f"{prefix}/report.json",
        "storage": storage,
    }
    # An unreachable host: nothing may reach it; a run past the refusal gives up soon.
    delivery = {"max_outage_seconds": 1, "timeout_seconds": 1, "max_attempts": 1}
    job = _job(tmp_path / "runner", "https://api.invalid", source, output=output, delivery=delivery)
    sliced = run_cli("run", str(job), "--slice", "0/2", "--no-progress")
    workers = run_cli("run", str(job), "--workers", "2", "--no-progress")
    for done in (sliced, workers):
        assert done.returncode == 2, done.stderr
        assert f"{prefix}/state.slice-3-of-4.db was made with 4 slice(s)" in done.stderr
        assert "Traceback" not in done.stderr
    # The same N is this job's own memory: not refused for it (the host is unreachable).
    same = run_cli("run", str(job), "--slice", "1/4", "--no-progress")
    assert "made with" not in same.stderr


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_forked_slices_read_an_s3_export_and_keep_their_state_in_s3(
    tmp_path: Path, s3_env: dict[str, str]
) -> None:
    from tests.test_e2e_warehouse import EXPECTED, EXPORT_MAPPING, _bucket, _export, _upload

    endpoint = s3_env["AWS_ENDPOINT_URL"]
    fs = _bucket(endpoint, "slices-export")  # the parent lists it before forking the slices
    _upload(fs, _export(tmp_path / "export"), "slices-export/users")
    storage = {"endpoint_url": endpoint, "region": "us-east-1"}
    prefix = "s3://slices-export/state"
    output = {
        "state": f"{prefix}/state.db",
        "dead_letter": f"{prefix}/dead_letter.jsonl",
        "report": f"{prefix}/report.json",
        "storage": storage,
    }
    with start_sandbox(tmp_path, "--rate", "1000000") as sandbox:
        job = _job(tmp_path / "runner", sandbox.url, tmp_path, output=output)
        settings = yaml.safe_load(job.read_text())
        settings["source"] = {"path": "s3://slices-export/users/", "storage": storage}
        settings["mapping"] = EXPORT_MAPPING
        job.write_text(yaml.safe_dump(settings, sort_keys=False))
        done = run_cli("run", str(job), "--workers", "2", "--no-progress")
        again = run_cli("run", str(job), "--workers", "2", "--no-progress")
        records = sandbox.records()
    assert done.returncode == 0, done.stderr
    assert {r["customer_id"]: r["attributes"] for r in records} == EXPECTED
    assert len(records) == len(EXPECTED)  # the second night sent nothing: each slice resumed
    assert again.returncode == 0, again.stderr
    merged = json.loads(fs.cat("slices-export/state/report.json"))
    assert merged["rows_skipped"] == len(EXPECTED) and merged["exit_code"] == 0
    assert fs.exists("slices-export/state/state.slice-0-of-2.db")
    assert fs.exists("slices-export/state/state.slice-1-of-2.db")
    assert "slices: 0/2 exit 0" in done.stderr
