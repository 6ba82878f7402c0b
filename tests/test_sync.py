"""SyncDiff: which rows a chunk sends against the snapshot and what this run sent before."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

import numpy as np
import orjson
import pytest

from importer.rows import Row, ValidRows
from importer.run.sync import CustomerKeys, SyncDiff, _Overlay, fingerprints


class _NoRecords:
    def record(self, row: int) -> dict[str, object]:
        return {}


def _rows(*pairs: tuple[str, int], start: int = 1) -> ValidRows:
    encoded = [orjson.dumps({"customer_id": c, "attributes": {"p": p}}) for c, p in pairs]
    numbers = list(range(start, start + len(pairs)))
    return ValidRows("f.csv", numbers, [c for c, _ in pairs], encoded, _NoRecords())


def _snapshot_of(*pairs: tuple[str, int]) -> tuple[np.ndarray, np.ndarray]:
    rows = _rows(*pairs)
    keys, _ = CustomerKeys([]).hashes(rows.customer_ids, rows.encoded)
    prints = fingerprints(rows.encoded)
    order = np.argsort(keys)
    return keys[order], prints[order]


def _diff(*snapshot: tuple[str, int], full: bool = False) -> SyncDiff:
    return SyncDiff(*_snapshot_of(*snapshot), CustomerKeys([]), full)


def _sent(rows: Sequence[Row]) -> list[int]:
    return [r.row for r in rows]


def test_unchanged_rows_are_not_sent_and_new_or_changed_ones_are() -> None:
    diff = _diff(("a", 1), ("b", 2), ("c", 3))
    result = diff.compare(_rows(("a", 1), ("b", 20), ("d", 4)))
    assert _sent(result.send) == [2, 3] and result.unchanged == [1]
    assert diff.absent() == 1  # c


def test_a_customer_twice_compares_with_its_earlier_row_in_and_across_chunks() -> None:
    diff = _diff(("a", 1))
    # a changes, then goes back: both differ from what MoEngage holds just before.
    first = diff.compare(_rows(("a", 2), ("a", 2), ("a", 1)))
    assert _sent(first.send) == [1, 3] and first.unchanged == [2]
    second = diff.compare(_rows(("a", 1), ("a", 5), start=4))
    assert _sent(second.send) == [5] and second.unchanged == [4]
    third = diff.compare(_rows(("a", 5), start=6))
    assert third.unchanged == [6]


def test_full_sends_every_row_and_still_notes_who_was_seen() -> None:
    diff = _diff(("a", 1), ("b", 2), full=True)
    result = diff.compare(_rows(("a", 1)))
    assert _sent(result.send) == [1] and result.unchanged == []
    assert diff.absent() == 1


def test_identity_resolution_keys_by_the_identifier_the_element_carries() -> None:
    keys = CustomerKeys(["moe_mobile", "email"])
    elements = [
        orjson.dumps({"attributes": {"email": "a@x", "moe_mobile": "+1"}}),
        orjson.dumps({"attributes": {"email": "a@x"}}),
        orjson.dumps({"attributes": {"name": "n"}}),
    ]
    texts = keys.texts([None, None, None], elements)
    assert texts[0] is not None and "moe_mobile" in texts[0] and "+1" in texts[0]
    assert texts[1] is not None and "email" in texts[1]
    assert texts[2] is None
    hashes, known = keys.hashes([None, None, None], elements)
    assert known.tolist() == [True, True, False] and hashes[0] != hashes[1]


@pytest.mark.subprocess
def test_hashes_are_the_same_in_every_process() -> None:
    # A snapshot written by one run is read by the next: no per-process hash seed.
    code = (
        "from importer.run.sync import CustomerKeys, fingerprints;"
        "print(int(fingerprints([b'{}'])[0]), int(CustomerKeys([]).hashes(['u1'], [b''])[0][0]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    keys, _ = CustomerKeys([]).hashes(["u1"], [b""])
    assert other.stdout.split() == [str(int(fingerprints([b"{}"])[0])), str(int(keys[0]))]


def test_the_overlay_keeps_the_newest_value_through_merges() -> None:
    overlay = _Overlay()
    for value in range(1, 40):
        overlay.put(
            np.array([7, 100 + value], dtype=np.int64), np.array([value, 0], dtype=np.int64)
        )
    values, found = overlay.get(np.array([7, 8], dtype=np.int64))
    assert found.tolist() == [True, False] and int(values[0]) == 39


def test_merged_rows_record_their_last_part() -> None:
    keys = CustomerKeys([])
    last = orjson.dumps({"customer_id": "a", "attributes": {"p": 2}})
    merged = Row("f.csv", 1, "a", b'{"merged":1}', _NoRecords(), ((1, b"{}"), (2, last)))
    ((_, fingerprint),) = keys.of_rows([merged])
    assert fingerprint == int(fingerprints([last])[0])
