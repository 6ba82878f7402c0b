"""Events exactly once (issue 23): the events ledger and the lost-answer policy, end to end.

The CLI runs against the sandbox; what MoEngage would hold is read from the sandbox's
record of accepted elements, event by event (customer, seq)."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox_proc import SandboxProcess, start_sandbox
from tests.support import (
    assert_report_adds_up,
    job_dict,
    read_dead_letters,
    read_report,
    run_cli,
    start_cli,
    write_job,
)

MAPPING: dict[str, Any] = {
    "customer_id": "user_id",
    "event": {
        "action": {"column": "event_name"},
        "time": {"column": "occurred_at"},
        "platform": {"column": "platform"},
        "attributes": {"seq": {"column": "seq", "type": "integer"}},
    },
}
HEADER = "event_id,user_id,event_name,occurred_at,platform,seq"


def event_line(seq: int, *, platform: str = "web", event_id: str | None = None) -> str:
    """One event: customer c<seq % 40>, a minute of its own; `seq` tells events apart."""
    minute = f"2024-03-01T{10 + seq // 60 % 10:02d}:{seq % 60:02d}:00Z"
    return f"{event_id or f'e{seq}'},c{seq % 40:03d},Viewed,{minute},{platform},{seq}"


def write_events(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return path


def events_job(tmp_path: Path, url: str, source: Path, **sections: Any) -> Path:
    mapping = sections.pop("mapping", MAPPING)
    job = job_dict(tmp_path, url, source, mapping, **sections)
    return write_job(tmp_path, {"import": "events", **job})


def arrivals_per_event(sandbox: SandboxProcess) -> Counter[tuple[str, int]]:
    """How often each event (customer, seq) reached the sandbox and was accepted."""
    found: Counter[tuple[str, int]] = Counter()
    for record in sandbox.records():
        for action in record["actions"]:
            found[(record["customer_id"], action["attributes"]["seq"])] += 1
    return found


def expected(seqs: range | list[int]) -> set[tuple[str, int]]:
    return {(f"c{seq % 40:03d}", seq) for seq in seqs}


def run(job: Path, *args: str) -> int:
    result = run_cli("run", str(job), "--no-progress", *args)
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_an_appended_event_is_the_only_one_the_next_run_sends(tmp_path: Path) -> None:
    source = write_events(tmp_path / "events.csv", [event_line(s) for s in range(1, 201)])
    with start_sandbox(tmp_path) as sandbox:
        job = events_job(tmp_path, sandbox.url, source)
        assert run(job) == 0
        with source.open("a") as handle:  # the export grows by one row: a new fingerprint
            handle.write(event_line(201) + "\n")
        dry = run_cli("validate", str(job), "--no-progress")
        assert dry.returncode == 0, dry.stderr
        planned = read_report(tmp_path, dry_run=True)
        assert planned["rows_already_sent"] == 200 and planned["rows_pending"] == 1
        assert run(job) == 0
        sent = arrivals_per_event(sandbox)
    assert sent == Counter(expected(range(1, 202)))  # each once, the new one too
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert report["rows_read"] == 201
    # The old rows: resumed past (the file only grew) or held back by the ledger, never sent.
    assert report["rows_accepted"] == 1
    assert report["rows_skipped"] + report["rows_already_sent"] == 200


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_events_rewritten_renamed_and_re_exported_arrive_once(tmp_path: Path) -> None:
    first = write_events(tmp_path / "day1.csv", [event_line(s) for s in range(1, 121)])
    with start_sandbox(tmp_path) as sandbox:
        job = events_job(tmp_path, sandbox.url, first)
        assert run(job) == 0
        # Renamed: the same bytes under another name.
        renamed = tmp_path / "renamed.csv"
        shutil.move(first, renamed)
        assert run(job, "--input", str(renamed)) == 0
        assert read_report(tmp_path)["rows_already_sent"] == 120
        # Re-exported: another order, other ids, another platform, some new events, and an
        # old one twice: only the new ones go, once each.
        order = [*range(150, 120, -1), *range(120, 0, -1), 7]
        lines = [event_line(s, platform="iOS", event_id=f"x{s}") for s in order]
        again = write_events(tmp_path / "re-export.csv", lines)
        assert run(job, "--input", str(again)) == 0
        report = read_report(tmp_path)
        # Replayed: the same file once more, with --fresh (progress forgotten).
        assert run(job, "--input", str(again), "--fresh") == 0
        fresh = read_report(tmp_path)
        sent = arrivals_per_event(sandbox)
    assert sent == Counter(expected(range(1, 151)))
    assert report["rows_accepted"] == 30 and report["rows_already_sent"] == 121
    assert_report_adds_up(report)
    assert fresh["rows_accepted"] == 0 and fresh["rows_already_sent"] == 151


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_identical_events_at_the_same_instant_count_once(tmp_path: Path) -> None:
    lines = [event_line(1), event_line(2), event_line(1, event_id="other"), event_line(3)]
    source = write_events(tmp_path / "events.csv", lines)
    with start_sandbox(tmp_path) as sandbox:
        assert run(events_job(tmp_path, sandbox.url, source)) == 0
        sent = arrivals_per_event(sandbox)
    assert sent == Counter(expected([1, 2, 3]))
    report = read_report(tmp_path)
    assert report["rows_accepted"] == 3 and report["rows_already_sent"] == 1


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_mapping_event_id_keys_the_ledger(tmp_path: Path) -> None:
    mapping = {**MAPPING, "event": {**MAPPING["event"], "id": "event_id"}}
    # Two rows with one id: one event. Two identical rows with two ids: two events.
    lines = [
        event_line(1),
        event_line(2, event_id="e1"),
        event_line(3),
        event_line(3, event_id="z"),
    ]
    source = write_events(tmp_path / "events.csv", lines)
    with start_sandbox(tmp_path) as sandbox:
        job = events_job(tmp_path, sandbox.url, source, mapping=mapping)
        assert run(job) == 0
        first = read_report(tmp_path)
        # The same ids again, their content corrected (another time): nothing is resent;
        # a new id is.
        fixed = [event_line(s + 100, event_id=f"e{s}") for s in (1, 3)]
        again = write_events(tmp_path / "fixed.csv", [*fixed, event_line(4, event_id="e4")])
        assert run(job, "--input", str(again)) == 0
        second = read_report(tmp_path)
        sent = arrivals_per_event(sandbox)
    assert first["rows_accepted"] == 3 and first["rows_already_sent"] == 1
    assert sent == Counter({("c001", 1): 1, ("c003", 3): 2, ("c004", 4): 1})
    assert second["rows_accepted"] == 1 and second["rows_already_sent"] == 2


LOSSY = ("--lost-answer-rate", "0.3", "--seed", "7")


def lossy_job(tmp_path: Path, url: str, source: Path, policy: str) -> Path:
    return events_job(
        tmp_path,
        url,
        source,
        # Ten events a request, two in flight: many requests, some answers lost.
        rate_limit={"updates": 200, "period_seconds": 1},
        delivery={"on_lost_answer": policy, "concurrency": 2, "backoff_base_seconds": 0.01},
    )


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_lost_answers_resent_are_counted_as_possibly_duplicated(tmp_path: Path) -> None:
    source = write_events(tmp_path / "events.csv", [event_line(s) for s in range(1, 201)])
    with start_sandbox(tmp_path, *LOSSY) as sandbox:
        assert run(lossy_job(tmp_path, sandbox.url, source, "resend")) == 0
        sent = arrivals_per_event(sandbox)
        lost = sandbox.stats()["resets"]
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    assert set(sent) == expected(range(1, 201)) and report["rows_accepted"] == 200
    twice = sum(1 for count in sent.values() if count > 1)
    assert lost > 0 and twice > 0  # the sandbox kept requests whose answer it cut
    # Every event MoEngage holds more than once is counted; none is counted that is not.
    assert report["events_possibly_duplicated"] == twice


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_lost_answers_dead_lettered_as_uncertain_are_never_sent_twice(tmp_path: Path) -> None:
    source = write_events(tmp_path / "events.csv", [event_line(s) for s in range(1, 201)])
    with start_sandbox(tmp_path, *LOSSY) as sandbox:
        job = lossy_job(tmp_path, sandbox.url, source, "dead_letter")
        assert run(job) == 1
        report = read_report(tmp_path)
        letters = read_dead_letters(tmp_path)
        assert run(job) == 1  # a rerun resends nothing: uncertain rows are not retried
        rerun = read_report(tmp_path)
        sent = arrivals_per_event(sandbox)
        # Replayed on purpose: sent again (the sandbox may lose some answers again); what
        # it accepts joins the ledger, so even a run that forgot its progress skips it.
        dead_letter = tmp_path / "out" / "dead_letter.jsonl"
        replay = run_cli("replay", str(job), str(dead_letter), "--no-progress")
        assert replay.returncode in (0, 1), replay.stderr
        replayed = json.loads((tmp_path / "out" / "dead_letter.replay.report.json").read_text())
        assert run(job, "--fresh") == (1 if replayed["rows_failed"] else 0)
        fresh = read_report(tmp_path)
        after = arrivals_per_event(sandbox)
    assert max(sent.values()) == 1  # nothing arrived twice
    assert set(sent) == expected(range(1, 201))  # the lost answers were in fact accepted
    assert letters and {d["stage"] for d in letters} == {"uncertain"}
    uncertain = {
        (d["customer_id"], d["payload"]["actions"][0]["attributes"]["seq"]) for d in letters
    }
    assert len(uncertain) == len(letters) == report["rows_failed"]
    assert report["rows_accepted"] + report["rows_failed"] == 200
    assert report["events_possibly_duplicated"] == 0
    assert "may have reached MoEngage" in letters[0]["error"]
    assert rerun["rows_skipped"] == 200 and rerun["requests"] == 0
    assert replayed["rows_read"] == len(letters) and replayed["rows_accepted"] > 0
    # The fresh run sends nothing: the replayed events are in the ledger now, and those
    # whose answer the replay lost again are still uncertain.
    assert fresh["requests"] == 0 and fresh["rows_failed"] == replayed["rows_failed"]
    assert fresh["rows_already_sent"] == 200 - replayed["rows_failed"]
    assert sum(after.values()) >= sum(sent.values()) + replayed["rows_accepted"]


def in_flight_count(state: Path) -> int:
    if not state.exists():
        return 0
    db = sqlite3.connect(f"{state.resolve().as_uri()}?mode=ro", uri=True)
    try:
        (count,) = db.execute("SELECT count(*) FROM events_in_flight").fetchone()
    except sqlite3.Error:
        count = 0
    finally:
        db.close()
    return int(count)


def killed_then_rerun(
    tmp_path: Path, source: Path, policy: str
) -> tuple[Counter[tuple[str, int]], Counter[tuple[str, int]], int]:
    """A run killed (SIGKILL) while the slow sandbox holds its first requests (it accepts and
    records them after the client is gone), then the same job again against the same
    sandbox: (events kept from the killed run, from both, the rerun's exit code)."""
    state = tmp_path / "out" / "state.db"
    with start_sandbox(tmp_path, "--latency-ms", "3000") as slow:
        job = lossy_job(tmp_path, slow.url, source, policy)
        first = start_cli("run", str(job), "--no-progress")
        deadline = time.monotonic() + 60
        while in_flight_count(state) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # the first requests reach the sandbox, which holds them 3 s
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        time.sleep(3.5)  # the requests it left are answered to no one, and kept
        killed = arrivals_per_event(slow)
        code = run(job)
        both = arrivals_per_event(slow)
    assert killed, "the killed run had no request accepted in flight"
    return killed, both, code


@pytest.mark.sandbox
@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.parametrize("policy", ["resend", "dead_letter"])
def test_a_run_killed_with_requests_in_flight(tmp_path: Path, policy: str) -> None:
    source = write_events(tmp_path / "events.csv", [event_line(s) for s in range(1, 201)])
    first, both, code = killed_then_rerun(tmp_path, source, policy)
    report = read_report(tmp_path)
    assert_report_adds_up(report)
    twice = {event for event, count in both.items() if count > 1}
    if policy == "resend":
        assert code == 0 and set(both) == expected(range(1, 201))
        assert twice and report["events_possibly_duplicated"] >= len(twice)
    else:
        assert code == 1 and not twice  # nothing sent twice
        letters = read_dead_letters(tmp_path)
        uncertain = {
            (d["customer_id"], d["payload"]["actions"][0]["attributes"]["seq"]) for d in letters
        }
        assert {d["stage"] for d in letters} == {"uncertain"}
        assert set(first) <= uncertain  # what the killed run had in flight
        assert set(both) | uncertain == expected(range(1, 201))
        assert "earlier run stopped" in letters[0]["error"]


@pytest.mark.sandbox
@pytest.mark.subprocess
def test_a_replay_never_resends_events_accepted_since_its_lines_were_written(
    tmp_path: Path,
) -> None:
    lines = [event_line(seq) for seq in range(80)]
    first = write_events(tmp_path / "events_monday.csv", lines)
    for folder in ("s1", "s2"):
        (tmp_path / folder).mkdir()
    # Monday: c003's requests fail whatever is tried, its events go to the dead-letter file.
    with start_sandbox(
        tmp_path / "s1", "--rate", "1000000", "--fail-customer-ids", "^c003$"
    ) as flaky:
        small = {"max_attempts": 2, "max_batch_bytes": 1000}  # c003 fails alone, others pass
        job = events_job(tmp_path, flaky.url, first, delivery=small)
        assert run(job) == 1
    letters = read_dead_letters(tmp_path)
    assert {letter["customer_id"] for letter in letters} == {"c003"}
    kept = tmp_path / "monday.dead_letter.jsonl"
    shutil.copy(tmp_path / "out" / "dead_letter.jsonl", kept)
    port = flaky.url.rsplit(":", 1)[1]  # the same workspace at the same address
    with start_sandbox(tmp_path / "s2", "--rate", "1000000", "--port", port) as sandbox:
        # Tuesday's export holds the same events under another name: only c003's are new.
        second = write_events(tmp_path / "events_tuesday.csv", lines)
        job = events_job(tmp_path, sandbox.url, second)
        assert run(job) == 0
        assert read_report(tmp_path)["rows_already_sent"] == 80 - len(letters)
        before = arrivals_per_event(sandbox)
        # Replaying Monday's dead letters sends nothing: those events were accepted since.
        replay = run_cli("replay", str(job), str(kept), "--no-progress")
        assert replay.returncode == 0, replay.stderr
        after = arrivals_per_event(sandbox)
    report = json.loads((tmp_path / "monday.dead_letter.replay.report.json").read_text())
    assert report["requests"] == 0 and report["rows_already_sent"] == len(letters)
    assert after == before and set(after.values()) == {1}
    assert set(after) == expected([3, 43])  # Tuesday sent only what Monday had not
