"""The delivered ids and delete times kept beside the snapshot (sync.delete_absent), and
the counts of deletes and unsets in the summary, metrics and notification."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from importer.outputs.metrics import Sample, render
from importer.outputs.notify import payload
from importer.outputs.report import Report, format_summary
from importer.run.sync import keyed_ids
from importer.state import StateStore
from importer.state.customer_store import CustomerIds

SCOPE = "scope-a"


def _deliver(store: StateStore, ids: list[str], first_row: int = 1) -> list[tuple[int, str]]:
    pairs = keyed_ids(ids)
    rows = range(first_row, first_row + len(ids))
    snapshot = [(key, 7) for key, _ in pairs]
    store.mark_settled("users.csv", "fp", rows, snapshot=snapshot, delivered=pairs)
    return pairs


def test_ids_are_kept_with_the_snapshot_and_leave_it_on_delete(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path, SCOPE)
    pairs = _deliver(store, ["c1", "c2", "c3"])
    keys = np.array([key for key, _ in pairs], dtype=np.int64)
    ids = CustomerIds(path, SCOPE)
    assert ids.ids_of(keys) == dict(pairs)
    assert CustomerIds(path, "another scope").ids_of(keys) == {}
    ids.forget([pairs[0][0]])
    left, _ = store.load_snapshot()
    assert sorted(left.tolist()) == sorted(key for key, _ in pairs[1:])
    assert ids.ids_of(keys) == dict(pairs[1:])
    ids.close()
    store.close()


def test_no_ids_without_a_snapshot_entry(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path, SCOPE)
    pairs = keyed_ids(["c1"])
    store.mark_settled("users.csv", "fp", [1], delivered=pairs)  # no snapshot: nothing kept
    assert CustomerIds(path, SCOPE).ids_of(np.array([pairs[0][0]])) == {}
    store.close()


def test_a_customer_back_inside_the_window_is_dropped_from_the_snapshot_after_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path, SCOPE)
    pairs = _deliver(store, ["back", "gone"])
    ids = CustomerIds(path, SCOPE)
    ids.forget([key for key, _ in pairs])  # both deleted
    _deliver(store, ["back"], first_row=10)  # sent again inside the window
    assert ids.expire(window_seconds=3600) == 0  # still inside: nothing to do yet
    assert len(store.load_snapshot()[0]) == 1
    assert ids.expire(window_seconds=0) == 1  # past it: "back" is sent in full again
    assert len(store.load_snapshot()[0]) == 0
    assert ids.expire(window_seconds=0) == 0  # the delete times are gone with it
    ids.close()
    store.close()


def test_a_dry_run_reads_without_creating_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    ids = CustomerIds(path, SCOPE, read_only=True)
    assert ids.ids_of(np.array([1, 2], dtype=np.int64)) == {}
    ids.close()
    assert not path.exists()


def test_the_summary_metrics_and_notification_carry_the_new_counts() -> None:
    report = Report(rows_read=5, rows_accepted=5, customers_deleted=3, deletes_failed=1)
    report.unsets_sent = 2
    report.finish_exit_code(interrupted=False)
    assert report.exit_code == 1  # a failed delete is in the dead-letter file
    summary = format_summary(report)
    assert "unsets                   2" in summary and "deleted                  3" in summary
    assert "deletes failed           1" in summary
    sample = Sample(report, 5, False, 0.0, 1.0, 0.0, None)
    text = render("nightly", sample)
    assert 'moe_import_customers_deleted_total{job_name="nightly",outcome="deleted"} 3.0' in text
    assert 'moe_import_customers_deleted_total{job_name="nightly",outcome="failed"} 1.0' in text
    assert 'moe_import_unsets_sent_total{job_name="nightly"} 2.0' in text
    counts = payload(report, "nightly")["counts"]
    assert (counts["customers_deleted"], counts["deletes_failed"], counts["unsets_sent"]) == (
        3,
        1,
        2,
    )
