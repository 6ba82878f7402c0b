"""What the tests share: run the CLI as a user would, write job files, read the report."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from importer.run.transport import Request
from importer.sandbox.bodies import customer_ids

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_WORKSPACE = "SANDBOX"
SANDBOX_KEY = "sandbox-key"
# The credentials tests give the moto S3 server and the runs that use it (conftest.s3_endpoint).
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "moto-test-key",
    "AWS_SECRET_ACCESS_KEY": "moto-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance-metadata endpoint
}


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m importer ARGS`, with text output captured: a child forked from this test
    process's zygote (tests/zygote.py: the imports already done), or a subprocess when the
    zygote is busy, not wanted (MOE_TEST_ZYGOTE=0) or in the fast tier (no process at all)."""
    full_env = {**os.environ, **(env or {})}
    argv = [sys.executable, "-m", "importer", *args]
    zygote = _ZYGOTE if _zygote_wanted() else None
    if zygote is not None and zygote.lock.acquire(blocking=False):
        try:
            return zygote.run(argv, list(args), cwd or ROOT, full_env, timeout)
        finally:
            zygote.lock.release()
    return subprocess.run(
        argv, cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def _zygote_wanted() -> bool:
    return (
        os.environ.get("MOE_TEST_ZYGOTE", "1") != "0" and os.environ.get("MOE_TEST_TIER") != "fast"
    )


class _Zygote:
    """This test process's zygote, started at its first run and left to end with it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process: subprocess.Popen[str] | None = None

    def _started(self) -> subprocess.Popen[str]:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.zygote"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        return self.process

    def run(
        self, argv: list[str], args: list[str], cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        process = self._started()
        assert process.stdin is not None and process.stdout is not None
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            request = {
                "argv": args,
                "cwd": str(cwd),
                "env": env,
                "stdout": str(out),
                "stderr": str(err),
            }
            process.stdin.write(json.dumps(request) + "\n")
            process.stdin.flush()
            pid = int(json.loads(process.stdout.readline())["pid"])
            killed = threading.Event()  # the timeout's: the run took too long
            timer = threading.Timer(timeout, _kill, (pid, killed))
            timer.start()
            try:
                code = int(json.loads(process.stdout.readline())["code"])
            finally:
                timer.cancel()
            stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        if killed.is_set():
            raise subprocess.TimeoutExpired(argv, timeout, stdout, stderr)
        return subprocess.CompletedProcess(argv, code, stdout, stderr)


def _kill(pid: int, killed: threading.Event) -> None:
    killed.set()
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


_ZYGOTE = _Zygote()


def start_cli(*args: str) -> subprocess.Popen[str]:
    """`python -m importer ARGS` in the background, output piped: for signals and kills."""
    return subprocess.Popen(
        [sys.executable, "-m", "importer", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def job_in_bucket(
    runner: Path,
    job: dict[str, Any],
    bucket: str,
    endpoint: str,
    name: str = "users",
    *,
    output: dict[str, Any] | None = None,
    storage: dict[str, Any] | None = None,
) -> Path:
    """The job file as a runner that keeps nothing has it (runner/NAME.yaml): its state, dead
    letters and report in the bucket under jobs/NAME/, its store at `endpoint`."""
    prefix = f"s3://{bucket}/jobs/{name}"
    job["output"] = {
        "state": f"{prefix}/state.db",
        "dead_letter": f"{prefix}/dead_letter.jsonl",
        "report": f"{prefix}/report.json",
        **(output or {}),
        "storage": {"endpoint_url": endpoint, "region": "us-east-1", **(storage or {})},
    }
    runner.mkdir(parents=True, exist_ok=True)
    path = runner / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def bucket_json(s3: Any, key: str) -> dict[str, Any]:
    """A JSON object in the test's bucket (a report, a lease)."""
    body = s3.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    found: dict[str, Any] = json.loads(body)
    return found


def saved_mid_run(s3: Any, key: str) -> bool:
    """Whether the state object was last uploaded by a run still going (metadata final=0)."""
    try:
        head = s3.head_object(Bucket=s3.bucket, Key=key)
    except Exception:  # not there yet
        return False
    return bool(head["Metadata"].get("final") == "0")


def job_dict(
    tmp_path: Path, url: str, source: Path, mapping: dict[str, Any], **sections: Any
) -> dict[str, Any]:
    job: dict[str, Any] = {
        "api": {"base_url": url, "workspace_id": SANDBOX_WORKSPACE, "api_key": SANDBOX_KEY},
        "source": {"path": str(source)},
        "mapping": mapping,
        "output": {
            "dead_letter": str(tmp_path / "out" / "dead_letter.jsonl"),
            "state": str(tmp_path / "out" / "state.db"),
            "report": str(tmp_path / "out" / "report.json"),
        },
    }
    for name, values in sections.items():
        job[name] = {**job.get(name, {}), **values}
    return job


# The users the fault and delivery tests import: u00001, ... with a name and integer points.
USERS_MAPPING: dict[str, Any] = {
    "customer_id": "user_id",
    "attributes": {"first_name": "first_name", "points": {"column": "points", "type": "integer"}},
}


def user_id(row: int) -> str:
    """The customer_id `users_csv` writes in data row `row`."""
    return f"u{row:05d}"


def user_ids(count: int) -> set[str]:
    """Every customer_id of a `users_csv` file of `count` rows (none planted bad)."""
    return {user_id(i) for i in range(1, count + 1)}


def assert_each_sent_and_few_twice(sent: Counter[Any], expected: Collection[Any]) -> None:
    """After a stopped run and its rerun: everything expected arrived, and under 5% of it
    more than once (only what was in flight when the first run stopped goes again)."""
    assert set(sent) == set(expected), set(expected) ^ set(sent)
    twice = sum(count - 1 for count in sent.values())
    assert twice < 0.05 * len(expected), f"{twice} of {len(expected)} sent more than once"


def users_csv(
    folder: Path,
    count: int,
    *,
    bad_points: Collection[int] = (),
    bad_ids: Collection[int] = (),
    long_bad_points_every: int = 0,
    points: bool = True,
) -> Path:
    """`folder/users.csv` for USERS_MAPPING: u00001,name1,1 ... Bad rows are planted by row
    number: `bad_points` a points cell `x<row>` (not an integer), `bad_ids` a customer_id
    `bad<row>` (for the sandbox's --reject-customer-ids), `long_bad_points_every` a
    200-character non-integer points cell every n-th row; `points=False` leaves the points
    column out."""
    lines = ["user_id,first_name,points" if points else "user_id,first_name"]
    for i in range(1, count + 1):
        user = f"bad{i:05d}" if i in bad_ids else user_id(i)
        if not points:
            lines.append(f"{user},name{i}")
            continue
        cell = f"x{i}" if i in bad_points else str(i)
        if long_bad_points_every and i % long_bad_points_every == 0:
            cell = f"not-a-number-{i}-{'x' * 200}"
        lines.append(f"{user},name{i},{cell}")
    source = folder / "users.csv"
    source.write_text("\n".join(lines) + "\n")
    return source


def users_job(tmp_path: Path, url: str, source: Path, **sections: Any) -> Path:
    """A job importing `source` with USERS_MAPPING into the sandbox at `url`."""
    return write_job(tmp_path, job_dict(tmp_path, url, source, USERS_MAPPING, **sections))


def write_job(tmp_path: Path, job: dict[str, Any], name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def read_report(tmp_path: Path, *, dry_run: bool = False) -> dict[str, Any]:
    """The job's report; `dry_run`: the one a dry run writes beside it."""
    name = "report.dry-run.json" if dry_run else "report.json"
    report: dict[str, Any] = json.loads((tmp_path / "out" / name).read_text())
    return report


def read_dead_letters(tmp_path: Path, *, dry_run: bool = False) -> list[dict[str, Any]]:
    """The job's dead letters; `dry_run`: the ones a dry run writes beside them."""
    path = tmp_path / "out" / ("dead_letter.dry-run.jsonl" if dry_run else "dead_letter.jsonl")
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# Every row read ends in exactly one of these (docs/REFERENCE.md, "What happens to each row").
REFERENCE_OUTCOMES = "accepted skipped unchanged already_sent invalid rejected failed pending"


def assert_report_adds_up(report: dict[str, Any]) -> None:
    # Written out here, not taken from the code: the report must add up by the reference.
    outcomes = [f"rows_{name}" for name in REFERENCE_OUTCOMES.split()]
    assert all(report[outcome] >= 0 for outcome in outcomes), report
    assert report["rows_read"] == sum(report[outcome] for outcome in outcomes), report


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 in `folder` (the test is skipped without openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def ids_in(request: Request) -> list[str]:
    """The customer_ids a request sent through `FakeTransport` holds, in order (bulk or one)."""
    return [str(customer) for customer in customer_ids(orjson.loads(request.body))]
