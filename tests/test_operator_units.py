"""Issue 16 without a network: what progress says the run waits on, replay's bookkeeping in
the state file, and the summary lines an operator reads."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from importer.outputs.progress import Progress, Waits, format_duration
from importer.outputs.report import Report, dry_run_report_path, format_summary, format_waits
from importer.run.replay import ReplayStore
from importer.state import StateStore


class FakeSender:
    host = "api-01.moengage.invalid:443"

    def __init__(self) -> None:
        self.outage = False
        self.answered = True
        self.said: str | None = None

    def waiting_on(self) -> str | None:
        return self.said


class FakeLimiter:
    updates = 600
    period_seconds = 60.0

    def __init__(self) -> None:
        self.granted_total = 0
        self.in_flight = 0


def test_waits_name_outage_429_slow_answers_and_the_rate_limit() -> None:
    sender, limiter = FakeSender(), FakeLimiter()
    waits = Waits(sender, limiter)
    assert waits.now(0.0, quiet_for=0.0) is None
    limiter.in_flight = 10
    slow = waits.now(1.0, quiet_for=6.0)
    assert slow is not None and slow[0] == "slow_answers" and "none answered for 6 s" in slow[1]
    sender.said = "429s: slowed to 300 updates/minute"
    assert waits.now(2.0, quiet_for=6.0) == ("http_429", sender.said)
    sender.outage, sender.said = True, "the API is not answering (503): paused 4 s, probing"
    assert waits.now(3.0, quiet_for=6.0) == ("outage", sender.said)
    # Granting the limit's pace (10 a second) for a few seconds: the limit sets the pace.
    sender.outage, sender.said, limiter.in_flight = False, None, 0
    for second in range(4, 10):
        limiter.granted_total = 10 * second
        at_limit = waits.now(float(second), quiet_for=0.0)
    assert at_limit is not None and at_limit[0] == "rate_limit" and "600" in at_limit[1]


def test_nothing_answered_yet_is_never_called_the_rate_limit() -> None:
    # A host that hangs or answers only failures: the grants' pace is the limit's (the
    # first window is granted at once), yet the run waits on the host, not on the limit.
    sender, limiter = FakeSender(), FakeLimiter()
    sender.answered = False
    waits = Waits(sender, limiter)
    assert waits.now(0.0, quiet_for=0.0) is None  # nothing sent yet: no wait to name
    for second in range(1, 8):
        limiter.granted_total, limiter.in_flight = 10 * second, 10
        waiting = waits.now(float(second), quiet_for=float(second))
    assert waiting == (
        "slow_answers",
        "the first answer from api-01.moengage.invalid:443: 10 updates in flight, "
        "none accepted in 7 s",
    )
    limiter.in_flight = 0  # between attempts: still no answer, still not the limit
    waiting = waits.now(8.0, quiet_for=8.0)
    assert waiting is not None and "rate limit" not in waiting[1]
    sender.outage, sender.said = True, "the API is not answering (503): paused 4 s, probing"
    assert waits.now(9.0, quiet_for=9.0) == ("outage", sender.said)
    # Once answered, the limit's pace is the limit again.
    sender.outage, sender.said, sender.answered = False, None, True
    limiter.granted_total = 100
    at_limit = waits.now(10.0, quiet_for=0.0)
    assert at_limit is not None and at_limit[0] == "rate_limit"


def test_progress_logs_a_new_wait_at_once_and_times_each_kind(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr("importer.outputs.progress.time.monotonic", lambda: clock[0])
    caplog.set_level(logging.INFO, logger="importer")
    logging.getLogger("importer").propagate = True
    sender, limiter = FakeSender(), FakeLimiter()
    progress = Progress(enabled=None, total=1000, limit_per_minute=600, interval=60)
    progress.watch(sender, limiter)
    for _ in range(5):
        clock[0] += 1
        progress.advance(10)
    sender.said = "429s: slowed to 300 updates/minute"
    clock[0] += 1
    progress.tick()  # the interval is far off, but a new wait is logged at once
    lines = [r.getMessage() for r in caplog.records if "progress:" in r.getMessage()]
    assert len(lines) == 1
    assert "50 of 1,000 rows settled" in lines[0]
    assert "left at this pace" in lines[0] and "waiting: 429s: slowed to 300" in lines[0]
    for _ in range(10):
        clock[0] += 1
        progress.tick()
    assert progress.wait_seconds() == {"http_429": 10.0}


def test_formats() -> None:
    assert format_duration(42) == "42 s"
    assert format_duration(754) == "12m 34s"
    assert format_duration(7380) == "2h 03m"
    assert format_waits({"http_429": 31.4, "rate_limit": 120.0, "outage": 0.2}) == (
        "the rate limit 120 s, 429s 31 s"
    )
    assert dry_run_report_path(Path("out/report.json")) == Path("out/report.dry-run.json")


def test_summary_titles_a_replay_and_names_kept_letters_and_waits() -> None:
    report = Report(
        replay_of="out/dead.jsonl",
        dead_letter_previous="out/dead.20261129T010000Z-abc123.jsonl",
        wait_seconds={"http_429": 12.0},
    )
    text = format_summary(report)
    assert text.splitlines()[0] == "moe-import replay summary"
    assert "replay of       out/dead.jsonl" in text
    assert "earlier letters out/dead.20261129T010000Z-abc123.jsonl" in text
    assert "waited on       429s 12 s" in text
    assert format_summary(Report()).splitlines()[0] == "moe-import run summary"


def test_rows_a_replay_delivered_no_longer_count_as_dead_lettered(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    run = StateStore(path, "job")
    run.mark_settled("/in.csv", "fp", [1, 2, 3])
    run.mark_settled("/in.csv", "fp", [4, 5], dead_lettered=True)
    run.mark_settled("/in.csv", "fp", [6], dead_lettered=True, retry_later=True)
    run.close()
    replay = ReplayStore(path, "job", "replay-1", fresh=False)
    assert not replay.has_progress()
    replay.mark_settled("/in.csv", "fp", [4, 6])
    replay.mark_settled("/in.csv", "fp", [5], dead_lettered=True)
    settled = replay.settled("/in.csv", "fp")
    assert settled.ranges == [(1, 6)] and settled.dead == [(5, 5)] and settled.retry == []
    assert replay.job.accepted("/in.csv", "fp") == [(1, 4), (6, 6)]
    assert replay.has_progress()
    own = replay.own.settled("/in.csv", "fp")
    assert own.ranges == [(4, 6)] and own.dead == [(5, 5)]
    replay.close()
    # --fresh forgets the replay's own progress, never the job's.
    again = ReplayStore(path, "job", "replay-1", fresh=True)
    assert not again.has_progress()
    assert again.settled("/in.csv", "fp").ranges == [(1, 6)]
    again.close()


def test_stored_path_finds_the_run_s_key_by_name(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db", "job")
    store.mark_settled("/elsewhere/in.csv", "fp", [1])
    assert store.stored_path("in.csv", "fp") == "/elsewhere/in.csv"
    assert store.stored_path("other.csv", "fp") == str(Path("other.csv").resolve())
    store.close()
