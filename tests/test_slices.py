"""Slices in process: the K/N rule, the stable hash, the pre-mapping filter, output paths,
the other-N check, and the merged report of `--workers`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from importer import load_job
from importer.config import ConfigError, SourceConfig, with_overrides
from importer.config.slicing import parse_slice
from importer.mapping.identity import sent_ids
from importer.outputs.merged import merge_reports, worst_exit
from importer.rows import Chunk, Malformed
from importer.run.slices import check_slicing, in_slice, slice_filter, slice_path, slots
from importer.run.workers import child_argv
from importer.sources import iter_chunks
from tests.support import job_dict, write_job


def test_k_counts_from_zero_to_n_minus_one() -> None:
    assert parse_slice("0/4") == (0, 4) and parse_slice(" 3 / 4 ") == (3, 4)
    for bad, said in (("4/4", "0 to N-1"), ("1/0", "N must be"), ("a/b", "not K/N")):
        with pytest.raises(ValueError, match=said):
            parse_slice(bad)


def test_the_hash_is_stable_across_processes_and_versions() -> None:
    # Pinned: a change of the hash would move customers between slices, so that the
    # saved snapshots and delete lists of every sliced job hold the wrong customers.
    ids = pa.array(["u00001", "u00002", "c0001", "123", "ünïcode", None])
    assert slots(ids, 4).tolist() == [2, 0, 2, 3, 3, 0]
    assert slots(ids, 7).tolist() == [0, 1, 0, 3, 0, 0]


def test_an_id_is_hashed_as_sent_whatever_its_column_type() -> None:
    as_int = sent_ids(pd.Series([123, 4567], dtype="int64"))
    as_text = sent_ids(pd.Series(["123", "4567"]))
    as_float = sent_ids(pd.Series([123.0, 4567.0]))
    assert slots(as_int, 5).tolist() == slots(as_text, 5).tolist() == slots(as_float, 5).tolist()
    padded = sent_ids(pd.Series([" 123 "]), strip=True)
    assert slots(padded, 5).tolist() == slots(as_text, 5).tolist()[:1]


def _chunk() -> Chunk:
    frame = pd.DataFrame(
        {"id": [f"c{i}" for i in range(200)] + [None], "x": list(range(201))},
        index=pd.RangeIndex(1, 202),
    )
    bad = Malformed(202, "a,b,c,d", "too many fields", 203, 203)
    return Chunk("f.csv", frame, malformed=[bad])


def test_every_row_is_in_exactly_one_slice() -> None:
    parts = [in_slice(_chunk(), "id", False, k, 3) for k in range(3)]
    rows = [set(part.frame.index) for part in parts]
    assert set().union(*rows) == set(range(1, 202))
    assert sum(len(r) for r in rows) == 201
    assert 201 in rows[0]  # no id: slice 0's, where it is dead-lettered once
    assert [len(part.malformed) for part in parts] == [1, 0, 0]


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_the_reader_keeps_a_slices_rows_with_their_numbers_and_lines(
    tmp_path: Path, kind: str
) -> None:
    """Filtered as read: each slice's chunks hold its own rows under the file's row numbers
    (and, for CSV, their lines), malformed records are slice 0's, and every row is counted
    once: kept in one slice, in `other_rows` in the others."""
    ids = [f"c{i % 37}" if i % 11 else None for i in range(1, 301)]
    frame = pd.DataFrame({"id": ids, "x": [str(i) for i in range(1, 301)]})
    if kind == "csv":
        lines = ["id,x"] + [f"{i or ''},{x}" for i, x in zip(ids, frame["x"], strict=True)]
        lines.insert(51, "c1,too,many,fields")  # data row 51, on line 52
        path = tmp_path / "users.csv"
        path.write_text("\n".join(lines) + "\n")
        total = 301
    else:
        path = tmp_path / "users.parquet"
        frame.to_parquet(path, row_group_size=70)
        total = 300
    source = SourceConfig(chunk_rows=40)
    seen: list[int] = []
    for k in range(3):
        chunks = list(iter_chunks(path, source, ["id", "x"], 1, slice_filter("id", False, k, 3)))
        kept = sum(len(c.frame) + len(c.malformed) for c in chunks)
        assert kept + sum(c.other_rows for c in chunks) == total
        for chunk in chunks:
            mine = slots(sent_ids(chunk.frame["id"]), 3)
            assert (mine == k).all()
            seen += [*chunk.frame.index, *(m.row for m in chunk.malformed)]
            assert not chunk.malformed or k == 0
            for row in chunk.frame.index:
                x = int(chunk.frame.loc[row, "x"])
                assert row == (x if kind == "parquet" or x < 51 else x + 1)
                if kind == "csv":
                    assert chunk.line(row) == row + 1
    assert sorted(seen) == list(range(1, total + 1))


def test_slice_paths_work_for_local_paths_and_object_storage() -> None:
    assert slice_path(Path("out/state.db"), 2, 4) == Path("out/state.slice-2-of-4.db")
    assert slice_path(Path("/x/report.dry-run.json"), 0, 2) == Path(
        "/x/report.dry-run.slice-0-of-2.json"
    )
    assert (
        slice_path("s3://b/k/dead_letter.jsonl", 1, 3) == "s3://b/k/dead_letter.slice-1-of-3.jsonl"
    )
    assert slice_path(Path("out/state"), 1, 2) == Path("out/state.slice-1-of-2")


def _job(tmp_path: Path, mapping: dict[str, Any] | None = None) -> Any:
    source = tmp_path / "u.csv"
    source.write_text("user_id,name\nu1,a\n")
    job = job_dict(tmp_path, "https://api.invalid", source, mapping or {"customer_id": "user_id"})
    return load_job(write_job(tmp_path, job))


def test_identity_resolution_jobs_refuse_a_slice(tmp_path: Path) -> None:
    job = _job(tmp_path)
    sliced = with_overrides(job, {"slice": "1/2"})
    assert sliced.slice_parts() == (1, 2)
    ir = _job(tmp_path, {"identifiers": ["u_em"], "attributes": {"u_em": "name"}})
    with pytest.raises(ConfigError, match="Identity Resolution"):
        with_overrides(ir, {"slice": "1/2"})


def test_a_newer_state_of_another_n_is_refused(tmp_path: Path) -> None:
    job = _job(tmp_path)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    other = out / "state.slice-0-of-4.db"
    other.write_bytes(b"")
    sliced = with_overrides(job, {"slice": "0/2"})
    sliced = with_overrides(sliced, {"output": {"state": str(out / "state.slice-0-of-2.db")}})
    with pytest.raises(ConfigError, match="made with 4 slice"):
        check_slicing(sliced, fresh=False)
    with pytest.raises(ConfigError, match="made with 4 slice"):
        check_slicing(job, fresh=False)  # unsliced (N = 1) after slices of 4
    check_slicing(sliced, fresh=True)
    own = out / "state.slice-0-of-2.db"
    own.write_bytes(b"")
    os.utime(other, (1, 1))  # older than this N's own state: this N is the current one
    check_slicing(sliced, fresh=False)


def test_the_merged_report_sums_counts_and_takes_the_worst_exit_code() -> None:
    one = {"rows_read": 5, "rows_accepted": 4, "rows_invalid": 1, "elapsed_seconds": 2.0,
           "updates_per_minute": 120.0, "invalid_reasons": {"bad": 1}, "dead_letter": "d0",
           "warnings": ["w"]}  # fmt: skip
    two = {"rows_read": 3, "rows_accepted": 3, "elapsed_seconds": 1.0, "invalid_reasons": {},
           "dead_letter": "d1", "warnings": ["w"], "other_slices_rows": 5}  # fmt: skip
    merged = merge_reports([("0/2", 1, one), ("1/2", 0, two)], 2.0, "run")
    assert (merged.rows_read, merged.rows_accepted, merged.rows_invalid) == (8, 7, 1)
    assert merged.exit_code == 1 and merged.dead_letter == "d0"
    assert merged.invalid_reasons == {"bad": 1} and merged.warnings == ["w"]
    assert merged.other_slices_rows == 0
    assert worst_exit([0, 1, 4]) == 1 and worst_exit([1, 3, 130]) == 3
    assert worst_exit([130, 1]) == 130 and worst_exit([0, -9]) == 3


def test_a_slice_gets_the_parents_command_line_less_its_own_options() -> None:
    argv = child_argv(["run", "j.yaml", "--workers", "2", "--notify=http://x", "--fresh"], 1, 2)
    assert argv == ["run", "j.yaml", "--fresh", "--slice", "1/2", "--no-progress"]
