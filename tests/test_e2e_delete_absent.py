"""sync.delete_absent against the sandbox: exactly the absent customers are deleted, the
guards refuse before any delete, a dry run lists the ids, failures are replayable."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from importer import moengage
from tests.sandbox_proc import start_sandbox
from tests.support import (
    USERS_MAPPING,
    job_dict,
    read_dead_letters,
    read_report,
    run_cli,
    user_id,
    write_job,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.subprocess]

CUSTOMERS = 100


def _export(path: Path, rows: range | list[int]) -> Path:
    lines = ["user_id,first_name,points"] + [f"{user_id(i)},name{i},{i}" for i in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _job(tmp_path: Path, url: str, source: Path, **delete_absent: Any) -> Path:
    sync = {"mode": "changed", "delete_absent": {"enabled": True, **delete_absent}}
    return write_job(tmp_path, job_dict(tmp_path, url, source, USERS_MAPPING, sync=sync))


def _profiles(url: str) -> dict[str, Any]:
    got: dict[str, Any] = requests.get(f"{url}/_sandbox/profiles", timeout=10).json()
    return got


def _run(job: Path, *args: str) -> Any:
    return run_cli("run", str(job), "--no-progress", *args)


def _deletes_arrived(arrivals: list[dict[str, Any]]) -> int:
    return sum(1 for a in arrivals if a.get("path") == moengage.DELETE_PATH)


def test_exactly_the_absent_customers_are_deleted(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    with start_sandbox(tmp_path) as sandbox:
        job = _job(tmp_path, sandbox.url, source)
        _export(source, range(1, CUSTOMERS + 1))
        assert _run(job).returncode == 0
        gone = [7, 30, 64, 100]  # 4%: under the 5% guard
        _export(source, [i for i in range(1, CUSTOMERS + 1) if i not in gone])
        done = _run(job)
        assert done.returncode == 0, done.stdout + done.stderr
        kept = _profiles(sandbox.url)
        report = read_report(tmp_path)
        # The next night with the same export: nobody is absent any more.
        _export(source, [i for i in range(1, CUSTOMERS + 1) if i not in gone] + [101])
        assert _run(job).returncode == 0
        next_night = read_report(tmp_path)
        deletes = _deletes_arrived(sandbox.arrivals())
    assert sorted(kept["deleted"]) == sorted(user_id(i) for i in gone)
    assert set(kept["profiles"]) == {user_id(i) for i in range(1, CUSTOMERS + 1)} - {
        user_id(i) for i in gone
    }
    assert report["customers_deleted"] == 4 and report["deletes_failed"] == 0
    assert report["customers_absent"] == 4 and report["rows_unchanged"] == 96
    assert "deleted" in done.stdout
    assert next_night["customers_absent"] == 0 and next_night["customers_deleted"] == 0
    assert deletes == 4


def test_six_percent_absent_is_refused_before_any_delete(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    with start_sandbox(tmp_path) as sandbox:
        job = _job(tmp_path, sandbox.url, source)
        _export(source, range(1, CUSTOMERS + 1))
        assert _run(job).returncode == 0
        _export(source, range(1, CUSTOMERS - 5))  # 6 absent
        refused = _run(job)
        deletes = _deletes_arrived(sandbox.arrivals())
        profiles = _profiles(sandbox.url)["profiles"]
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "6 of the 100 customers" in refused.stdout + refused.stderr
    assert "max_fraction" in refused.stdout + refused.stderr
    assert deletes == 0 and len(profiles) == CUSTOMERS
    report = read_report(tmp_path)
    assert report["exit_code"] == 2 and report["customers_deleted"] == 0


def test_max_count_and_an_empty_export_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    with start_sandbox(tmp_path) as sandbox:
        job = _job(tmp_path, sandbox.url, source, max_count=1)
        _export(source, range(1, CUSTOMERS + 1))
        assert _run(job).returncode == 0
        _export(source, range(1, CUSTOMERS - 1))  # 2 absent, 2%
        over = _run(job)
        empty_job = write_job(
            tmp_path,
            {
                **job_dict(tmp_path, sandbox.url, source, USERS_MAPPING),
                "sync": {"mode": "changed", "delete_absent": {"enabled": True}},
                "source": {"path": str(source), "allow_empty": True},
            },
        )
        _export(source, [])
        empty = _run(empty_job)
        deletes = _deletes_arrived(sandbox.arrivals())
    assert over.returncode == 2 and "max_count (1)" in over.stdout + over.stderr
    assert empty.returncode == 2 and "export is empty" in empty.stdout + empty.stderr
    assert deletes == 0


def test_a_dry_run_lists_the_ids_it_would_delete(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    with start_sandbox(tmp_path) as sandbox:
        job = _job(tmp_path, sandbox.url, source)
        _export(source, range(1, CUSTOMERS + 1))
        assert _run(job).returncode == 0
        _export(source, range(1, CUSTOMERS - 2))  # 3 absent
        dry = run_cli("validate", str(job), "--no-progress")
        deletes = _deletes_arrived(sandbox.arrivals())
    assert dry.returncode == 0, dry.stdout + dry.stderr
    listing = tmp_path / "out" / "report.dry-run.deletes.txt"
    assert listing.read_text().split() == [user_id(i) for i in (98, 99, 100)]
    assert stat.S_IMODE(os.stat(listing).st_mode) == 0o600
    assert read_report(tmp_path, dry_run=True)["customers_deleted"] == 3
    assert "would be deleted" in dry.stdout
    assert deletes == 0


def test_a_failed_delete_is_dead_lettered_and_replay_sends_it(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    with start_sandbox(tmp_path) as sandbox:
        url = sandbox.url
        port = url.rsplit(":", 1)[1]
        job = _job(tmp_path, url, source)
        _export(source, range(1, CUSTOMERS + 1))
        assert _run(job).returncode == 0
    # Tonight's rows are all unchanged (no update is sent); the delete is answered 503
    # through every attempt.
    _export(source, range(1, CUSTOMERS))
    failing = tmp_path / "failing"
    failing.mkdir()
    with start_sandbox(failing, "--port", port, "--fail-deletes"):
        failed = _run(job)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    report = read_report(tmp_path)
    assert report["deletes_failed"] == 1 and report["customers_deleted"] == 0
    (letter,) = read_dead_letters(tmp_path)
    assert letter["stage"] == "delete" and letter["customer_id"] == user_id(CUSTOMERS)
    assert letter["payload"] == {"identity_type": "customer_id", "identity_value": "u00100"}
    kept = tmp_path / "letters.jsonl"
    (tmp_path / "out" / "dead_letter.jsonl").rename(kept)
    second = tmp_path / "second"
    second.mkdir()
    with start_sandbox(second, "--port", port) as sandbox:
        replayed = run_cli("replay", str(job), str(kept), "--no-progress")
        deletes = _deletes_arrived(sandbox.arrivals())
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert deletes == 1  # sent again; this sandbox never knew the user: "not found" is done
    replay_report = (tmp_path / "letters.replay.report.json").read_text()
    assert '"customers_deleted": 1' in replay_report


@pytest.mark.slow
def test_a_customer_back_within_the_hard_delete_window_is_sent_again_after_it(
    tmp_path: Path,
) -> None:
    source = tmp_path / "users.csv"
    window = 10.0  # long enough for the night after the delete to fall inside it
    with start_sandbox(tmp_path, "--delete-window", str(window)) as sandbox:
        job = _job(tmp_path, sandbox.url, source, window_seconds=window)
        _export(source, range(1, 21))
        assert _run(job).returncode == 0
        _export(source, range(1, 20))  # u00020 absent: deleted (5%)
        assert _run(job).returncode == 0
        _export(source, range(1, 21))  # back at once: MoEngage loses this update
        assert _run(job, "--fresh").returncode == 0
        assert user_id(20) not in _profiles(sandbox.url)["profiles"]
        time.sleep(window + 0.5)
        assert _run(job, "--fresh").returncode == 0  # the same export, after the window
        back = read_report(tmp_path)
        profiles = _profiles(sandbox.url)["profiles"]
    assert back["rows_accepted"] == 1 and back["rows_unchanged"] == 19
    assert profiles[user_id(20)] == {"first_name": "name20", "points": 20}


@pytest.mark.parametrize(
    ("sync", "mapping", "says"),
    [
        ({"mode": "all"}, USERS_MAPPING, "needs sync.mode: changed"),
        (
            {"mode": "changed"},
            {"identifiers": ["u_em"], "attributes": {"u_em": "email"}},
            "Identity Resolution",
        ),
    ],
)
def test_delete_absent_needs_changed_mode_and_customer_ids(
    tmp_path: Path, sync: dict[str, Any], mapping: dict[str, Any], says: str
) -> None:
    source = _export(tmp_path / "users.csv", range(1, 3))
    sync = {**sync, "delete_absent": {"enabled": True}}
    job = write_job(tmp_path, job_dict(tmp_path, "http://127.0.0.1:9", source, mapping, sync=sync))
    refused = run_cli("validate", str(job))
    assert refused.returncode == 2
    assert "sync.delete_absent.enabled" in refused.stderr and says in refused.stderr


def test_a_row_without_a_readable_customer_id_stops_the_deletes(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    with start_sandbox(tmp_path) as sandbox:
        job = _job(tmp_path, sandbox.url, source)
        _export(source, range(1, CUSTOMERS + 1))
        assert _run(job).returncode == 0
        # u00100's row lost its id: u00100 may well be in the export, so nobody is deleted.
        _export(source, range(1, CUSTOMERS))
        with source.open("a") as handle:
            handle.write(",name100,100\n")
        refused = _run(job)
        deletes = _deletes_arrived(sandbox.arrivals())
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "1 rows read have no readable customer_id" in refused.stdout + refused.stderr
    assert deletes == 0


def test_the_same_export_again_is_skipped_and_deletes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    with start_sandbox(tmp_path) as sandbox:
        job = _job(tmp_path, sandbox.url, source)
        _export(source, range(1, CUSTOMERS + 1))
        assert _run(job).returncode == 0
        _export(source, range(1, CUSTOMERS))
        assert _run(job).returncode == 0  # u00100 deleted
        again = _run(job)  # the same file: every row settled already, none read
        deletes = _deletes_arrived(sandbox.arrivals())
    assert again.returncode == 0, again.stdout + again.stderr
    assert "absent customers not deleted" in again.stdout + again.stderr
    assert deletes == 1


def test_a_customer_whose_row_is_invalid_tonight_is_not_deleted(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    with start_sandbox(tmp_path) as sandbox:
        job = _job(tmp_path, sandbox.url, source)
        _export(source, range(1, CUSTOMERS + 1))
        assert _run(job).returncode == 0
        _export(source, range(1, CUSTOMERS))
        with source.open("a") as handle:
            handle.write(f"{user_id(CUSTOMERS)},name,not-a-number\n")  # read, not valid
        done = _run(job)
        deletes = _deletes_arrived(sandbox.arrivals())
    assert done.returncode == 1, done.stdout + done.stderr  # the invalid row is dead-lettered
    report = read_report(tmp_path)
    assert report["customers_absent"] == 0 and report["customers_deleted"] == 0
    assert deletes == 0
