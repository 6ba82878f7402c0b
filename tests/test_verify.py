"""verify reads profiles back through the Get User API and names each attribute that differs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import orjson
import pytest
import requests

from importer.cli import main
from importer.config import ConfigError, load_job
from importer.moengage.profile import expected_profile
from importer.sandbox import SandboxServer
from importer.verify import verify_job
from importer.verify.check import format_table
from importer.verify.compare import Outcome, compare
from importer.verify.sample import sample_key
from tests.sandbox_proc import start_sandbox
from tests.support import job_dict, run_cli, write_job
from tests.test_sandbox import bulk, customer, in_process, post

CSV = "user_id,first_name,points,vip\n" + "".join(
    f"u{i:03d},Name{i},{i},{'true' if i % 2 else 'false'}\n" for i in range(1, 41)
)
MAPPING = {
    "customer_id": "user_id",
    "attributes": {
        "first_name": "first_name",
        "points": {"column": "points", "type": "integer"},
        "vip": {"column": "vip", "type": "boolean"},
    },
}


def _job(tmp_path: Path, url: str) -> Path:
    source = tmp_path / "users.csv"
    source.write_text(CSV)
    return write_job(tmp_path, job_dict(tmp_path, url, source, MAPPING))


def _deliver(server: SandboxServer, job: Path, *, skip: str, retype: str, change: str) -> None:
    """A real run of the job into the in-process sandbox, then what MoEngage may do after
    its 200: drop a customer, store a number as text, keep another value."""
    assert main(["run", str(job), "--no-progress"]) == 0
    kept = server.profiles.profiles
    if skip:
        del kept[skip]
    if retype:
        kept[retype]["points"] = str(kept[retype]["points"])
    if change:
        kept[change]["first_name"] = "Someone"


@pytest.mark.slow  # about half a second or more: not in make test-fast
def test_every_attribute_matches_after_a_faithful_delivery(tmp_path: Path) -> None:
    with in_process(tmp_path) as server:
        job_file = _job(tmp_path, server.url)
        _deliver(server, job_file, skip="", retype="", change="")
        outcome = verify_job(load_job(job_file), sample=40, seed=7)
        exports = server.stats()["exports"]
    assert outcome.exit_code == 0
    # 40 read back, and the run's own credential check (one id no workspace holds).
    assert outcome.comparison.customers_checked == 40 and exports == 41
    assert {name: dict(c) for name, c in outcome.comparison.by_attribute.items()} == {
        name: {Outcome.MATCH: 40} for name in ("first_name", "points", "vip")
    }


@pytest.mark.slow  # about half a second or more: not in make test-fast
def test_differences_are_named_by_attribute_and_kind(tmp_path: Path) -> None:
    with in_process(tmp_path) as server:
        job_file = _job(tmp_path, server.url)
        _deliver(server, job_file, skip="u002", retype="u003", change="u004")
        job = load_job(job_file)
        outcome = verify_job(job, sample=40, seed=1)
    assert outcome.exit_code == 1
    found = {(d.customer_id, d.attribute, d.outcome) for d in outcome.comparison.differences}
    assert found == {
        ("u002", "first_name", Outcome.MISSING),
        ("u002", "points", Outcome.MISSING),
        ("u002", "vip", Outcome.MISSING),
        ("u003", "points", Outcome.DIFFERENT_TYPE),
        ("u004", "first_name", Outcome.DIFFERENT_VALUE),
    }
    assert outcome.comparison.customers_not_found == 1
    written = json.loads(outcome.report_path.read_text())
    assert outcome.report_path == tmp_path / "out" / "report.verify.json"
    assert stat.S_IMODE(os.stat(outcome.report_path).st_mode) == 0o600
    assert written["attributes"]["points"] == {"different_type": 1, "match": 38, "missing": 1}
    table = format_table(outcome.comparison)
    assert "Someone" not in table and "u004" not in table  # counts only, no personal data


def test_the_sample_is_reproducible_and_bounded(tmp_path: Path) -> None:
    with in_process(tmp_path) as server:
        job_file = _job(tmp_path, server.url)
        _deliver(server, job_file, skip="", retype="", change="")
        job = load_job(job_file)
        first = verify_job(job, sample=5, seed=3)
        second = verify_job(job, sample=5, seed=3)
        other = verify_job(job, sample=5, seed=4)
        exports = server.stats()["exports"]
    everyone = [f"u{i:03d}" for i in range(1, 41)]
    assert first.customer_ids == sorted(sorted(everyone, key=lambda c: sample_key(c, 3))[:5])
    assert second.customer_ids == first.customer_ids != other.customer_ids
    assert exports == 16 and other.exit_code == 0  # 15 read back, 1 credential check


@pytest.mark.slow  # about half a second or more: not in make test-fast
def test_only_customers_the_job_delivered_are_sampled(tmp_path: Path) -> None:
    with in_process(tmp_path, reject_customer_ids="^u005$") as server:
        job_file = _job(tmp_path, server.url)
        with pytest.raises(ConfigError, match="delivered nothing"):
            verify_job(load_job(job_file), sample=40)  # no run yet: no saved progress
        assert main(["run", str(job_file), "--no-progress"]) == 1  # u005 refused
        outcome = verify_job(load_job(job_file), sample=40)
    assert outcome.exit_code == 0 and outcome.comparison.customers_checked == 39
    assert "u005" not in outcome.customer_ids


def test_events_jobs_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "events.csv"
    source.write_text("user_id,event,at\nu1,Bought,2024-01-01T00:00:00Z\n")
    mapping = {
        "customer_id": "user_id",
        "event": {"action": {"column": "event"}, "time": {"column": "at"}},
    }
    job = job_dict(tmp_path, "http://127.0.0.1:9", source, mapping)
    job["import"] = "events"
    with pytest.raises(ConfigError, match="users jobs only"):
        verify_job(load_job(write_job(tmp_path, job)))


def test_expected_profile_follows_merges_and_unsets() -> None:
    first = customer("c", email="a@x.io", tags=["a"])
    second = customer("c", points=2)
    second["attributes"]["addValueToArrayField"] = {"tags": ["b"]}
    second["unset_attributes"] = [{"type": "equals", "attr": "email"}]
    profile, cleared = expected_profile([first, second])
    assert profile == {"tags": ["a", "b"], "points": 2} and cleared == {"email"}
    result = compare(
        {"c": [first, second]}, {"c": {"tags": ["a", "b"], "points": 2, "email": "a@x.io"}}
    )
    assert [(d.attribute, d.outcome) for d in result.differences] == [
        ("email", Outcome.NOT_CLEARED)
    ]


def test_standard_attributes_match_through_the_catalogue_names() -> None:
    result = compare({"c": [customer("c", first_name="Ada")]}, {"c": {"u_fn": "Ada"}})
    assert result.all_match


def test_read_back_goes_through_the_profiles_endpoint(tmp_path: Path) -> None:
    with in_process(tmp_path) as server:
        post(server.url, bulk(customer("u001", first_name="Name1")))
        got = requests.get(f"{server.url}/_sandbox/profiles", timeout=5).json()
    assert orjson.loads(orjson.dumps(got["profiles"])) == {"u001": {"first_name": "Name1"}}


@pytest.mark.sandbox
def test_verify_command_after_a_real_run_then_after_another_writer(tmp_path: Path) -> None:
    with start_sandbox(tmp_path, "--rate", "1000000") as sandbox:
        job = _job(tmp_path, sandbox.url)
        assert run_cli("run", str(job), "--no-progress").returncode == 0
        same = run_cli("verify", str(job), "--sample", "10", "--seed", "5")
        assert same.returncode == 0, same.stderr
        assert "10 customers checked, 10 found, 0 differences" in same.stdout
        # Another system overwrites one customer's name in the workspace.
        assert post(sandbox.url, bulk(customer("u007", first_name="Renamed"))).ok
        drifted = run_cli("verify", str(job), "--sample", "40")
    assert drifted.returncode == 1, drifted.stderr
    assert "40 customers checked, 40 found, 1 differences" in drifted.stdout
    assert "Renamed" not in drifted.stdout + drifted.stderr  # values only in the JSON report
    written = json.loads((tmp_path / "out" / "report.verify.json").read_text())
    assert [
        (d["customer_id"], d["outcome"], d["sent"], d["stored"]) for d in written["differences"]
    ] == [("u007", "different_value", "Name7", "Renamed")]


@pytest.mark.subprocess
def test_verify_of_an_events_job_is_a_usage_error(tmp_path: Path) -> None:
    source = tmp_path / "events.csv"
    source.write_text("user_id,event,at\nu1,Bought,2024-01-01T00:00:00Z\n")
    event = {"action": {"column": "event"}, "time": {"column": "at"}}
    job = job_dict(
        tmp_path, "http://127.0.0.1:9", source, {"customer_id": "user_id", "event": event}
    )
    job["import"] = "events"
    result = run_cli("verify", str(write_job(tmp_path, job)))
    assert result.returncode == 2 and "users jobs only" in result.stderr
