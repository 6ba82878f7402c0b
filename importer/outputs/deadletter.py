"""The dead-letter file: one JSON line per row that was not accepted, created with mode 0600.

A line is either whole or absent: a write that fails (disk full) is cut back to the last
whole line, and a tail torn by a crash is moved aside to `X.torn-<stamp>` on the next open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from importer.errors import RunAborted, UsageError

# delete: a Delete User request that failed (sync.delete_absent); replay sends it again.
# uncertain: events whose answer was lost (delivery.on_lost_answer: dead_letter).
Stage = Literal["validation", "rejected", "delivery", "delete", "uncertain"]
STAGES: tuple[Stage, ...] = ("validation", "rejected", "delivery", "delete", "uncertain")


log = logging.getLogger("importer")


class DeadLetterError(UsageError):
    """A dead-letter file that cannot be read back (replay), or an output path refused."""


class DeadLetterFault(RunAborted):
    """Writing the dead-letter file failed mid-run (disk full, file gone): exit 3."""


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
    run_id: str | None = None  # the run that wrote the line
    fingerprint: str | None = None  # the source's, as that run read it
    # Whose line it is: the job's identity and its target (url, workspace_id, project_code,
    # endpoint). None on lines written before lines carried them: replay takes them as its own.
    job: str | None = None
    target: dict[str, Any] | None = None

    def to_json(self, origin: dict[str, Any] | None = None) -> bytes:
        """The line; `origin` ({"job", "target"}) fills a letter that names no job."""
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
                "run_id": self.run_id,
                "fingerprint": self.fingerprint,
                **_origin_fields(self, origin),
            },
            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
            default=str,
        )


class DeadLetterWriter:
    """Appends lines; `flush()` makes them durable before their rows count as settled.

    Without `append`, an earlier non-empty file is kept, renamed `X.<its run_id>.jsonl`;
    with `rewrite` (a dry run's own `X.dry-run.jsonl`) it is emptied instead.
    """

    def __init__(self, path: Path, *, append: bool, rewrite: bool = False) -> None:
        self.path = path
        if path.is_symlink():
            raise DeadLetterError(
                f"dead-letter file {path} is a symbolic link; refusing to write through it"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        # Where an earlier file went (--fresh, or a new run): the summary says so.
        self.previous: Path | None = None if append or rewrite else _keep_previous(path)
        # 0600: the file holds personal data. chmod too, in case it already existed.
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
        if rewrite and not append:
            flags |= os.O_TRUNC
        fd = os.open(path, flags, 0o600)
        os.fchmod(fd, 0o600)
        self._fd = fd
        if append:
            _set_aside_torn_tail(path, fd)
        self._pending: list[bytes] = []
        self.written = 0
        self.failed = False  # a write failed: nothing more is written
        self.origin: dict[str, Any] | None = None  # {"job", "target"} each line carries

    def write(self, letter: DeadLetter) -> None:
        self._pending.append(letter.to_json(self.origin) + b"\n")
        self.written += 1

    def flush(self) -> None:
        """Write and fsync the pending lines; on failure cut the file back to whole lines."""
        if not self._pending or self._fd < 0:
            return
        if self.failed:
            self._pending.clear()
            raise DeadLetterFault(f"the dead-letter file {self.path} could not be written")
        data = b"".join(self._pending)
        self._pending.clear()
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as error:
            self.failed = True
            # If even this fails, the torn tail is found and set aside on the next open.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise DeadLetterFault(
                f"cannot write the dead-letter file {self.path}: {error.strerror or error}"
            ) from None

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.flush()
            finally:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> DeadLetterWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _origin_fields(letter: DeadLetter, origin: dict[str, Any] | None) -> dict[str, Any]:
    if letter.job is not None:
        return {"job": letter.job, "target": letter.target}
    if origin is not None:
        return {"job": origin["job"], "target": origin["target"]}
    return {}


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _last_run_id(path: Path) -> str | None:
    """The run_id on the file's last whole line, if it has one."""
    with path.open("rb", buffering=0) as handle:
        handle.seek(max(path.stat().st_size - 65536, 0))
        lines = [line for line in handle.read().split(b"\n") if line.strip()]
    for line in reversed(lines):
        try:
            run_id = orjson.loads(line).get("run_id")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if isinstance(run_id, str) and run_id.replace("-", "").isalnum():
            return run_id
    return None


def _keep_previous(path: Path) -> Path | None:
    """A fresh start never destroys earlier dead letters: the old file is renamed."""
    try:
        if path.stat().st_size == 0:
            return None
    except FileNotFoundError:
        return None
    stem = path.name.removesuffix(".jsonl")
    name = f"{stem}.{_last_run_id(path) or 'previous-' + _stamp()}.jsonl"
    kept = path.with_name(name)
    if kept.exists() or kept.is_symlink():
        kept = path.with_name(f"{stem}.{_stamp()}-{os.getpid()}.jsonl")
    os.replace(path, kept)
    log.warning("the earlier dead-letter file is kept as %s", kept)
    return kept


def _set_aside_torn_tail(path: Path, fd: int) -> None:
    """A line cut short by a crash: moved to `X.torn-<stamp>` (never silently dropped)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    with path.open("rb") as handle:
        back = 0
        while True:
            back = min(size, back + 65536)
            handle.seek(size - back)
            block = handle.read(back)
            if block.endswith(b"\n"):
                return
            cut = block.rfind(b"\n")
            if cut >= 0 or back == size:
                break
        whole = size - back + cut + 1
        handle.seek(0)
        line_number = handle.read(whole).count(b"\n") + 1
        handle.seek(whole)
        tail = handle.read()
    aside = path.with_name(f"{path.name}.torn-{_stamp()}")
    side = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(side, tail)
        os.fsync(side)
    finally:
        os.close(side)
    os.ftruncate(fd, whole)
    log.warning(
        "%s: line %d was cut short by an earlier crash; its %d bytes are kept in %s",
        path,
        line_number,
        len(tail),
        aside,
    )


def read_dead_letter(path: Path) -> Iterator[DeadLetter]:
    """Lines of a dead-letter file.

    A line that is not JSON was torn (a crash or a full disk cut it): it is skipped with a
    warning naming it. A JSON line that is not a dead letter is an error naming its number.
    """
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
            except orjson.JSONDecodeError:
                log.warning(
                    "%s:%d: a torn line (cut short, %d bytes); skipped", path, number, len(line)
                )
                continue
            try:
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
                    run_id=data.get("run_id"),
                    fingerprint=data.get("fingerprint"),
                    job=data.get("job"),
                    target=data.get("target"),
                )
            except (AttributeError, KeyError, TypeError, ValueError) as error:
                raise DeadLetterError(
                    f"{path}:{number}: not a dead-letter line ({error})"
                ) from None
