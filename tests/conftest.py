"""Shared helpers for end-to-end tests: run the CLI as a user would, write job files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_WORKSPACE = "SANDBOX"
SANDBOX_KEY = "sandbox-key"


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m importer ARGS`, as a subprocess, with text output captured."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "importer", *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(*args: str) -> subprocess.Popen[str]:
    """`python -m importer ARGS` in the background, output piped: for signals and kills."""
    return subprocess.Popen(
        [sys.executable, "-m", "importer", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


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


def read_dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "out" / "dead_letter.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_report_adds_up(report: dict[str, Any]) -> None:
    parts = (
        "rows_accepted",
        "rows_skipped",
        "rows_unchanged",
        "rows_invalid",
        "rows_rejected",
        "rows_failed",
        "rows_pending",
    )
    assert report["rows_read"] == sum(report[p] for p in parts), report


@pytest.fixture
def root() -> Path:
    return ROOT


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in tests/test_e2e_*.py `e2e`, so `make test-fast` can leave them out."""
    for item in items:
        if item.path.name.startswith("test_e2e_"):
            item.add_marker(pytest.mark.e2e)
