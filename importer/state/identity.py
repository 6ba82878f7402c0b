"""Whose memory this is: the job's identity, its target, and the scope key progress is saved under.

A job is named by its job file's stem (`jobs/users.yaml` is job `users`): a copy of the file
under another name (`profiles.yaml`) is another job, with memory of its own. The target is
where rows go (URL, workspace, project code, endpoint); the scope adds the mapping, so the
same file sent elsewhere or mapped otherwise starts from nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from importer.config import JobConfig


def job_identity(job_path: str | Path, job: object = None) -> str:
    """The job's name in its memory, dead-letter lines and default outputs: the job file's
    stem. `job` (the loaded job) is accepted so an explicit name key can win later."""
    explicit = getattr(job, "name", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    return Path(job_path).stem


def job_target(job: JobConfig) -> dict[str, Any]:
    """Where the job's rows go: URL, workspace, project code, endpoint (no secrets)."""
    api = job.api
    return {
        "url": api.resolved_base_url().rstrip("/"),
        "workspace_id": api.workspace_id,
        "project_code": api.project_code,
        "endpoint": str(api.endpoint),
    }


def progress_scope(target: dict[str, Any], mapping: Any) -> str:
    """The key saved progress belongs to: the target and the mapping's canonical form."""
    canonical = json.dumps({"target": target, "mapping": mapping}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def target_key(target: dict[str, Any]) -> str:
    return progress_scope(target, None)


@dataclass(frozen=True)
class Scope:
    """One job's memory for one target and mapping.

    `key` is what progress and the snapshot are stored under; `legacy` the key state files
    used before jobs were part of it (a run adopts progress found there, see
    `ScopedProgress.claim`). A job without a name (the Python API given a loaded job)
    keeps the legacy key.
    """

    job: str
    target: dict[str, Any]
    mapping: Any = None

    @property
    def key(self) -> str:
        if not self.job:
            return self.legacy
        return progress_scope({**self.target, "job": self.job}, self.mapping)

    @property
    def legacy(self) -> str:
        return progress_scope(self.target, self.mapping)

    @property
    def target_key(self) -> str:
        return target_key(self.target)

    def origin(self) -> dict[str, Any]:
        """What each dead-letter line says of where it came from (no secrets)."""
        return {"job": self.job, "target": dict(self.target)}


def describe_target(target: dict[str, Any]) -> str:
    """`workspace W at URL` (with project and endpoint when set), for messages."""
    text = f"workspace {target.get('workspace_id')} at {target.get('url')}"
    if target.get("project_code"):
        text += f" (project {target['project_code']})"
    return text
