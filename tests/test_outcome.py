"""Settler: each row ends once; the snapshot moves only with the progress of accepted rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from importer.outputs.deadletter import DeadLetterWriter
from importer.outputs.progress import Progress
from importer.outputs.report import Report
from importer.rows import InvalidRow, Row
from importer.run.delivery import DeliveryStats, Refusal, SendResult
from importer.run.feed import Work
from importer.run.outcome import SettleFault, Settler, record_delivery
from importer.run.sync import CustomerKeys
from importer.state import StateStore


class _Records:
    def record(self, row: int) -> dict[str, object]:
        return {"row": row}


def _row(number: int, customer: str, points: int) -> Row:
    element = orjson.dumps(
        {"type": "customer", "customer_id": customer, "attributes": {"p": points}}
    )
    return Row("f.csv", number, customer, element, _Records())


def _settler(tmp_path: Path) -> tuple[Settler, StateStore]:
    state = StateStore(tmp_path / "state.db", "scope")
    writer = DeadLetterWriter(tmp_path / "dead.jsonl", append=False)
    progress = Progress(enabled=False, total=None, limit_per_minute=10_000)
    settler = Settler(Report(), writer, state, {"f.csv": ("/abs/f.csv", "fp")}, progress, "run")
    settler.customer_keys = CustomerKeys([])
    return settler, state


def _snapshot(tmp_path: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(tmp_path / "state.db") as db:
        return db.execute("SELECT customer, fingerprint FROM snapshot ORDER BY customer").fetchall()


def test_only_accepted_rows_enter_the_snapshot_with_their_progress(tmp_path: Path) -> None:
    settler, state = _settler(tmp_path)
    settler.read(4)
    settler.accepted([_row(1, "a", 1), _row(2, "b", 2)])
    settler.refused(
        [
            Refusal(_row(3, "c", 3), "rejected", 400, "bad"),
            Refusal(_row(4, "d", 4), "delivery", 503, "down"),
        ]
    )
    settler.unchanged("f.csv", [5])
    keys, prints = state.load_snapshot()
    assert len(keys) == 2 == len(_snapshot(tmp_path))
    expected = dict(CustomerKeys([]).of_rows([_row(1, "a", 1), _row(2, "b", 2)]))
    assert dict(zip(keys.tolist(), prints.tolist(), strict=True)) == expected
    settled = state.settled("/abs/f.csv", "fp")
    assert settled.ranges == [(1, 3), (5, 5)] and settled.retry == [(4, 4)]
    report = settler.report
    assert (report.rows_accepted, report.rows_rejected, report.rows_failed) == (2, 1, 1)
    assert report.rows_unchanged == 1
    state.close()


def test_a_later_accepted_row_of_a_customer_replaces_its_entry(tmp_path: Path) -> None:
    settler, state = _settler(tmp_path)
    settler.accepted([_row(1, "a", 1)])
    settler.accepted([_row(2, "a", 2)])
    ((_, fingerprint),) = _snapshot(tmp_path)
    assert fingerprint == CustomerKeys([]).of_rows([_row(2, "a", 2)])[0][1]
    state.close()


def test_a_failed_state_write_keeps_the_count_and_moves_no_snapshot(tmp_path: Path) -> None:
    settler, state = _settler(tmp_path)
    state.close()  # every later write fails
    with pytest.raises(SettleFault):
        settler.accepted([_row(1, "a", 1)])
    assert settler.report.rows_accepted == 1  # the API took it, whatever our records say
    assert _snapshot(tmp_path) == []


def test_a_chunk_read_settles_what_needs_no_request(tmp_path: Path) -> None:
    settler, state = _settler(tmp_path)
    invalid = InvalidRow("f.csv", 3, "c", "points: 'x' is not an integer", {"points": "x"})
    work = Work(5, (2, 1), [invalid], [], ["a warning"], "f.csv", [4])
    settler.work_read(work)
    settler.work_read(Work(0, (0, 0), [], [], ["a warning"]))  # said once in the report
    report = settler.report
    assert (report.rows_read, report.rows_skipped, report.rows_skipped_dead_lettered) == (5, 2, 1)
    assert (report.rows_invalid, report.rows_unchanged) == (1, 1)
    assert report.warnings == ["a warning"]
    assert dict(settler.reasons) and state.settled("/abs/f.csv", "fp").ranges == [(3, 4)]
    state.close()


def test_an_answer_is_counted_whole_when_saving_its_first_half_fails(tmp_path: Path) -> None:
    settler, state = _settler(tmp_path)
    state.close()  # every progress write fails
    result = SendResult([_row(1, "a", 1)], [Refusal(_row(2, "b", 2), "rejected", 400, "bad")])
    with pytest.raises(SettleFault):
        settler.answered(result)
    report = settler.report
    # Both halves are counted, and the refusal reached the dead-letter file.
    assert (report.rows_accepted, report.rows_rejected) == (1, 1)
    lines = (tmp_path / "dead.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["row"] for line in lines] == [2]


def test_the_requests_side_of_the_report_comes_from_the_delivery_stats() -> None:
    stats = DeliveryStats(requests=7, retries=2, http_429=1, outage_seconds=1.26)
    stats.by_status.update({503: 1, 200: 5, 429: 1})
    report = Report()
    record_delivery(report, stats)
    assert (report.requests, report.retries, report.http_429) == (7, 2, 1)
    assert list(report.status_counts.items()) == [("200", 5), ("429", 1), ("503", 1)]
    assert report.outage_seconds == 1.3 and report.rate_settled_per_minute is None
