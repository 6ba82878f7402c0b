"""moe-import: load user profiles from CSV and Parquet into MoEngage's Data API.

The Python API mirrors the CLI (see `importer.api` and docs/ORCHESTRATION.md):

    from importer import load_job, run_job, replay_job
    report = run_job(load_job("jobs/users.yaml"))
    report = run_job("jobs/users.yaml", dry_run=True)       # validate: no credentials
    report = replay_job("jobs/users.yaml", "out/dead_letter.jsonl")
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any


def _installed_version() -> str:
    try:
        return metadata.version("moe-import")
    except metadata.PackageNotFoundError:
        pass
    # A source checkout that was never installed: the same line, read from pyproject.toml.
    try:
        with (Path(__file__).parent.parent / "pyproject.toml").open("rb") as file:
            return str(tomllib.load(file)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0+unknown"


# Written once, in pyproject.toml; read from the installed distribution's metadata.
__version__ = _installed_version()

# Loaded on first use: `python -m importer sandbox` and the CLI's start-up stay light.
_API = (
    "ImporterError",
    "JobRefused",
    "RowsDeadLettered",
    "RunAborted",
    "RunInterrupted",
    "load_job",
    "replay_job",
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
    "replay_job",
    "run_job",
]

if TYPE_CHECKING:
    from importer.api import JobRefused, load_job, replay_job, run_job
    from importer.errors import ImporterError, RowsDeadLettered, RunAborted, RunInterrupted


def __getattr__(name: str) -> Any:
    if name in _API:
        from importer import api  # here: importing `importer` must not load the run's modules

        return getattr(api, name)
    raise AttributeError(f"module 'importer' has no attribute {name!r}")
