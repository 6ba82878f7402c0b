"""Which rows of the job's current input the job delivered: those its saved progress holds
as accepted (or unchanged: accepted on an earlier night), so `verify` samples customers
MoEngage should hold, not rows that failed or were never sent."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from importer import sources
from importer.config import ConfigError, JobConfig
from importer.run.preflight import job_scope
from importer.run.resume import identify
from importer.state import StateStore, subtract_ranges

Ranges = list[tuple[int, int]]


def delivered_ranges(job: JobConfig, paths: list[sources.DataFile]) -> dict[str, Ranges]:
    """Per source (as rows name it), the row ranges this job's runs got accepted."""
    state_path: Path = job.output.state
    if not state_path.exists():
        raise ConfigError(
            f"{state_path} does not exist: this job has delivered nothing to verify yet"
            " (run it first, or point output.state / --state at its state file)"
        )
    store = StateStore(state_path, job_scope(job))
    try:
        delivered: dict[str, Ranges] = {}
        for path in paths:
            key = path.state_key
            settled = store.settled(key, identify(store, key, path))
            delivered[str(path)] = subtract_ranges(settled.ranges, settled.dead)
    finally:
        store.close()
    if not any(delivered.values()):
        raise ConfigError(
            "the job's saved progress holds no accepted row of its current input: nothing"
            " to verify (the input changed since the last run, or that run sent nothing)"
        )
    return delivered


def within(numbers: list[int], ranges: Ranges) -> np.ndarray:
    array = np.asarray(numbers, dtype=np.int64)
    inside = np.zeros(len(array), dtype=bool)
    for first, last in ranges:
        inside |= (array >= first) & (array <= last)
    return inside
