"""Which job an output file belongs to: a small JSON mark beside it (`.NAME.owner`).

A report or dead-letter file written by one job and then pointed at by another (a copied
job file, two jobs naming the same path) would be overwritten or renamed under the first
job's feet, and its summary would point at the other's rows. The mark names the job file
(its resolved path: the job's identity) and the target it sends to; a run of another job
is refused before anything is sent (exit 2), naming both. A mark whose job file is gone
is taken over, with a log line. A dry run reads marks and writes none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from importer.config import JobConfig
from importer.errors import UsageError
from importer.outputs.atomic import write_atomically
from importer.state.identity import job_target

log = logging.getLogger("importer")

MARK_VERSION = 1


class OutputOwned(UsageError):
    """An output belongs to another job: exit 2, before anything is sent."""


def job_identity(job_file: Path) -> str:
    """A job is its job file: the resolved path (a copy elsewhere is another job)."""
    return str(job_file.resolve())


def mark_path(output: Path) -> Path:
    """Where the mark of `output` lives: `.NAME.owner` beside it."""
    return output.with_name(f".{output.name}.owner")


@dataclass(frozen=True, slots=True)
class Owner:
    job: str
    target: dict[str, Any]

    def describe(self) -> str:
        workspace = self.target.get("workspace_id") or "?"
        return f"{self.job} (workspace {workspace} at {self.target.get('url') or '?'})"


def read_owner(output: Path) -> Owner | None:
    """The mark beside `output`, or None (no mark, or one we cannot read: never fatal)."""
    mark = mark_path(output)
    try:
        data = orjson.loads(mark.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as error:
        log.warning("ignoring the unreadable ownership mark %s (%s)", mark, error)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("job"), str):
        log.warning("ignoring the ownership mark %s: not one this tool wrote", mark)
        return None
    target = data.get("target")
    return Owner(data["job"], target if isinstance(target, dict) else {})


def check_owner(output: Path, role: str, key: str, job: JobConfig) -> None:
    """Refuse `output` (the `role`, set by `key`) when another job's mark is beside it."""
    job_file = job.job_file()
    if job_file is None:
        return  # a job built in code has no identity to compare
    owner = read_owner(output)
    identity = job_identity(job_file)
    if owner is None or owner.job == identity:
        return
    if not Path(owner.job).exists():
        log.warning(
            "the %s %s was written by the job %s, which no longer exists; this job takes it over",
            role,
            output,
            owner.job,
        )
        return
    mine = Owner(identity, job_target(job))
    raise OutputOwned(
        f"the {role} {output} belongs to the job {owner.describe()}; this job"
        f" {mine.describe()} would overwrite it. Give this job its own path ({key}, or"
        f" leave {key} unset for out/{job_file.stem}/), or delete {mark_path(output)} if"
        f" {Path(owner.job).name} no longer writes there"
    )


def claim(output: Path, job: JobConfig) -> None:
    """Mark `output` as this job's (a real run, once the output is opened)."""
    job_file = job.job_file()
    if job_file is None:
        return
    owner = Owner(job_identity(job_file), job_target(job))
    if read_owner(output) == owner:
        return
    body = {"version": MARK_VERSION, "job": owner.job, "target": owner.target}
    mark = mark_path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(mark, orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n", mode=0o644)
    except OSError as error:
        # The mark guards against another job; not writing it must not stop this one (the
        # output itself, if it cannot be written either, fails in its own words).
        log.warning("cannot mark %s as this job's output (%s)", output, error.strerror or error)
