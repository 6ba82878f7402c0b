"""The dead-letter file: format, mode 0600, durable appends, reading back."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from importer.outputs.deadletter import (
    DeadLetter,
    DeadLetterError,
    DeadLetterFault,
    DeadLetterWriter,
    read_dead_letter,
)

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


def test_lines_hold_every_documented_field_and_mode_is_0600(tmp_path: Path) -> None:
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
        "run_id": None,
        "fingerprint": None,
    }


def test_append_keeps_earlier_lines_and_a_fresh_file_keeps_the_old_one(tmp_path: Path) -> None:
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
    (kept,) = tmp_path.glob("dead.previous-*.jsonl")  # never destroyed
    assert [d.row for d in read_dead_letter(kept)] == [3, 3]


def test_reading_a_line_that_is_not_a_dead_letter_names_it(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    path.write_text(LETTER.to_json().decode() + '\n{"row": 1}\n')
    with pytest.raises(DeadLetterError, match=r"dead.jsonl:2"):
        list(read_dead_letter(path))


def test_a_torn_line_is_read_past_with_a_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "dead.jsonl"
    whole = LETTER.to_json().decode()
    path.write_text(f"{whole}\n{whole[:40]}\n{whole}\n")
    assert len(list(read_dead_letter(path))) == 2
    assert "dead.jsonl:2: a torn line" in caplog.text


def test_a_torn_tail_is_set_aside_on_open_and_appends_start_on_a_whole_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "dead.jsonl"
    whole = LETTER.to_json().decode()
    path.write_text(f"{whole}\n{whole[:40]}")
    with DeadLetterWriter(path, append=True) as writer:
        writer.write(LETTER)
    assert path.read_text() == f"{whole}\n{whole}\n"
    (aside,) = tmp_path.glob("dead.jsonl.torn-*")
    assert aside.read_text() == whole[:40]
    assert stat.S_IMODE(aside.stat().st_mode) == 0o600
    assert "line 2 was cut short" in caplog.text


def test_a_failed_write_leaves_no_torn_line(tmp_path: Path) -> None:
    import resource
    import signal

    path = tmp_path / "dead.jsonl"
    whole = LETTER.to_json() + b"\n"
    path.write_bytes(whole)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    writer = DeadLetterWriter(path, append=True)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(whole) * 2 + 10, hard))
        for _ in range(3):
            writer.write(LETTER)
        with pytest.raises(DeadLetterFault, match=r"dead\.jsonl"):
            writer.flush()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
        writer.close()
    assert path.read_bytes() == whole


def test_a_symlinked_dead_letter_path_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "dead.jsonl"
    link.symlink_to(target)
    for append in (False, True):
        with pytest.raises(DeadLetterError, match="symbolic link"):
            DeadLetterWriter(link, append=append)
    assert target.read_text() == "keep me"
