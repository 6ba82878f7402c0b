"""Ops hooks for schedulers: the end-of-run notification, the Prometheus metrics file, and
the Python API used as an orchestrator would, all against the sandbox on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import importer
from importer.outputs import metrics
from tests.sandbox_proc import start_sandbox
from tests.support import SANDBOX_KEY, job_dict, read_report, run_cli, write_job

CSV = """user_id,first_name,email
c001,Ada,ada@example.com
c002,Bob,bob@example.com
guest,Eve,eve@example.com
c004,Trent,trent@example.com
"""
PERSONAL = ("Ada", "Bob", "Eve", "Trent", "example.com")
MAPPING = {"customer_id": "user_id", "attributes": {"first_name": "first_name", "u_em": "email"}}


class Hook:
    """A webhook on loopback that records every POST and answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.port = 0
        self.posts: list[dict[str, Any]] = []
        self.raw: list[bytes] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T000/B000/secret-path"


@contextmanager
def webhook(status: int = 200) -> Iterator[Hook]:
    hook = Hook(status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hook.raw.append(body)
            hook.posts.append(json.loads(body))
            self.send_response(hook.status)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


def _source(tmp_path: Path, text: str = CSV) -> Path:
    source = tmp_path / "users.csv"
    source.write_text(text)
    return source


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_notify_posts_a_summary_without_personal_data_or_key(tmp_path: Path) -> None:
    source = _source(tmp_path)
    with webhook() as hook, start_sandbox(tmp_path) as sandbox:
        job = write_job(tmp_path, job_dict(tmp_path, sandbox.url, source, MAPPING), "nightly.yaml")
        result = run_cli("run", str(job), "--no-progress", "--notify", hook.url)
    assert result.returncode == 1, result.stderr  # `guest` is a refused customer_id
    assert len(hook.posts) == 1
    body = hook.posts[0]
    assert body["job"] == "nightly" and body["status"] == "failure" and body["exit_code"] == 1
    assert body["counts"]["rows_read"] == 4 and body["counts"]["rows_accepted"] == 3
    assert body["counts"]["rows_invalid"] == 1 and body["counts"]["rows_pending"] == 0
    assert body["dead_letter"] == str(tmp_path / "out" / "dead_letter.jsonl")
    assert body["elapsed_seconds"] > 0
    assert "nightly: failure (exit 1)" in body["text"] and "1 dead-lettered" in body["text"]
    raw = hook.raw[0].decode()
    assert SANDBOX_KEY not in raw
    assert not [value for value in PERSONAL if value in raw]


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_output_notify_on_failure_only_stays_quiet_on_success(tmp_path: Path) -> None:
    source = _source(tmp_path, "user_id,first_name,email\nc001,Ada,ada@example.com\n")
    with webhook() as hook, start_sandbox(tmp_path) as sandbox:
        job = job_dict(tmp_path, sandbox.url, source, MAPPING)
        job["output"]["notify"] = {"url": hook.url, "on": ["failure"]}
        quiet = run_cli("run", str(write_job(tmp_path, job)), "--no-progress")
        job["api"]["api_key"] = "a-wrong-key"  # 401: the run stops, exit 3
        job["output"]["state"] = str(tmp_path / "out" / "other.db")
        loud = run_cli("run", str(write_job(tmp_path, job)), "--no-progress", "--fresh")
    assert quiet.returncode == 0, quiet.stderr
    assert loud.returncode == 3, loud.stderr
    assert [post["exit_code"] for post in hook.posts] == [3]
    # The credential check refuses the key before a row is read: nothing read, nothing pending.
    assert hook.posts[0]["counts"]["rows_read"] == 0 and "401" in hook.posts[0]["error"]
    assert "a-wrong-key" not in hook.raw[0].decode()


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_a_failed_notification_never_changes_the_exit_code(tmp_path: Path) -> None:
    source = _source(tmp_path, "user_id,first_name,email\nc001,Ada,ada@example.com\n")
    with webhook(status=500) as hook, start_sandbox(tmp_path) as sandbox:
        job = write_job(tmp_path, job_dict(tmp_path, sandbox.url, source, MAPPING))
        answered_500 = run_cli("run", str(job), "--no-progress", "--notify", hook.url, "--fresh")
        unreachable = run_cli(
            "run", str(job), "--no-progress", "--fresh", "--notify", "http://127.0.0.1:9/hook"
        )
    assert answered_500.returncode == 0, answered_500.stderr
    assert "answered 500" in answered_500.stderr
    assert "secret-path" not in answered_500.stderr  # a webhook's path is its secret
    assert unreachable.returncode == 0, unreachable.stderr
    assert "could not notify http://127.0.0.1:9" in unreachable.stderr


@pytest.mark.subprocess
def test_a_refused_job_notifies_with_exit_2(tmp_path: Path) -> None:
    with webhook() as hook:
        job = job_dict(tmp_path, "http://127.0.0.1:9", tmp_path / "missing.csv", MAPPING)
        result = run_cli("run", str(write_job(tmp_path, job)), "--notify", hook.url)
    assert result.returncode == 2, result.stderr
    assert [post["exit_code"] for post in hook.posts] == [2]
    assert hook.posts[0]["status"] == "failure" and "missing.csv" in hook.posts[0]["error"]


def _families(path: Path) -> dict[str, Any]:
    families = text_string_to_metric_families(path.read_text())
    return {family.name: family for family in families}


def _value(families: dict[str, Any], name: str, **labels: str) -> float:
    for sample in families[name].samples:
        if all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    raise KeyError((name, labels))


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_metrics_file_parses_as_prometheus_text(tmp_path: Path) -> None:
    source = _source(tmp_path)
    metrics_path = tmp_path / "textfile" / "moe_import.prom"
    with start_sandbox(tmp_path) as sandbox:
        job = job_dict(tmp_path, sandbox.url, source, MAPPING)
        job["output"]["metrics"] = str(metrics_path)
        path = write_job(tmp_path, job, "users.yaml")
        first = run_cli("run", str(path), "--no-progress")
        families = _families(metrics_path)
        first_report = read_report(tmp_path)
        # A second run: every row is settled (skipped); exit 1 while dead letters stand.
        second = run_cli("run", str(path), "--no-progress")
    assert first.returncode == 1, first.stderr
    assert _value(families, "moe_import_rows", outcome="accepted", job_name="users") == 3
    assert _value(families, "moe_import_rows", outcome="invalid") == 1
    assert _value(families, "moe_import_rows_read") == 4
    assert _value(families, "moe_import_rows_pending") == 0
    assert _value(families, "moe_import_requests") == first_report["requests"] >= 1
    assert _value(families, "moe_import_retries") == 0
    assert _value(families, "moe_import_http_429") == 0
    assert _value(families, "moe_import_running") == 0
    assert _value(families, "moe_import_exit_code") == 1
    assert _value(families, "moe_import_rate_updates_per_second") == 0
    assert families["moe_import_rows"].type == "counter"
    assert families["moe_import_rate_updates_per_second"].type == "gauge"
    assert "moe_import_last_success_timestamp_seconds" not in families  # never exited 0
    assert second.returncode == 1
    assert _value(_families(metrics_path), "moe_import_rows", outcome="skipped") == 4
    assert not list(metrics_path.parent.glob("*.tmp"))  # written whole, then renamed


@pytest.mark.sandbox
def test_python_api_as_an_orchestrator_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = 400
    source = _source(
        tmp_path,
        "user_id,first_name,email\n"
        + "".join(f"u{i:04d},n{i},u{i}@example.com\n" for i in range(rows)),
    )
    metrics_path = tmp_path / "metrics.prom"
    monkeypatch.setattr(metrics, "METRICS_INTERVAL_SECONDS", 0.2)
    seen_running: list[dict[str, Any]] = []
    with start_sandbox(tmp_path, "--rate", "200", "--period", "1") as sandbox, webhook() as hook:
        job = job_dict(tmp_path, "${SANDBOX_URL}", source, MAPPING)
        job["api"]["api_key"] = "${MOENGAGE_API_KEY}"
        job["rate_limit"] = {"updates": 200, "period_seconds": 1}
        job["output"]["metrics"] = str(metrics_path)
        path = write_job(tmp_path, job, "profiles.yaml")
        env = {"SANDBOX_URL": sandbox.url, "MOENGAGE_API_KEY": SANDBOX_KEY}

        # An orchestrator's task: load with its own environment, run, read the report.
        loaded = importer.load_job(path, env=env)
        stop = threading.Event()

        def watch() -> None:  # what node exporter would see while the run goes on
            while not stop.is_set():
                if metrics_path.exists():
                    families = _families(metrics_path)
                    if _value(families, "moe_import_running") == 1:
                        seen_running.append(
                            {n: _value(families, n) for n in ("moe_import_rows_read",)}
                            | {"accepted": _value(families, "moe_import_rows", outcome="accepted")}
                        )
                time.sleep(0.1)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            report = importer.run_job(loaded, job_name="profiles", notify_url=hook.url)
        finally:
            stop.set()
            watcher.join()

        assert report.rows_accepted == rows and report.exit_code == 0
        assert read_report(tmp_path)["rows_accepted"] == rows  # the report file, as the CLI
        assert hook.posts[0]["status"] == "success" and hook.posts[0]["job"] == "profiles"
        # Metrics were rewritten during the run, with rows accepted before the end.
        assert any(0 < seen["accepted"] < rows for seen in seen_running), seen_running
        final = _families(metrics_path)
        assert _value(final, "moe_import_last_success_timestamp_seconds") > time.time() - 60

        # Typed errors: a bad job file, and a run the API refuses (wrong key: exit 3).
        with pytest.raises(importer.JobRefused) as refused:
            importer.load_job(path, env={"SANDBOX_URL": sandbox.url})
        assert refused.value.exit_code == 2 and "MOENGAGE_API_KEY" in str(refused.value)
        wrong = importer.load_job(path, env={**env, "MOENGAGE_API_KEY": "wrong"})
        with pytest.raises(importer.RunAborted) as aborted:
            importer.run_job(wrong, fresh=True)
        assert aborted.value.exit_code == 3
        assert (
            aborted.value.report is not None and aborted.value.report.rows_read == 0
        )  # refused before reading
        assert "wrong" not in str(aborted.value)


@pytest.mark.subprocess
def test_validate_does_not_notify_from_the_job_file(tmp_path: Path) -> None:
    source = _source(tmp_path)
    with webhook() as hook:
        job = job_dict(tmp_path, "http://127.0.0.1:9", source, MAPPING)
        job["output"]["notify"] = hook.url  # a bare URL is {url: ..., on: [failure, success]}
        result = run_cli("validate", str(write_job(tmp_path, job)))
    assert result.returncode == 1, result.stderr  # one invalid row
    assert hook.posts == []
