"""A changed-mode run with no snapshot to compare against: said before anything is sent.

Without a snapshot of its target and mapping, `sync.mode: changed` sends every valid row
(a copied or renamed job file starts a state file of its own: at millions of customers,
hours of resending). The run says so in the log before sending, in the summary and in the
report (`first_sync: true`); where a state file nearby holds a snapshot of the same target
and mapping (the old default `out/state.db`, another job's `out/*/state.db`), it is named,
with how to start from it. Every file is read read-only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from importer.config import DEFAULT_OUTPUT_FOLDER, JobConfig
from importer.run.preflight import scope_of
from importer.state import Scope, StateError, StateFault, snapshot_size
from importer.state.history import jobs_in

log = logging.getLogger("importer")

FIRST_SYNC = "first sync: sending every row"
MAX_CANDIDATES = 64  # state files looked into for a snapshot of the same target and mapping


@dataclass(frozen=True, slots=True)
class FirstSync:
    """No snapshot of this job's target and mapping in `state`; `elsewhere` lists state
    files that hold one, with its size."""

    state: Path
    elsewhere: list[tuple[Path, int]] = field(default_factory=list)

    def notes(self) -> list[str]:
        """The warning lines: the first sync, then each snapshot found and how to use it."""
        lines = [f"{FIRST_SYNC} (no snapshot of this target and mapping in {self.state})"]
        for path, size in self.elsewhere:
            lines.append(
                f"{path} holds a snapshot of this target and mapping ({size:,} customers):"
                f" to compare against it, set output.state: {path} (or --state {path}), or"
                f" copy it to {self.state} before the first run"
            )
        return lines


def check_first_sync(job: JobConfig, state: Path | None = None) -> FirstSync | None:
    """A FirstSync when a changed-mode job has no snapshot of its own in `state` (default:
    its state file); None when it has one, or compares with none (`sync.mode: all`)."""
    if job.sync.mode != "changed":
        return None
    state = job.output.state if state is None else state
    scope = scope_of(job)
    try:
        # Its own snapshot, or one saved before jobs were named (the run adopts it).
        if snapshot_size(state, scope.key) or snapshot_size(state, scope.legacy):
            return None
    except (StateError, StateFault) as error:
        log.warning("cannot read the snapshot in %s (%s)", state, error)
    return FirstSync(state, _elsewhere(state, scope))


def _elsewhere(own: Path, scope: Scope) -> list[tuple[Path, int]]:
    """State files holding a snapshot of this target and mapping, under any job's name."""
    found = []
    for path in _candidates(own):
        try:
            keys = {scope.key, scope.legacy, *(replace(scope, job=j).key for j in jobs_in(path))}
            size = max(snapshot_size(path, key, count=True) for key in keys)
        except (StateError, StateFault):
            continue  # not ours to judge here: only a hint is at stake
        if size:
            found.append((path, size))
    return found


def _candidates(own: Path) -> list[Path]:
    """State files where a snapshot of this job's target and mapping may be: the old
    default places and other jobs' folders under `out/`, and beside this job's own."""
    patterns = [
        (DEFAULT_OUTPUT_FOLDER, "state.db"),
        (DEFAULT_OUTPUT_FOLDER, "*.state.db"),
        (DEFAULT_OUTPUT_FOLDER, "*/state.db"),
        (own.parent, "*.db"),
        (own.parent.parent, "*/state.db"),
    ]
    seen = {_key(own)}
    paths = []
    for folder, pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            key = _key(path)
            if key in seen or not path.is_file() or path.is_symlink():
                continue
            seen.add(key)
            paths.append(path)
            if len(paths) >= MAX_CANDIDATES:
                return paths
    return paths


def _key(path: Path) -> str:
    try:
        return str(path.resolve())
    except OSError:
        return str(path)
