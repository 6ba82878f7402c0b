"""The dead-letter file: one JSON line per row that was not accepted, created with mode 0600."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

Stage = Literal["validation", "rejected", "delivery"]
STAGES: tuple[Stage, ...] = ("validation", "rejected", "delivery")


class DeadLetterError(Exception):
    """A dead-letter file that cannot be read back (replay)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source: str
    row: int
    stage: Stage
    error: str
    status: int | None
    customer_id: str | None
    record: dict[str, Any]
    payload: dict[str, Any] | None
    line: int | None = None  # CSV: the physical line where the record starts
    lines: tuple[int, int] | None = None  # a malformed CSV record: its first and last line

    def to_json(self) -> bytes:
        fields: dict[str, Any] = {"source": self.source, "row": self.row}
        if self.line is not None:
            fields["line"] = self.line
        if self.lines is not None:
            fields["lines"] = list(self.lines)
        return orjson.dumps(
            {
                **fields,
                "stage": self.stage,
                "error": self.error,
                "status": self.status,
                "customer_id": self.customer_id,
                "record": self.record,
                "payload": self.payload,
            },
            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
            default=str,
        )


class DeadLetterWriter:
    """Appends lines; `flush()` makes them durable before their rows count as settled."""

    def __init__(self, path: Path, *, append: bool) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        # 0600: the file holds personal data. chmod too, in case it already existed.
        fd = os.open(path, flags, 0o600)
        os.fchmod(fd, 0o600)
        self._file = os.fdopen(fd, "ab")
        self._unflushed = 0
        self.written = 0

    def write(self, letter: DeadLetter) -> None:
        self._file.write(letter.to_json() + b"\n")
        self._unflushed += 1
        self.written += 1

    def flush(self) -> None:
        if self._unflushed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._unflushed = 0

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()

    def __enter__(self) -> DeadLetterWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_dead_letter(path: Path) -> Iterator[DeadLetter]:
    """Lines of a dead-letter file; a malformed line is an error naming its line number."""
    try:
        handle = path.open("rb")
    except OSError as error:
        raise DeadLetterError(f"cannot read dead-letter file {path}: {error.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
                stage = data["stage"]
                if stage not in STAGES:
                    raise ValueError(f"unknown stage {stage!r}")
                yield DeadLetter(
                    source=str(data["source"]),
                    row=int(data["row"]),
                    stage=stage,
                    error=str(data.get("error", "")),
                    status=data.get("status"),
                    customer_id=data.get("customer_id"),
                    record=data.get("record") or {},
                    payload=data.get("payload"),
                    line=data.get("line"),
                    lines=tuple(data["lines"]) if data.get("lines") else None,
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise DeadLetterError(
                    f"{path}:{number}: not a dead-letter line ({error})"
                ) from None
