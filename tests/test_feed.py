"""The feed: batches with each customer once, settled rows skipped, the snapshot compared."""

from __future__ import annotations

from pathlib import Path

from importer import sources
from importer.config import JobConfig, load_job
from importer.run.feed import Batcher, FileFeed
from importer.run.preflight import job_scope, prepare
from importer.run.sync import CustomerKeys
from importer.state import StateStore
from tests.support import job_dict, write_job

MAPPING = {"customer_id": "user_id", "attributes": {"p": {"column": "p", "type": "integer"}}}


def _job(tmp_path: Path, lines: list[str], **sections: object) -> JobConfig:
    source = tmp_path / "users.csv"
    source.write_text("user_id,p\n" + "\n".join(lines) + "\n")
    settings = job_dict(tmp_path, "http://127.0.0.1:9", source, MAPPING, **sections)
    settings["rate_limit"] = {"updates": 40, "period_seconds": 1}  # 2 users a request
    return load_job(write_job(tmp_path, settings))


def test_batches_hold_a_customer_once_and_keep_file_order(tmp_path: Path) -> None:
    job = _job(tmp_path, ["a,1", "b,x", "a,2", "c,3", "a,4"])
    paths, mapper = prepare(job)
    (work,) = list(FileFeed(job, paths, mapper).work(None, Batcher(job, mapper.max_element_bytes)))
    assert work.rows_read == 5 and [r.row for r in work.invalid] == [2]
    for batch in work.batches:
        assert len({row.customer_id for row in batch.rows}) == len(batch.rows) <= 2
        assert list(batch.encoded) == [row.encoded for row in batch.rows]
    sent = [number for batch in work.batches for row in batch.rows for number in row.numbers]
    assert sorted(sent) == [1, 3, 4, 5]


def test_rows_an_earlier_run_settled_are_skipped(tmp_path: Path) -> None:
    job = _job(tmp_path, ["a,1", "b,2", "c,3", "d,4"])
    paths, mapper = prepare(job)
    state = StateStore(tmp_path / "state.db", job_scope(job))
    feed = FileFeed(job, paths, mapper)
    key = paths[0].state_key
    state.mark_settled(key, sources.fingerprint(paths[0]), [1, 2, 4])
    works = list(feed.work(state, Batcher(job, mapper.max_element_bytes)))
    assert sum(w.rows_read for w in works) == 4
    assert sum(w.rows_skipped[0] for w in works) == 3
    assert [r.row for w in works for b in w.batches for r in b.rows] == [3]
    state.close()


def test_changed_mode_leaves_out_what_the_snapshot_holds(tmp_path: Path) -> None:
    job = _job(tmp_path, ["a,1", "b,2"], sync={"mode": "changed"})
    paths, mapper = prepare(job)
    state = StateStore(job.output.state, job_scope(job))
    feed = FileFeed(job, paths, mapper)
    (work,) = list(feed.work(state, Batcher(job, mapper.max_element_bytes)))
    rows = [r for b in work.batches for r in b.rows]
    assert [r.row for r in rows] == [1, 2] and work.unchanged == []
    state.mark_settled("elsewhere", "fp", [1], snapshot=CustomerKeys([]).of_rows(rows[:1]))
    (again,) = list(
        FileFeed(job, paths, mapper).work(state, Batcher(job, mapper.max_element_bytes))
    )
    assert [r.row for b in again.batches for r in b.rows] == [2] and again.unchanged == [1]
    state.close()
