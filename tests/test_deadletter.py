"""The dead-letter file: format, mode 0600, durable appends, reading back."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from importer.deadletter import DeadLetter, DeadLetterError, DeadLetterWriter, read_dead_letter

LETTER = DeadLetter(
    "a.csv",
    3,
    "delivery",
    "503 after 6 attempts",
    503,
    "00123",
    {"user_id": "00123", "points": None},
    {"type": "customer", "customer_id": "00123"},
)


def test_lines_hold_every_contract_field_and_mode_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "dl" / "dead.jsonl"
    with DeadLetterWriter(path, append=False) as writer:
        writer.write(LETTER)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (line,) = path.read_text().splitlines()
    assert json.loads(line) == {
        "source": "a.csv",
        "row": 3,
        "stage": "delivery",
        "error": "503 after 6 attempts",
        "status": 503,
        "customer_id": "00123",
        "record": {"user_id": "00123", "points": None},
        "payload": {"type": "customer", "customer_id": "00123"},
    }


def test_append_keeps_earlier_lines_and_truncate_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    path.write_text("")
    path.chmod(0o644)
    for append in (True, True):
        with DeadLetterWriter(path, append=append) as writer:
            writer.write(LETTER)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # tightened even if it existed
    assert [d.row for d in read_dead_letter(path)] == [3, 3]
    with DeadLetterWriter(path, append=False) as writer:
        pass
    assert list(read_dead_letter(path)) == []


def test_reading_a_bad_line_names_it(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    path.write_text(LETTER.to_json().decode() + "\nnot json\n")
    with pytest.raises(DeadLetterError, match=r"dead.jsonl:2"):
        list(read_dead_letter(path))
