"""What a run is asked to do (`RunOptions`) and what it gives back (`RunOutcome`).

Shared by the pipeline, replay and the Python API (`importer.api` re-exports both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from importer.outputs.report import Report


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    fresh: bool = False
    full: bool = False  # sync.mode changed: send every valid row anyway
    progress: bool | None = None  # None: a bar on a terminal, log lines otherwise
    sample_size: int = 3
    retarget: bool = False  # replay: send lines of other jobs or targets to this job's target
    # The job's identity (state.job_identity); None: the job file's (preflight.job_id_of).
    job: str | None = None
    # replay: its input as the user named it where that is not a local path (an s3:// URL),
    # which keys the replay's progress the same on every runner.
    replay_name: str | None = None
    # Sees the run before it starts (metrics, a remote state's checkpoints: importer.api).
    observe: Callable[[Any], None] | None = field(default=None, compare=False)
    # A slice run by `--workers`: settled counts go to stdout as JSON lines (run.workers).
    progress_pipe: bool = False


@dataclass
class RunOutcome:
    report: Report
    samples: list[dict[str, Any]] = field(default_factory=list)  # built elements, dry runs
