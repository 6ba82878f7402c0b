"""Per-customer order: the last row of a customer in the file is the last update applied."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox_proc import start_sandbox
from tests.support import (
    assert_report_adds_up,
    job_dict,
    read_dead_letters,
    read_report,
    run_cli,
    write_job,
)

PLAIN = {
    "customer_id": "user_id",
    "attributes": {"version": {"column": "version", "type": "integer"}, "city": "city"},
}
# addValueToArrayField depends on what is stored already: such rows are never merged.
WITH_ARRAY_ADD = {**PLAIN, "add_to_array": {"tags": {"column": "tag", "separator": "|"}}}


def _history(tmp_path: Path, customers: int, versions: int, seed: int = 1) -> Path:
    """A history export: each customer's versions in increasing order, customers interleaved.

    Each customer's rows are spread over the file (so over chunks and requests), newest last.
    """
    rng = random.Random(seed)
    pending = {c: 1 for c in range(customers)}
    lines = ["user_id,version,city,tag"]
    while pending:
        customer = rng.choice(list(pending))
        version = pending[customer]
        lines.append(f"c{customer:05d},{version},city{version},t{version}")
        if version == versions:
            del pending[customer]
        else:
            pending[customer] = version + 1
    source = tmp_path / "history.csv"
    source.write_text("\n".join(lines) + "\n")
    return source


def _final_versions(records: list[dict[str, Any]]) -> dict[str, int]:
    """What a server applying updates in arrival order ends with: the last version each got."""
    final: dict[str, int] = {}
    for record in records:
        final[record["customer_id"]] = record["attributes"]["version"]
    return final


def _versions_in_arrival_order(records: list[dict[str, Any]]) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {}
    for record in records:
        seen.setdefault(record["customer_id"], []).append(record["attributes"]["version"])
    return seen


def _run(
    tmp_path: Path, mapping: dict[str, Any], source: Path, *sandbox_args: str
) -> tuple[Any, list[dict[str, Any]]]:
    with start_sandbox(tmp_path, "--latency-ms", "40", *sandbox_args) as sandbox:
        settings = job_dict(
            tmp_path,
            sandbox.url,
            source,
            mapping,
            rate_limit={"updates": 1_000_000, "period_seconds": 60},
            delivery={
                "concurrency": 8,
                "max_batch_bytes": 1500,
                "max_attempts": 20,
                "backoff_base_seconds": 0.01,
                "backoff_max_seconds": 0.05,
            },
        )
        settings["source"]["chunk_rows"] = 250  # a customer's rows span chunks
        job = write_job(tmp_path, settings)
        result = run_cli("run", str(job), "--no-progress")
        records = sandbox.records()
    return result, records


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_unmergeable_rows_arrive_in_file_order_and_the_last_row_wins(tmp_path: Path) -> None:
    source = _history(tmp_path, customers=400, versions=3)
    result, records = _run(tmp_path, WITH_ARRAY_ADD, source)
    assert result.returncode == 0, result.stderr
    assert len(records) == 1200  # nothing merged: each row its own element
    for customer, versions in _versions_in_arrival_order(records).items():
        assert versions == [1, 2, 3], customer
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_accepted"] == 1200
    assert report["duplicate_customers"] == 400
    assert report["run_id"] and report["rows_unchanged"] == 0


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_plain_rows_of_a_customer_merge_into_one_update_with_the_same_end_state(
    tmp_path: Path,
) -> None:
    # Every column a plain set: one element a customer, the last value wins.
    lines = ["user_id,version,city,tag"]
    for customer in range(400):
        lines += [f"c{customer:05d},{v},city{v}," for v in (1, 2)]
        lines.append(f"c{customer:05d},3,,")  # an empty cell leaves city as row 2 set it
    source = tmp_path / "history.csv"
    source.write_text("\n".join(lines) + "\n")
    result, records = _run(tmp_path, PLAIN, source)
    assert result.returncode == 0, result.stderr
    # One update a customer (a third of the quota), but where a chunk boundary cuts one.
    assert 400 <= len(records) <= 405
    stored: dict[str, dict[str, Any]] = {}  # what the server holds after every update
    for record in records:
        stored.setdefault(record["customer_id"], {}).update(record["attributes"])
    assert stored == {f"c{c:05d}": {"version": 3, "city": "city2"} for c in range(400)}
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_accepted"] == 1200 and report["duplicate_customers"] == 400


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_order_holds_through_retries_of_a_failing_api(tmp_path: Path) -> None:
    source = _history(tmp_path, customers=1500, versions=3, seed=5)
    result, records = _run(tmp_path, WITH_ARRAY_ADD, source, "--fail-rate", "0.3", "--seed", "3")
    assert result.returncode == 0, result.stderr
    report = read_report(tmp_path)
    assert report["retries"] > 100
    final = _final_versions(records)
    assert final == {f"c{c:05d}": 3 for c in range(1500)}
    for customer, versions in _versions_in_arrival_order(records).items():
        assert versions == sorted(versions), customer
    assert read_dead_letters(tmp_path) == []


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_merged_rows_that_are_refused_are_dead_lettered_each_with_its_own_row(
    tmp_path: Path,
) -> None:
    lines = ["user_id,version,city,tag"]
    for customer in range(20):
        lines += [f"c{customer:05d},{v},city{v}," for v in (1, 2, 3)]
    lines += [f"bad{v},{v},x," for v in (1, 2)]
    source = tmp_path / "history.csv"
    source.write_text("\n".join(lines) + "\n")
    result, records = _run(tmp_path, PLAIN, source, "--reject-customer-ids", "^bad")
    assert result.returncode == 1, result.stderr
    assert len(records) == 20
    letters = read_dead_letters(tmp_path)
    assert sorted(d["row"] for d in letters) == [61, 62]
    assert all(d["stage"] == "rejected" for d in letters)
    # Each line keeps its own row's record and element (a replay re-sends them in order).
    assert [
        d["payload"]["attributes"]["version"] for d in sorted(letters, key=lambda d: d["row"])
    ] == [1, 2]
    assert all(d["run_id"] == read_report(tmp_path)["run_id"] and d["fingerprint"] for d in letters)
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_rejected"] == 2 and report["rows_accepted"] == 60


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_a_rerun_resending_failed_rows_still_ends_on_each_customers_last_row(
    tmp_path: Path,
) -> None:
    from urllib.parse import urlparse

    source = _history(tmp_path, customers=300, versions=3, seed=9)
    settings: dict[str, Any] = {
        "rate_limit": {"updates": 1_000_000, "period_seconds": 60},
        "delivery": {"concurrency": 8, "max_batch_bytes": 1500, "max_attempts": 1},
    }
    with start_sandbox(tmp_path, "--fail-rate", "0.4", "--seed", "4", "--rate", "1000000") as flaky:
        port = str(urlparse(flaky.url).port)
        job = write_job(tmp_path, job_dict(tmp_path, flaky.url, source, WITH_ARRAY_ADD, **settings))
        first = run_cli("run", str(job), "--no-progress")
        records = flaky.records()
    assert first.returncode == 1, first.stderr
    failed = read_report(tmp_path)["rows_failed"]
    # A failed request is bisected, so only rows whose own requests kept failing are left.
    assert failed > 0
    # Some customers' older rows failed while newer ones were accepted.
    final_first = _final_versions(records)
    assert any(version == 3 for version in final_first.values())
    (tmp_path / "healthy").mkdir()
    with start_sandbox(tmp_path / "healthy", "--port", port, "--rate", "1000000") as healthy:
        again = run_cli("run", str(job), "--no-progress")
        resent = healthy.records()
    assert again.returncode == 0, again.stderr
    final = {**final_first, **_final_versions(resent)}
    assert final == {f"c{c:05d}": 3 for c in range(300)}
    for customer, versions in _versions_in_arrival_order(resent).items():
        assert versions == sorted(versions), customer
        assert versions[-1] == 3, customer  # a resent older row is followed by the newer ones
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_accepted"] >= failed and report["rows_failed"] == 0
