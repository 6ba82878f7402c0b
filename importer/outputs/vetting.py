"""Output paths checked before anything is sent: never the input, the job file, another
output, or an existing file of another kind (exit 2, the input left untouched).

A report written over the input replaces it; a dead-letter file there renames it aside
(and the run then reads nothing); a state file there is moved away by `--fresh`. Each is
refused here, by what the paths resolve to (`./x.csv`, `x.csv` and a hard link are one file).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from importer.errors import UsageError
from importer.state.database import SQLITE_MAGIC

PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"
SNIFF_BYTES = 1 << 20  # a report is a few kilobytes; a larger JSON file is not one


class OutputRefused(UsageError):
    """An output path that would destroy something: exit 2, before anything is sent."""


class Kind(enum.Enum):
    """What an output file holds; an existing file must hold the same (or be empty)."""

    REPORT = "report"
    DEAD_LETTER = "dead-letter"
    STATE = "state"
    METRICS = "metrics"


@dataclass(frozen=True, slots=True)
class Output:
    """One output of a run: what it is (`role`, for messages), the job key or option that
    sets it, its path and kind; `companions` are files written beside it (a temporary
    file, SQLite's -wal and -shm, the run lock) that nothing else may be either."""

    role: str
    key: str
    path: Path
    kind: Kind
    companions: tuple[Path, ...] = ()


def vet_outputs(outputs: Sequence[Output], inputs: Iterable[Path], job_file: Path | None) -> None:
    """Refuse (OutputRefused) the first output that is an input, the job file, another
    output (or one of its companions), or an existing file of another kind."""
    local = [out for out in outputs if not _is_remote(out.path)]
    others: list[tuple[Path, str]] = [(path, "an input file") for path in inputs]
    if job_file is not None:
        others.append((job_file, "the job file"))
    for out in local:
        _refuse_same(out, others)
    for index, out in enumerate(local):
        for other in local[index + 1 :]:
            family = [(other.path, f"also the {other.role} ({other.key})")]
            family += [(c, f"a file the {other.role} writes beside it") for c in other.companions]
            _refuse_same(out, family)
            family = [(c, f"a file the {out.role} writes beside it") for c in out.companions]
            _refuse_same(other, family)
    for out in local:
        _refuse_other_kind(out)


def _is_remote(path: Path) -> bool:
    return str(path).startswith(("s3:/", "gs:/"))


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (resolved, or the same inode)."""
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _refuse_same(out: Output, others: Iterable[tuple[Path, str]]) -> None:
    for path, what in others:
        if same_file(out.path, path):
            raise OutputRefused(
                f"{out.key}: the {out.role} {out.path} is {what}; writing it would destroy"
                " that file. Choose another path"
            )


def _refuse_other_kind(out: Output) -> None:
    path = out.path
    if path.is_dir():
        raise OutputRefused(
            f"{out.key}: cannot open {path} as the {out.role}: it is a directory; name a file"
        )
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing there to destroy (a folder that is a file fails when written)
    except OSError as error:
        raise OutputRefused(
            f"{out.key}: cannot read the existing {out.role} {path}: {error.strerror}"
        ) from None
    if not head.strip() or _holds(out.kind, head):
        return
    raise OutputRefused(
        f"{out.key}: {path} exists and is {_describe(head)}, not a {out.role} this tool"
        " wrote; refusing to overwrite it. Choose another path (or move the file away)"
    )


def _holds(kind: Kind, head: bytes) -> bool:
    """Whether the first bytes of a file are those of an output of `kind`."""
    if kind is Kind.STATE:
        # The state module judges its own file (and --fresh sets a foreign one aside,
        # destroying nothing); only a state file that is an input or an output is refused here.
        return True
    if kind is Kind.METRICS:
        return head.lstrip().startswith(b"#")
    if kind is Kind.DEAD_LETTER:
        first = head.lstrip().split(b"\n", 1)[0]
        return first.startswith(b"{") and (b'"stage"' in first or b'"source"' in first)
    return _is_report(head)


def _is_report(head: bytes) -> bool:
    if len(head) > SNIFF_BYTES:
        return False
    try:
        data = orjson.loads(head)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and ("rows_read" in data or "exit_code" in data)


def _describe(head: bytes) -> str:
    if head.startswith(SQLITE_MAGIC):
        return "an SQLite database"
    if head.startswith(PARQUET_MAGIC):
        return "a Parquet file"
    if head.startswith(GZIP_MAGIC):
        return "a gzip file"
    if head.lstrip().startswith((b"{", b"[")):
        return "JSON of another kind"
    if b"\0" in head[:4096]:
        return "a binary file"
    return "a text file (CSV or other)"
