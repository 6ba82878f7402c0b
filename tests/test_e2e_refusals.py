"""Job-level refusals through the CLI: exit 2, nothing sent, a message naming the key path."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox_proc import start_sandbox
from tests.support import ROOT, job_dict, run_cli, write_job

CSV = "user_id,first_name,points,tags,new_tags\nu1,Ann,1,a|b,c\nu2,Bo,2,,d\n"
GOOD: dict[str, Any] = {
    "customer_id": "user_id",
    "attributes": {"first_name": "first_name", "points": {"column": "points", "type": "integer"}},
}


def _with(mapping_patch: dict[str, Any]) -> dict[str, Any]:
    mapping: dict[str, Any] = {**GOOD, **mapping_patch}
    mapping["attributes"] = {**GOOD["attributes"], **mapping_patch.get("attributes", {})}
    return mapping


REFUSALS = [
    ("blocked name", _with({"attributes": {"id": "first_name"}}), "mapping.attributes.id"),
    ("blocked _id", _with({"attributes": {"_id": "first_name"}}), "mapping.attributes._id"),
    ("reserved prefix", _with({"attributes": {"moe_points": "points"}}), "moe_"),
    ("name too long", _with({"attributes": {"n" * 201: "first_name"}}), "201 characters"),
    (
        "missing column",
        _with({"attributes": {"city": "cty_name"}}),
        "mapping.attributes.city.column",
    ),
    (
        "unknown key",
        _with({"attributes": {"points": {"column": "points", "tpye": "integer"}}}),
        "mapping.attributes.points.tpye: unknown key",
    ),
    (
        "unknown type",
        _with({"attributes": {"points": {"column": "points", "type": "int"}}}),
        "mapping.attributes.points.type",
    ),
    (
        "set and added",
        _with({"attributes": {"tags": "tags"}, "add_to_array": {"tags": {"column": "new_tags"}}}),
        "tags",
    ),
    (
        "too many attributes",
        _with({"attributes": {f"attr_{i}": "first_name" for i in range(257)}}),
        "256",
    ),
    ("no identifiers", {**GOOD, "customer_id": None}, "mapping.identifiers"),
]


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.parametrize(("name", "mapping", "expected"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused_before_anything_is_sent(
    tmp_path: Path, name: str, mapping: dict[str, Any], expected: str
) -> None:
    source = tmp_path / "users.csv"
    source.write_text(CSV)
    with start_sandbox(tmp_path) as sandbox:
        job = write_job(tmp_path, job_dict(tmp_path, sandbox.url, source, mapping))
        result = run_cli("run", str(job), "--no-progress")
        assert sandbox.stats()["requests"] == 0
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "dead_letter.jsonl").exists()


@pytest.mark.subprocess
def test_missing_env_variable_is_named(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    source.write_text(CSV)
    job = job_dict(tmp_path, "http://127.0.0.1:9", source, GOOD)
    job["api"]["api_key"] = "${MOE_TEST_UNSET_KEY}"
    result = run_cli("run", str(write_job(tmp_path, job)))
    assert result.returncode == 2
    assert "MOE_TEST_UNSET_KEY" in result.stderr and "api.api_key" in result.stderr


@pytest.mark.subprocess
def test_missing_input_and_unreadable_job_are_usage_errors(tmp_path: Path) -> None:
    job = write_job(tmp_path, job_dict(tmp_path, "http://127.0.0.1:9", tmp_path / "nope.csv", GOOD))
    result = run_cli("run", str(job))
    assert result.returncode == 2 and "nope.csv" in result.stderr
    result = run_cli("validate", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2 and "absent.yaml" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.subprocess
def test_bad_option_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("run", "job.yaml", "--rate", "-5")
    assert result.returncode == 2 and "--rate" in result.stderr


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (("--base-url", "notaurl"), "api.base_url"),
        (("--period", "nan"), "rate_limit.period_seconds"),
        (("--concurrency", "1000"), "delivery.concurrency"),
        (("--dead-letter", "/"), "cannot open /"),
    ],
)
def test_command_line_overrides_are_checked_like_the_job_file(
    tmp_path: Path, option: tuple[str, str], expected: str
) -> None:
    source = tmp_path / "users.csv"
    source.write_text(CSV)
    job = write_job(tmp_path, job_dict(tmp_path, "http://127.0.0.1:9", source, GOOD))
    result = run_cli("run", str(job), "--no-progress", *option)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected in result.stderr and "Traceback" not in result.stderr


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_resume_does_not_depend_on_how_the_path_is_spelt(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    source.write_text(CSV)
    with start_sandbox(tmp_path) as sandbox:
        job = write_job(tmp_path, job_dict(tmp_path, sandbox.url, source, GOOD))
        assert run_cli("run", str(job), "--no-progress").returncode == 0
        spelt_otherwise = os.path.relpath(source, ROOT)  # the CLI runs in the repo root
        assert spelt_otherwise != str(source)
        again = run_cli("run", str(job), "--input", spelt_otherwise, "--no-progress")
        assert again.returncode == 0, again.stderr
        assert len(sandbox.records()) == 2
    assert json.loads((tmp_path / "out" / "report.json").read_text())["rows_skipped"] == 2
