"""moe-import: load user profiles from CSV and Parquet into MoEngage's Data API.

The Python API (see `importer.api` and docs/ORCHESTRATION.md):

    from importer import load_job, run_job
    report = run_job(load_job("jobs/users.yaml"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Loaded on first use: `python -m importer sandbox` and the CLI's start-up stay light.
_API = (
    "ImporterError",
    "JobRefused",
    "RowsDeadLettered",
    "RunAborted",
    "RunInterrupted",
    "load_job",
    "run_job",
)
__all__ = [
    "ImporterError",
    "JobRefused",
    "RowsDeadLettered",
    "RunAborted",
    "RunInterrupted",
    "__version__",
    "load_job",
    "run_job",
]

if TYPE_CHECKING:
    from importer.api import JobRefused, load_job, run_job
    from importer.errors import ImporterError, RowsDeadLettered, RunAborted, RunInterrupted


def __getattr__(name: str) -> Any:
    if name in _API:
        from importer import api

        return getattr(api, name)
    raise AttributeError(f"module 'importer' has no attribute {name!r}")
