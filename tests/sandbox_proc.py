"""Runs the sandbox server in a subprocess for tests, and reads what it recorded."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from importer.moengage import EXPORT_PATH
from importer.sandbox.launcher import launched
from importer.sandbox.recording import read_json_lines

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class SandboxProcess:
    process: subprocess.Popen[str]
    url: str
    record_path: Path
    arrivals_path: Path
    stderr_path: Path
    violations_path: Path

    def records(self) -> list[dict[str, Any]]:
        """Accepted users so far (the server flushes after each request)."""
        return read_json_lines(self.record_path)

    def arrivals(self, *, exports: bool = False) -> list[dict[str, Any]]:
        """Every request so far: t, path, users, bytes, status, dropped. Get User calls (the
        credential check a run makes before reading, read-backs) only with `exports`."""
        found = read_json_lines(self.arrivals_path)
        return found if exports else [a for a in found if a.get("path") != EXPORT_PATH]

    def wait_until_reached(self, timeout: float = 60.0) -> None:
        """Until a client's first request got here: a run's check before reading is
        answered at once, so the CLI is up (imports done, signals handled) and sending."""
        deadline = time.monotonic() + timeout
        while not self.arrivals(exports=True):
            if time.monotonic() > deadline:
                raise AssertionError(f"no request reached the sandbox in {timeout:g} s")
            time.sleep(0.05)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_sandbox/stats", timeout=5) as response:
            stats: dict[str, Any] = orjson.loads(response.read())
            return stats

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def schema_violations(self) -> list[dict[str, Any]]:
        """Elements received that MoEngage's request schema refuses (the sandbox writes them)."""
        return read_json_lines(self.violations_path)


@contextmanager
def start_sandbox(
    tmp_path: Path, *extra_args: str, allow_schema_violations: bool = False
) -> Iterator[SandboxProcess]:
    """Start the sandbox on a free port recording into tmp_path; stop it on exit.

    Every element it receives is checked against MoEngage's request schema: unless the test
    sends invalid ones on purpose (`allow_schema_violations`), any violation fails the test
    when the block ends, so no change can start sending a shape MoEngage refuses.
    """
    record_path = tmp_path / "record.jsonl"
    arrivals_path = tmp_path / "arrivals.jsonl"
    stderr_path = tmp_path / "sandbox.stderr"
    violations_path = tmp_path / "schema_violations.jsonl"
    args = [
        *("--record", str(record_path), "--arrivals", str(arrivals_path)),
        *("--schema-violations", str(violations_path)),
        *extra_args,
    ]
    # The subprocess imports `importer` from this checkout, installed or not.
    python_path = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}
    with stderr_path.open("w") as stderr:
        try:
            with launched(args, cwd=REPO_ROOT, env=env, stderr=stderr) as (process, url):
                yield SandboxProcess(
                    process, url, record_path, arrivals_path, stderr_path, violations_path
                )
        except RuntimeError as error:
            if "did not report its URL" not in str(error):
                raise
            raise RuntimeError(f"{error}; stderr:\n{stderr_path.read_text()}") from None
    if not allow_schema_violations:
        fail_on_schema_violations(violations_path)


def fail_on_schema_violations(path: Path) -> None:
    """Fail the test if the sandbox received any element MoEngage's request schema refuses."""
    violations = read_json_lines(path)
    if violations:
        shown = "\n".join(f"  {v['endpoint']}: {v['problem']}" for v in violations[:5])
        pytest.fail(
            f"the sandbox received {len(violations)} element(s) MoEngage's request schema"
            f" refuses (see {path}):\n{shown}",
            pytrace=False,
        )
