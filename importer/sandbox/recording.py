"""The sandbox's JSON-lines files: arrivals, accepted records and schema violations."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

import orjson

from importer import moengage
from importer.sandbox.bodies import is_event_element


class JsonLines:
    """An append-only JSON-lines file, flushed after each write so readers see it at once."""

    def __init__(self, path: Path | None) -> None:
        self._file: IO[bytes] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Accepted records hold personal data: owner-only, and never through a link.
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
            self._file = os.fdopen(os.open(path, flags, 0o600), "ab")

    def write(self, items: list[dict[str, Any]]) -> None:
        if self._file is None or not items:
            return
        self._file.write(b"".join(orjson.dumps(item) + b"\n" for item in items))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Complete lines only: a line still being written is left for the next read."""
    if not path.exists():
        return []
    return [
        orjson.loads(line)
        for line in path.read_bytes().splitlines(keepends=True)
        if line.endswith(b"\n")
    ]


def record_line(element: dict[str, Any], endpoint: str, now: float) -> dict[str, Any]:
    if is_event_element(element):  # one line per event element, its actions in order
        return {
            "received_at": now,
            "endpoint": endpoint,
            "type": moengage.EVENT_TYPE,
            "customer_id": element.get("customer_id"),
            "actions": element[moengage.ACTIONS_KEY],
        }
    return {
        "received_at": now,
        "endpoint": endpoint,
        "customer_id": element.get("customer_id"),
        "attributes": element["attributes"],
        "update_existing_only": element.get("update_existing_only", False),
    }


def write_private(path: Path, body: bytes) -> None:
    """A whole file, owner-only, never through a link (the profiles dump holds personal data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    with os.fdopen(os.open(path, flags, 0o600), "wb") as file:
        file.write(body)
