"""Saved progress from before outputs were kept per job, carried over on upgrade.

Job files without `output:` used to keep their state at `out/state.db` (earlier) or
`out/<job stem>.state.db` (beside the shared dead letters); they now keep it in
`out/<job stem>/state.db`. When that file does not exist yet and an old one does, a real
run copies the old one there first (SQLite's backup: consistent even with a -wal beside
it), with a log line, so no progress or snapshot is orphaned. The old file is left as it
was: another job may still need it (`out/state.db` was shared). A dry run reads the old
file where it is and writes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

from importer.config import DEFAULT_OUTPUT_FOLDER, JobConfig
from importer.state import RunLock, StateError
from importer.state.database import SQLITE_MAGIC

log = logging.getLogger("importer")


def old_state_paths(job_stem: str) -> tuple[Path, ...]:
    """Where earlier versions kept a job's state when its file left `output:` unset."""
    return (
        DEFAULT_OUTPUT_FOLDER / f"{job_stem}.state.db",
        DEFAULT_OUTPUT_FOLDER / "state.db",
    )


def legacy_state(job: JobConfig) -> Path | None:
    """The old state file this job's progress is in, when its own (default) one is not
    there yet; None otherwise (a state path the job file set is never second-guessed)."""
    job_file = job.job_file()
    if job_file is None:
        return None
    state = job.output.state
    if state != DEFAULT_OUTPUT_FOLDER / job_file.stem / "state.db" or state.exists():
        return None
    for old in old_state_paths(job_file.stem):
        if old.is_file() and not old.is_symlink() and _is_sqlite(old):
            return old
    return None


def carry_over(job: JobConfig) -> Path | None:
    """Copy the old state file into this job's place (a real run, before it opens its
    state); the old path, or None when there was nothing to carry over."""
    old = legacy_state(job)
    if old is None:
        return None
    if RunLock(old).is_held():
        raise StateError(
            f"a run holds the old state file {old} (an earlier version of this tool?); wait"
            f" for it to finish, then run again: its progress is carried over to"
            f" {job.output.state}"
        )
    new = job.output.state
    new.parent.mkdir(parents=True, exist_ok=True)
    tmp = new.with_name(f".{new.name}.carry-over.{os.getpid()}")
    try:
        source = sqlite3.connect(f"{old.resolve().as_uri()}?mode=ro", uri=True)
        try:
            target = sqlite3.connect(tmp)
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
        os.replace(tmp, new)
    except (sqlite3.Error, OSError) as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StateError(f"cannot carry over the old state file {old} to {new}: {error}") from None
    log.warning(
        "saved progress carried over: %s copied to %s, this job's state file from now on"
        " (the old file is left as it was)",
        old,
        new,
    )
    return old


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False
