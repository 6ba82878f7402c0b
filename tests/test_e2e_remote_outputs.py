"""s3:// outputs seen by the user: a replay of an s3:// dead-letter file resumed on another
runner, the URLs the report and the notification show, `verify --report s3://...`, and the
exit code a notification carries when the last upload finds the state lost.

The CLI runs against the sandbox with its outputs in moto's S3 server on loopback."""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.sandbox_proc import start_sandbox
from tests.support import (
    USERS_MAPPING,
    assert_report_adds_up,
    bucket_json,
    job_dict,
    job_in_bucket,
    run_cli,
    saved_mid_run,
    start_cli,
    users_csv,
)
from tests.test_ops_hooks import webhook


def users_job(runner: Path, url: str, source: Path, s3: Any, endpoint: str, **extra: Any) -> Path:
    output = extra.pop("output", None)
    job = job_dict(runner, url, source, USERS_MAPPING, **extra)
    return job_in_bucket(runner, job, s3.bucket, endpoint, output=output)


def remote_json(s3: Any, name: str) -> dict[str, Any]:
    return bucket_json(s3, f"jobs/users/{name}")


def state_saved_mid_run(s3: Any) -> bool:
    return saved_mid_run(s3, "jobs/users/state.db")


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_a_replay_of_an_s3_dead_letter_file_resumes_on_another_runner(
    tmp_path: Path, s3: Any, s3_env: dict[str, str]
) -> None:
    endpoint = s3_env["AWS_ENDPOINT_URL"]
    source = users_csv(tmp_path, 800)
    paced = {
        "rate_limit": {"updates": 150, "period_seconds": 1},
        "output": {"checkpoint_seconds": 1},
    }
    one_a_request = {"api": {"endpoint": "customer"}}  # refusals isolated, never split
    with start_sandbox(tmp_path, "--reject-customer-ids", "[02468]$") as strict:
        port = str(urlparse(strict.url).port)
        job_a = users_job(tmp_path / "a", strict.url, source, s3, endpoint, **one_a_request)
        first = run_cli("run", str(job_a), "--no-progress")
    assert first.returncode == 1, first.stderr
    letters = f"s3://{s3.bucket}/jobs/users/dead_letter.jsonl"
    (tmp_path / "healthy").mkdir()
    with start_sandbox(tmp_path / "healthy", "--port", port, "--latency-ms", "20") as healthy:
        job_b = users_job(
            tmp_path / "b", healthy.url, source, s3, endpoint, **paced, **one_a_request
        )
        replay = start_cli("replay", str(job_b), letters, "--no-progress")
        deadline = time.monotonic() + 30
        while len(healthy.records()) < 150 or not state_saved_mid_run(s3):
            assert replay.poll() is None, replay.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        replay.send_signal(signal.SIGKILL)
        replay.communicate(timeout=30)
        sent_first = [r["customer_id"] for r in healthy.records()]
        shutil.rmtree(tmp_path / "b")
        lease = remote_json(s3, "state.db.lease")
        time.sleep(max(0.0, float(lease["expires_at"]) - time.time()) + 0.5)
        job_c = users_job(
            tmp_path / "c", healthy.url, source, s3, endpoint, **paced, **one_a_request
        )
        with webhook() as hook:
            resumed = run_cli("replay", str(job_c), letters, "--no-progress", "--notify", hook.url)
        sent = Counter(r["customer_id"] for r in healthy.records())
    assert resumed.returncode == 0, resumed.stderr
    assert len(sent) == 400  # every refused row delivered
    twice = sum(n - 1 for n in sent.values())
    assert twice <= 150 * 2 + 50, twice  # what the saved state could not know, at most
    assert len(sent_first) < 400
    report = remote_json(s3, "dead_letter.replay.report.json")
    assert_report_adds_up(report)
    assert report["rows_read"] == 400 and report["rows_skipped"] >= len(sent_first) - twice
    # What the user sees names the objects, never the runner's temporary copies.
    assert report["replay_of"] == letters
    assert report["dead_letter"] == f"s3://{s3.bucket}/jobs/users/dead_letter.replay.jsonl"
    assert report["state"] == f"s3://{s3.bucket}/jobs/users/state.db"
    [posted] = hook.posts
    assert posted["report"] == f"s3://{s3.bucket}/jobs/users/dead_letter.replay.report.json"
    assert "/tmp/moe-import-" not in json.dumps(posted) + resumed.stdout + resumed.stderr


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_verify_writes_its_report_to_an_s3_url(
    tmp_path: Path, s3: Any, s3_env: dict[str, str]
) -> None:
    endpoint = s3_env["AWS_ENDPOINT_URL"]
    source = users_csv(tmp_path, 30)
    url = f"s3://{s3.bucket}/checks/verify-night-1.json"
    with start_sandbox(tmp_path) as sandbox:
        job = users_job(tmp_path / "a", sandbox.url, source, s3, endpoint)
        assert run_cli("run", str(job), "--no-progress").returncode == 0
        verify = run_cli("verify", str(job), "--sample", "10", "--report", url)
    assert verify.returncode == 0, verify.stderr
    assert f"report: {url}" in verify.stdout
    body = s3.get_object(Bucket=s3.bucket, Key="checks/verify-night-1.json")["Body"].read()
    assert json.loads(body)["exit_code"] == 0
    assert not list((tmp_path / "a").glob("s3*")) and not Path("s3:").exists()


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_a_state_lost_at_the_last_upload_is_exit_3_in_the_notification_too(
    tmp_path: Path, s3: Any, s3_env: dict[str, str]
) -> None:
    endpoint = s3_env["AWS_ENDPOINT_URL"]
    source = users_csv(tmp_path, 300)
    paced = {"rate_limit": {"updates": 150, "period_seconds": 1}}
    with start_sandbox(tmp_path) as sandbox, webhook() as hook:
        job = users_job(tmp_path / "a", sandbox.url, source, s3, endpoint, **paced)
        run = start_cli("run", str(job), "--no-progress", "--notify", hook.url)
        deadline = time.monotonic() + 30
        while len(sandbox.records()) < 50:
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        # Another runner (unguarded, say) writes the state while this run goes on.
        s3.put_object(Bucket=s3.bucket, Key="jobs/users/state.db", Body=b"another run's state")
        _, stderr = run.communicate(timeout=30)
    assert run.returncode == 3, stderr
    [posted] = hook.posts
    assert posted["exit_code"] == 3 and posted["status"] != "success"
    assert "another run wrote the state" in posted["error"]
    report = remote_json(s3, "report.json")
    assert report["exit_code"] == 3
    body = s3.get_object(Bucket=s3.bucket, Key="jobs/users/state.db")["Body"].read()
    assert body == b"another run's state"  # never overwritten
