"""s3:// state, dead letters and reports, for runners that keep nothing: the CLI against the
sandbox with its outputs in moto's S3 server on loopback (conftest.s3_endpoint).

moto honours conditional writes (If-Match, If-None-Match: *), so the refusal of a store
that does not is tested through a small loopback proxy in front of it that strips those
two headers, as such a store would ignore them."""

from __future__ import annotations

import http.client
import http.server
import json
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
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
    start_cli,
    user_ids,
    users_csv,
)

BUCKET = "nightly"
PREFIX = f"s3://{BUCKET}/jobs/users"


def _remote_job(
    runner: Path, url: str, source: Path, bucket: str, endpoint: str, **extra: Any
) -> Path:
    """The job file as a runner has it: its outputs in the bucket, nothing local kept."""
    output, storage = extra.pop("output", None), extra.pop("storage", None)
    job = job_dict(runner, url, source, USERS_MAPPING, **extra)
    return job_in_bucket(runner, job, bucket, endpoint, output=output, storage=storage)


def _report(s3: Any) -> dict[str, Any]:
    return bucket_json(s3, "jobs/users/report.json")


def _sent(sandbox: Any) -> Counter[str]:
    return Counter(str(r["customer_id"]) for r in sandbox.records())


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_night_two_on_another_runner_sends_only_changed_rows(
    tmp_path: Path, s3: Any, s3_env: dict[str, str]
) -> None:
    endpoint = s3_env["AWS_ENDPOINT_URL"]
    source = users_csv(tmp_path, 200)
    with start_sandbox(tmp_path) as sandbox:
        runner_a = tmp_path / "runner-a"
        job = _remote_job(
            runner_a, sandbox.url, source, s3.bucket, endpoint, sync={"mode": "changed"}
        )
        first = run_cli("run", str(job), "--no-progress", cwd=runner_a)
        assert first.returncode == 0, first.stderr
        assert _report(s3)["rows_accepted"] == 200
        shutil.rmtree(runner_a)  # the pod is gone, and its disk with it
        night_one = _sent(sandbox)
        lines = source.read_text().splitlines()
        lines[5] = lines[5].replace("name5", "renamed5")  # u00005 changes
        lines[9] = lines[9].replace("name9", "renamed9")
        source.write_text("\n".join(lines) + "\n")
        runner_b = tmp_path / "runner-b"
        job = _remote_job(
            runner_b, sandbox.url, source, s3.bucket, endpoint, sync={"mode": "changed"}
        )
        second = run_cli("run", str(job), "--no-progress", cwd=runner_b)
        assert second.returncode == 0, second.stderr
        night_two = _sent(sandbox) - night_one
    assert set(night_one) == user_ids(200)
    assert night_two == Counter({"u00005": 1, "u00009": 1})
    report = _report(s3)
    assert_report_adds_up(report)
    assert (report["rows_accepted"], report["rows_unchanged"]) == (2, 198)
    assert not list(runner_b.glob("**/state.db"))  # nothing kept on the runner
    status = run_cli("status", str(job), "--json", cwd=runner_b)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["state"] == f"s3://{s3.bucket}/jobs/users/state.db"
    assert shown["progress"]["snapshot_customers"] == 200


def _lease(s3: Any) -> dict[str, Any]:
    return bucket_json(s3, "jobs/users/state.db.lease")


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_a_runner_killed_mid_run_resumes_on_another(
    tmp_path: Path, s3: Any, s3_env: dict[str, str]
) -> None:
    endpoint = s3_env["AWS_ENDPOINT_URL"]
    rows, rate, every = 1500, 150, 1.0
    source = users_csv(tmp_path, rows)
    paced = {
        "rate_limit": {"updates": rate, "period_seconds": 1},
        "delivery": {"max_batch_bytes": 2000},
    }
    with start_sandbox(tmp_path) as sandbox:
        runner_a = tmp_path / "runner-a"
        job = _remote_job(
            runner_a,
            sandbox.url,
            source,
            s3.bucket,
            endpoint,
            output={"checkpoint_seconds": every},
            **paced,
        )
        first = start_cli("run", str(job), "--no-progress")
        deadline = time.monotonic() + 30
        while not sandbox.records():
            assert time.monotonic() < deadline, "the run did not get going"
            time.sleep(0.05)
        # While runner A is alive, its lease keeps runner B from starting (and from the state).
        refused = run_cli(
            "run",
            str(
                _remote_job(
                    tmp_path / "runner-b",
                    sandbox.url,
                    source,
                    s3.bucket,
                    endpoint,
                    output={"checkpoint_seconds": every},
                    **paced,
                )
            ),
            "--no-progress",
        )
        assert refused.returncode == 2 and "another run of this job holds" in refused.stderr
        while len(sandbox.records()) < 450:
            assert time.monotonic() < deadline, "the run did not get going"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        before = len(sandbox.records())
        assert before < rows
        shutil.rmtree(runner_a)
        # The dead runner's lease expires (it renews every second, lasts 5 s).
        time.sleep(max(0.0, float(_lease(s3)["expires_at"]) - time.time()) + 0.5)
        again = run_cli(
            "run",
            str(tmp_path / "runner-b" / "users.yaml"),
            "--no-progress",
            cwd=tmp_path / "runner-b",
        )
        assert again.returncode == 0, again.stderr
        sent = _sent(sandbox)
    assert set(sent) == user_ids(rows)  # no row lost
    twice = sum(count - 1 for count in sent.values())
    assert twice <= rate * (every + 1), twice  # at most about one checkpoint's worth again
    report = _report(s3)
    assert_report_adds_up(report)
    assert report["rows_skipped"] + report["rows_accepted"] == rows
    assert report["rows_skipped"] >= before - rate * (every + 1)


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_two_runners_started_together_one_runs(
    tmp_path: Path, s3: Any, s3_env: dict[str, str]
) -> None:
    endpoint = s3_env["AWS_ENDPOINT_URL"]
    source = users_csv(tmp_path, 300)
    with start_sandbox(tmp_path, "--latency-ms", "20") as sandbox:
        jobs = [
            _remote_job(tmp_path / name, sandbox.url, source, s3.bucket, endpoint)
            for name in ("runner-a", "runner-b")
        ]
        started = [start_cli("run", str(job), "--no-progress") for job in jobs]
        ended = [(p.wait(timeout=60), p.communicate()[1]) for p in started]
        head = s3.head_object(Bucket=s3.bucket, Key="jobs/users/state.db")
    codes = sorted(code for code, _ in ended)
    assert codes == [0, 2], ended
    loser = next(err for code, err in ended if code == 2)
    assert "another run of this job holds" in loser and "was not touched" in loser
    report = _report(s3)
    assert report["exit_code"] == 0 and report["rows_accepted"] == 300
    # The state object was written by the winner alone: its last version names its run.
    assert head["Metadata"] == {"run-id": report["run_id"], "final": "1"}
    assert Counter(_sent(sandbox).values()) == Counter({1: 300})


class _StripConditions(http.server.BaseHTTPRequestHandler):
    """Forwards to the S3 server without If-Match / If-None-Match (a store that ignores them)."""

    target: tuple[str, int] = ("127.0.0.1", 0)

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in ("if-match", "if-none-match")
        }
        upstream = http.client.HTTPConnection(*self.target, timeout=10)
        upstream.request(self.command, self.path, body=body, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def unguarded(s3_env: dict[str, str]) -> Iterator[str]:
    host, port = s3_env["AWS_ENDPOINT_URL"].removeprefix("http://").split(":")
    handler = type("Handler", (_StripConditions,), {"target": (host, int(port))})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_a_store_without_conditional_writes_is_refused_unless_allowed(
    tmp_path: Path, s3: Any, unguarded: str
) -> None:
    source = users_csv(tmp_path, 20)
    with start_sandbox(tmp_path) as sandbox:
        job = _remote_job(tmp_path / "runner", sandbox.url, source, s3.bucket, unguarded)
        refused = run_cli("run", str(job), "--no-progress")
        assert refused.returncode == 2, refused.stderr
        assert f"bucket {s3.bucket}" in refused.stderr
        assert "output.storage.allow_unguarded: true" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert sandbox.records() == []
        allowed = _remote_job(
            tmp_path / "runner",
            sandbox.url,
            source,
            s3.bucket,
            unguarded,
            storage={"allow_unguarded": True},
        )
        ran = run_cli("run", str(allowed), "--no-progress")
        assert ran.returncode == 0, ran.stderr
        assert len(sandbox.records()) == 20


@pytest.mark.subprocess
def test_a_missing_bucket_is_named(tmp_path: Path, s3_env: dict[str, str]) -> None:
    source = users_csv(tmp_path, 5)
    job = _remote_job(
        tmp_path / "runner",
        "http://127.0.0.1:9",
        source,
        "no-such-bucket",
        s3_env["AWS_ENDPOINT_URL"],
    )
    ran = run_cli("run", str(job), "--no-progress")
    assert ran.returncode == 2, ran.stderr
    assert "s3://no-such-bucket/" in ran.stderr and "no such bucket" in ran.stderr
    assert "Traceback" not in ran.stderr
