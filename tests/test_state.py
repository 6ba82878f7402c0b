"""Progress store and run lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from importer.state import (
    RunLock,
    ScopedProgress,
    SettledRows,
    StateError,
    StateStore,
    merge_ranges,
    to_ranges,
)


def test_ranges_merge_out_of_order_rows() -> None:
    assert to_ranges([5, 1, 2, 3, 7, 6, 10]) == [(1, 3), (5, 7), (10, 10)]
    assert merge_ranges([(5, 7), (1, 3), (4, 4), (9, 12), (10, 11)]) == [(1, 7), (9, 12)]


def test_settled_rows_persist_and_prefix_is_contiguous(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.mark_settled("a.csv", "fp1", [3, 1, 2])
    store.mark_settled("a.csv", "fp1", [6, 5])
    store.close()
    again = StateStore(tmp_path / "state.db")
    settled = again.settled("a.csv", "fp1")
    assert settled.ranges == [(1, 3), (5, 6)]
    assert settled.contiguous_through == 3
    assert settled.count == 5
    assert again.has_progress()
    again.compact()
    assert again.settled("a.csv", "fp1").ranges == [(1, 3), (5, 6)]


def test_changed_file_does_not_inherit_progress(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.mark_settled("a.csv", "old", [1, 2])
    assert store.settled("a.csv", "new").ranges == []
    assert store.changed_sources("a.csv", "new")
    assert not store.changed_sources("a.csv", "old")


def test_reset_forgets_everything(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.mark_settled("a.csv", "fp", [1])
    store.reset()
    assert not store.has_progress()
    assert store.settled("a.csv", "fp") == SettledRows([])


@pytest.mark.subprocess
def test_second_run_cannot_take_the_lock_and_learns_who_holds_it(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; from pathlib import Path; from importer.state import RunLock;"
            f"RunLock(Path({str(state)!r})).acquire(); print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StateError, match=rf"pid.*{holder.pid}"):
            RunLock(state).acquire()
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the lock with the dead process: no stale lock after kill -9.
    lock = RunLock(state)
    lock.acquire()
    lock.release()


def test_a_state_file_from_before_dead_letter_tracking_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE sources (id INTEGER PRIMARY KEY, path TEXT NOT NULL,"
        " fingerprint TEXT NOT NULL, UNIQUE (path, fingerprint));"
        "CREATE TABLE settled (source_id INTEGER NOT NULL, first_row INTEGER NOT NULL,"
        " last_row INTEGER NOT NULL);"
        "INSERT INTO sources VALUES (1, 'a.csv', 'fp');"
        "INSERT INTO settled VALUES (1, 1, 5);"
    )
    old.commit()
    old.close()
    store = StateStore(path)
    store.mark_settled("a.csv", "fp", [6], dead_lettered=True)
    settled = store.settled("a.csv", "fp")
    assert settled.ranges == [(1, 6)] and settled.dead == [(6, 6)]


def test_delivery_failures_are_not_settled_until_accepted(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db", scope="target-a")
    store.mark_settled("a.csv", "fp", [1, 2, 3])
    store.mark_settled("a.csv", "fp", [4, 5], retry_later=True)
    store.mark_settled("a.csv", "fp", [6], dead_lettered=True)
    settled = store.settled("a.csv", "fp")
    assert settled.ranges == [(1, 3), (6, 6)] and settled.dead == [(6, 6)]
    assert settled.retry == [(4, 5)]
    store.mark_settled("a.csv", "fp", [4])  # a rerun got it through
    again = store.settled("a.csv", "fp")
    assert again.ranges == [(1, 4), (6, 6)] and again.retry == [(5, 5)]
    assert store.accepted("a.csv", "fp") == [(1, 4)]


def test_progress_is_kept_per_scope(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    rehearsal = StateStore(path, scope="sandbox")
    rehearsal.mark_settled("/data/a.csv", "fp", [1, 2])
    rehearsal.close()
    real = StateStore(path, scope="production")
    assert real.settled("/data/a.csv", "fp").ranges == []
    assert real.other_scope("/data/a.csv") and not real.other_scope("/data/b.csv")


def test_a_scoped_view_shares_the_connection_but_not_the_scope(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db", scope="job")
    store.mark_settled("/a.csv", "fp", [1, 2], snapshot=[(10, 20)])
    view = store.with_scope("replay")
    assert isinstance(view, ScopedProgress) and not isinstance(view, StateStore)
    assert view.database is store.database and view.path == store.path
    assert view.settled("/a.csv", "fp").ranges == [] and not view.scope_has_progress()
    view.mark_settled("/a.csv", "fp", [3], snapshot=[(11, 21)])
    assert store.settled("/a.csv", "fp").ranges == [(1, 2)]
    assert view.settled("/a.csv", "fp").ranges == [(3, 3)]
    # Each scope keeps its own snapshot (the view does not borrow the store's snapshot id).
    assert store.load_snapshot()[0].tolist() == [10]
    assert view.load_snapshot()[0].tolist() == [11]
    view.forget_scope()
    assert store.settled("/a.csv", "fp").ranges == [(1, 2)]
    store.close()


def test_subtract_ranges() -> None:
    from importer.state import subtract_ranges

    assert subtract_ranges([(1, 10)], [(3, 4), (6, 6)]) == [(1, 2), (5, 5), (7, 10)]
    assert subtract_ranges([(1, 3), (5, 9)], [(1, 3), (8, 20)]) == [(5, 7)]


@pytest.mark.parametrize("content", [b"", b"hello", b"SQLite format 3\x00" + b"\x00" * 200])
def test_a_file_that_is_not_a_state_database_is_refused_and_fresh_sets_it_aside(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(content)
    with pytest.raises(StateError, match="--fresh"):
        StateStore(path)
    store = StateStore(path, fresh=True)
    assert not store.has_progress()
    (aside,) = tmp_path.glob("state.db.unusable-*")
    assert aside.read_bytes() == content


def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "state.db"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE invoices (id INTEGER)")
    other.commit()
    other.close()
    with pytest.raises(StateError, match="not one of moe-import's"):
        StateStore(path)
