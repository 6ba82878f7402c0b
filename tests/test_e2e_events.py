"""Events jobs end to end: the CLI against the sandbox, checked from what the server received."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import pytest
import yaml

from importer.sandbox.windows import max_in_any_window
from tests.sandbox_proc import SandboxProcess, start_sandbox
from tests.support import (
    assert_each_sent_and_few_twice,
    assert_report_adds_up,
    job_dict,
    read_dead_letters,
    read_report,
    run_cli,
    start_cli,
    write_job,
)

EVENT_MAPPING: dict[str, Any] = {
    "customer_id": "user_id",
    "event": {
        "action": {"column": "event_name"},
        "time": {"column": "occurred_at"},
        "timezone_offset": {"column": "tz_offset_seconds"},
        "platform": {"column": "platform"},
        "app_version": {"column": "app_version"},
        "attributes": {
            "amount": {"column": "amount", "type": "number"},
            "quantity": {"column": "quantity", "type": "integer"},
            "gift": {"column": "gift", "type": "boolean"},
            "sku": "sku",
            "seq": {"column": "seq", "type": "integer"},
        },
    },
}
HEADER = (
    "user_id,event_name,occurred_at,tz_offset_seconds,platform,app_version,"
    "amount,quantity,gift,sku,seq"
)


def _events_job(
    tmp_path: Path, url: str, source: Path, chunk_rows: int | None = None, **sections: Any
) -> Path:
    job = job_dict(tmp_path, url, source, EVENT_MAPPING, **sections)
    if chunk_rows is not None:
        job["source"]["chunk_rows"] = chunk_rows
    return write_job(tmp_path, {"import": "events", **job})


def _every_field_csv(tmp_path: Path) -> Path:
    source = tmp_path / "events.csv"
    source.write_text(
        "\n".join(
            [
                HEADER,
                "c1,Order Placed,2024-03-01T10:00:00Z,19800,ANDROID,1.2.3,12.50,2,true,A-1,1",
                "c1,Order Shipped,2024-03-02 09:30:00+01:00,3600,iOS,1.2.4,,,,A-1,2",
                "c2,Signed Up,2024-03-01T11:00:00Z,-18000,web,,,,false,,3",
                "c3,,2024-03-01T12:00:00Z,0,web,,,,,,4",  # empty action: dead-lettered
                "c4,Renewal,2099-01-01T00:00:00Z,0,web,,,,,,5",  # future: dead-lettered
                "c1,Order Delivered,2024-03-03T08:00:00Z,,TV,,,,,,6",
            ]
        )
        + "\n"
    )
    return source


def _check_every_field(records: list[dict[str, Any]]) -> None:
    actions = _actions_by_customer(records)
    assert [a["action"] for a in actions["c1"]] == [
        "Order Placed",
        "Order Shipped",
        "Order Delivered",
    ]
    placed, shipped, delivered = actions["c1"]
    assert placed == {
        "action": "Order Placed",
        "attributes": {"amount": 12.5, "quantity": 2, "gift": True, "sku": "A-1", "seq": 1},
        "platform": "ANDROID",
        "app_version": "1.2.3",
        "current_time": "2024-03-01T10:00:00Z",
        "user_time": "2024-03-01T15:30:00",
        "user_timezone_offset": 19800,
    }
    assert shipped["current_time"] == "2024-03-02T08:30:00Z"  # the offset converted to UTC
    assert shipped["user_time"] == "2024-03-02T09:30:00"
    assert delivered["platform"] == "TV" and "user_timezone_offset" not in delivered
    (signed,) = actions["c2"]
    assert signed["user_timezone_offset"] == -18000 and signed["attributes"] == {
        "gift": False,
        "seq": 3,
    }
    assert "c3" not in actions and "c4" not in actions


def _actions_by_customer(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each customer's actions in the order the server received them."""
    found: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        assert record["type"] == "event", record
        found.setdefault(record["customer_id"], []).extend(record["actions"])
    return found


def _check_dead_letters(tmp_path: Path) -> None:
    letters = {d["row"]: d for d in read_dead_letters(tmp_path)}
    assert set(letters) == {4, 5}
    assert all(d["stage"] == "validation" for d in letters.values())
    assert "an event needs an action" in letters[4]["error"]
    assert "future" in letters[5]["error"] and "occurred_at" in letters[5]["error"]
    assert letters[5]["payload"]["actions"][0]["current_time"] == "2099-01-01T00:00:00Z"


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_an_events_csv_with_every_field(tmp_path: Path) -> None:
    source = _every_field_csv(tmp_path)
    with start_sandbox(tmp_path) as sandbox:
        job = _events_job(tmp_path, sandbox.url, source)
        result = run_cli("run", str(job), "--no-progress")
        records = sandbox.records()
        stats = sandbox.stats()
    assert result.returncode == 1, result.stderr  # two rows dead-lettered
    _check_every_field(records)
    _check_dead_letters(tmp_path)
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_accepted"] == 4 and report["rows_invalid"] == 2
    assert stats["events_accepted"] == 4 and stats["users_accepted"] == 0


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_an_events_parquet_file_with_every_field(tmp_path: Path) -> None:
    csv = _every_field_csv(tmp_path)
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    # Native types, as a warehouse writes them: timestamps, integers, floats, booleans.
    native = pd.DataFrame(
        {
            "user_id": frame["user_id"],
            "event_name": frame["event_name"].replace("", None),
            "occurred_at": pd.to_datetime(
                [
                    *("2024-03-01T10:00:00Z", "2024-03-02T08:30:00Z", "2024-03-01T11:00:00Z"),
                    *("2024-03-01T12:00:00Z", "2099-01-01T00:00:00Z", "2024-03-03T08:00:00Z"),
                ],
                utc=True,
            ),
            "tz_offset_seconds": pd.array([19800, 3600, -18000, 0, 0, None], dtype="Int64"),
            "platform": frame["platform"],
            "app_version": frame["app_version"].replace("", None),
            "amount": [12.5, None, None, None, None, None],
            "quantity": pd.array([2, None, None, None, None, None], dtype="Int64"),
            "gift": pd.array([True, None, False, None, None, None], dtype="boolean"),
            "sku": frame["sku"].replace("", None),
            "seq": pd.array(range(1, 7), dtype="Int64"),
        }
    )
    source = tmp_path / "events.parquet"
    native.to_parquet(source)
    csv.unlink()
    with start_sandbox(tmp_path) as sandbox:
        job = _events_job(tmp_path, sandbox.url, source)
        result = run_cli("run", str(job), "--no-progress")
        records = sandbox.records()
    assert result.returncode == 1, result.stderr
    _check_every_field(records)
    _check_dead_letters(tmp_path)


def _many_events(tmp_path: Path, rows: int, customers: int, others_after: int = 0) -> Path:
    """Rows of `customers` customers, interleaved and in runs, each row its own seq; from
    row `others_after` on (if given), rows of other customers."""
    source = tmp_path / "events.csv"
    lines = [HEADER]
    for seq in range(1, rows + 1):
        # Runs of up to three rows of one customer, customers revisited later in the file.
        customer = f"u{(seq // 3) % customers:04d}"
        if others_after and seq > others_after:
            customer = f"v{seq % 50:04d}"
        lines.append(f"{customer},Viewed,2024-03-01T10:00:00Z,0,web,,1.5,1,,S,{seq}")
    source.write_text("\n".join(lines) + "\n")
    return source


def _file_order(source: Path) -> dict[str, list[int]]:
    frame = pd.read_csv(source, dtype=str)
    order: dict[str, list[int]] = {}
    for customer, seq in zip(frame["user_id"], frame["seq"], strict=True):
        order.setdefault(customer, []).append(int(seq))
    return order


def _seqs(records: list[dict[str, Any]]) -> dict[str, list[int]]:
    return {
        customer: [a["attributes"]["seq"] for a in actions]
        for customer, actions in _actions_by_customer(records).items()
    }


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_grouped_actions_arrive_in_file_order_per_customer(tmp_path: Path) -> None:
    source = _many_events(tmp_path, 3000, 40)
    with start_sandbox(tmp_path, "--rate", "1") as sandbox:  # users' limit: events apart
        job = _events_job(
            tmp_path, sandbox.url, source, delivery={"max_batch_bytes": 20000, "concurrency": 4}
        )
        result = run_cli("run", str(job), "--no-progress")
        records = sandbox.records()
        arrivals = sandbox.arrivals()
    assert result.returncode == 0, result.stderr
    assert _seqs(records) == _file_order(source)
    grouped = [r for r in records if len(r["actions"]) > 1]
    assert grouped, "a customer's rows should share elements"
    assert len(records) < 3000
    assert sum(a["events"] for a in arrivals) == 3000
    assert all(a["status"] == 200 for a in arrivals)
    report = read_report(tmp_path)
    assert report["rows_accepted"] == 3000 and report["http_429"] == 0


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_the_events_limit_holds_in_every_window(tmp_path: Path) -> None:
    rate, period, rows = 300, 1.0, 1800
    source = _many_events(tmp_path, rows, 25)
    with start_sandbox(
        tmp_path,
        *("--event-rate", str(rate), "--period", str(period), "--latency-ms", "20"),
    ) as sandbox:
        job = _events_job(
            tmp_path,
            sandbox.url,
            source,
            rate_limit={"updates": rate, "period_seconds": period},
        )
        started = time.monotonic()
        result = run_cli("run", str(job), "--no-progress")
        elapsed = time.monotonic() - started
        arrivals = sandbox.arrivals()
        records = sandbox.records()
    assert result.returncode == 0, result.stderr
    report = read_report(tmp_path)
    assert report["rows_accepted"] == rows and report["http_429"] == 0
    assert _seqs(records) == _file_order(source)
    as_events = [{**a, "users": a["events"]} for a in arrivals]
    assert max_in_any_window(as_events, period) <= rate
    # Counting elements instead of actions would have finished in well under the time.
    assert elapsed >= (rows / rate - 1) * period


def _wait_for_events(sandbox: SandboxProcess, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while sum(len(r["actions"]) for r in sandbox.records()) < count:
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.05)


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
def test_kill_9_and_resume_sends_under_5_percent_twice(tmp_path: Path) -> None:
    rows = 2000
    source = _many_events(tmp_path, rows, 300)
    with start_sandbox(tmp_path) as sandbox:
        job = _events_job(
            tmp_path, sandbox.url, source, rate_limit={"updates": 500, "period_seconds": 1}
        )
        first = start_cli("run", str(job), "--no-progress")
        _wait_for_events(sandbox, 600)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
        assert first.returncode == -signal.SIGKILL
        sent_before = sum(len(r["actions"]) for r in sandbox.records())
        assert sent_before < rows
        again = run_cli("run", str(job), "--no-progress")
        assert again.returncode == 0, again.stderr
        records = sandbox.records()
    sent = Counter(a["attributes"]["seq"] for r in records for a in r["actions"])
    assert_each_sent_and_few_twice(sent, range(1, rows + 1))
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_skipped"] > 0
    assert report["rows_skipped"] + report["rows_accepted"] == rows


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_replay_sends_failed_events_again(tmp_path: Path) -> None:
    source = _many_events(tmp_path, 300, 30)
    with start_sandbox(tmp_path, "--fail-customer-ids", "^u0007$") as flaky:
        job = _events_job(
            tmp_path,
            flaky.url,
            source,
            delivery={
                "max_attempts": 2,
                "backoff_base_seconds": 0.01,
                "backoff_max_seconds": 0.05,
                "max_batch_bytes": 3000,
                "concurrency": 2,
            },
        )
        first = run_cli("run", str(job), "--no-progress")
        accepted_first = flaky.records()
    assert first.returncode == 1, first.stderr
    letters = read_dead_letters(tmp_path)
    assert letters and {d["stage"] for d in letters} == {"delivery"}
    failed_rows = {d["row"] for d in letters}
    order = _file_order(source)
    assert set(order["u0007"]) <= failed_rows  # seq is the row number
    assert "u0007" not in _seqs(accepted_first)
    # Each dead-letter line is one row's own element: one action.
    assert all(len(d["payload"]["actions"]) == 1 for d in letters)

    (tmp_path / "healthy").mkdir()
    with start_sandbox(tmp_path / "healthy") as healthy:
        job = _events_job(tmp_path, healthy.url, source)
        replay = run_cli(
            "replay", str(job), str(tmp_path / "out" / "dead_letter.jsonl"), "--no-progress"
        )
        replayed = healthy.records()
    assert replay.returncode == 0, replay.stderr
    resent = _seqs(replayed)
    assert resent["u0007"] == order["u0007"]  # in file order
    everything = Counter(
        a["attributes"]["seq"] for r in accepted_first + replayed for a in r["actions"]
    )
    assert set(everything) == set(range(1, 301)) and max(everything.values()) == 1


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_one_event_a_request_goes_to_the_event_endpoint(tmp_path: Path) -> None:
    source = _every_field_csv(tmp_path)
    with start_sandbox(tmp_path) as sandbox:
        job = _events_job(tmp_path, sandbox.url, source, api={"endpoint": "customer"})
        result = run_cli("run", str(job), "--no-progress")
        arrivals = sandbox.arrivals()
        records = sandbox.records()
    assert result.returncode == 1, result.stderr
    assert {a["path"] for a in arrivals} == {"/v1/event/SANDBOX"}
    # One element a request (a customer's rows may share its actions).
    assert all(a["status"] == 200 for a in arrivals)
    assert sum(a["events"] for a in arrivals) == 4 and len(arrivals) == len(records)
    _check_every_field(records)


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"mapping": {"customer_id": "user_id"}}, "mapping.event"),
        ({"mapping": {**EVENT_MAPPING, "attributes": {"x": "sku"}}}, "mapping.attributes"),
        (
            {
                "mapping": {
                    **EVENT_MAPPING,
                    "event": {**EVENT_MAPPING["event"], "attributes": {"moe_x": "sku"}},
                }
            },
            "mapping.event.attributes.moe_x",
        ),
        (
            {"mapping": {**EVENT_MAPPING, "event": {**EVENT_MAPPING["event"], "tpye": "x"}}},
            "mapping.event.tpye",
        ),
        (
            {"mapping": {**EVENT_MAPPING, "event": {**EVENT_MAPPING["event"], "action": "moe_x"}}},
            "mapping.event.action",
        ),
        ({"import": "orders"}, "import"),
        ({"sync": {"mode": "changed"}}, "sync.mode"),
    ],
)
def test_a_bad_events_job_is_refused_naming_the_key(
    tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    source = _every_field_csv(tmp_path)
    job = job_dict(tmp_path, "http://127.0.0.1:9", source, EVENT_MAPPING)
    path = write_job(tmp_path, {"import": "events", **job, **change})
    result = run_cli("validate", str(path))
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.subprocess
def test_a_missing_event_column_is_refused_before_sending(tmp_path: Path) -> None:
    source = tmp_path / "events.csv"
    source.write_text("user_id,event_name\nc1,Viewed\n")
    job = job_dict(tmp_path, "http://127.0.0.1:9", source, EVENT_MAPPING)
    result = run_cli("validate", str(write_job(tmp_path, {"import": "events", **job})))
    assert result.returncode == 2
    assert "mapping.event.time.column" in result.stderr


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_a_rerun_resends_failed_events_and_no_accepted_one(tmp_path: Path) -> None:
    # u0007's rows are 21-23 and 111-113; the rest of the file keeps the API answering.
    source = _many_events(tmp_path, 400, 30, others_after=200)
    delivery = {
        "max_attempts": 2,
        "backoff_base_seconds": 0.01,
        "backoff_max_seconds": 0.05,
        "max_batch_bytes": 3000,
        "concurrency": 2,
    }
    with start_sandbox(tmp_path, "--fail-customer-ids", "^u0007$") as flaky:
        port = str(urlparse(flaky.url).port)
        # Small chunks: a customer's rows span several elements, some failing, some not.
        job = _events_job(
            tmp_path,
            flaky.url,
            source,
            delivery=delivery,
            chunk_rows=20,
        )
        first = run_cli("run", str(job), "--no-progress")
        accepted_first = flaky.records()
    assert first.returncode == 1, first.stderr
    failed = read_report(tmp_path)["rows_failed"]
    assert failed > 0

    (tmp_path / "healthy").mkdir()
    with start_sandbox(tmp_path / "healthy", "--port", port) as healthy:
        again = run_cli("run", str(job), "--no-progress")
        resent = healthy.records()
    assert again.returncode == 0, again.stderr
    assert sum(len(r["actions"]) for r in resent) == failed
    assert _seqs(resent)["u0007"] == _file_order(source)["u0007"]
    everything = Counter(
        a["attributes"]["seq"] for r in accepted_first + resent for a in r["actions"]
    )
    assert set(everything) == set(range(1, 401)) and max(everything.values()) == 1


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_init_proposes_an_events_job_that_runs(tmp_path: Path) -> None:
    source = _every_field_csv(tmp_path)
    init = run_cli("init", str(source))
    assert init.returncode == 0, init.stderr
    proposed = yaml.safe_load(init.stdout)
    assert proposed["import"] == "events"
    event = proposed["mapping"]["event"]
    assert event["action"] == {"column": "event_name"}
    assert event["time"] == {"column": "occurred_at"}
    assert event["timezone_offset"] == {"column": "tz_offset_seconds"}
    assert event["platform"] == {"column": "platform"}
    assert event["app_version"] == {"column": "app_version"}
    assert set(event["attributes"]) == {"amount", "quantity", "gift", "sku", "seq"}
    assert proposed["rate_limit"]["updates"] == 30000
    with start_sandbox(tmp_path) as sandbox:
        proposed["api"] = job_dict(tmp_path, sandbox.url, source, {})["api"]
        proposed["output"] = {"dead_letter": str(tmp_path / "out" / "dl.jsonl")}
        job = write_job(tmp_path, proposed, "proposed.yaml")
        # The report's default place is out/proposed/ under the working directory: the test's.
        result = run_cli("run", str(job), "--no-progress", cwd=tmp_path)
        records = sandbox.records()
    assert result.returncode == 1, result.stderr  # the future-dated and empty-action rows
    _check_every_field(records)


@pytest.mark.subprocess
def test_init_events_asks_for_an_events_job(tmp_path: Path) -> None:
    source = tmp_path / "activity.csv"
    source.write_text("user_id,what,when\nc1,Viewed,2024-03-01T10:00:00Z\n")
    plain = run_cli("init", str(source))
    assert plain.returncode == 0 and "import: events" not in plain.stdout  # names unknown
    asked = run_cli("init", "--events", str(source))
    assert asked.returncode == 2 and "event-name column" in asked.stderr
    users = tmp_path / "users.csv"
    users.write_text("user_id,name,created_at\nc1,Ann,2024-03-01T10:00:00Z\n")
    assert "import: events" not in run_cli("init", str(users)).stdout
