"""What is settled before anything is sent: inputs found and checked, outputs vetted, scope."""

from __future__ import annotations

import contextlib
import secrets
import time
from pathlib import Path
from typing import Any

from importer import sources
from importer.config import ConfigError, JobConfig
from importer.mapping import Mapper, RowMapper
from importer.mapping.events import EventMapper
from importer.moengage import BULK_FRAME_BYTES, Endpoint
from importer.outputs.report import report_tmp
from importer.state import (
    RunLock,
    Scope,
    StateError,
    StateFault,
    StateStore,
    refuse_symlink,
)


def new_run_id() -> str:
    """Time-sortable and unique enough: 20261129T034512Z-3f9a1c."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def job_target(job: JobConfig) -> dict[str, Any]:
    """Where the job's rows go: URL, workspace, project code, endpoint (no secrets)."""
    api = job.api
    return {
        "url": api.resolved_base_url().rstrip("/"),
        "workspace_id": api.workspace_id,
        "project_code": api.project_code,
        "endpoint": str(api.endpoint),
    }


def scope_of(job: JobConfig, job_id: str = "") -> Scope:
    """Whose saved progress a run reads and writes: the job, its target and its mapping."""
    return Scope(job_id, job_target(job), job.mapping.model_dump(mode="json"))


def job_scope(job: JobConfig, job_id: str = "") -> str:
    """The key of `scope_of` (see state.identity)."""
    return scope_of(job, job_id).key


def check_output_paths(job: JobConfig, dead_letter: Path, *, with_state: bool) -> None:
    """No output is written through a symlink in its last component: refused up front
    (StateError, exit 2); the writers open with O_NOFOLLOW as well."""
    refuse_symlink(dead_letter, "dead-letter file")
    refuse_symlink(job.output.report, "report file")
    refuse_symlink(report_tmp(job.output.report), "report temporary file")
    if with_state:
        state = job.output.state
        for path in (state, *(state.with_name(state.name + s) for s in ("-wal", "-shm"))):
            refuse_symlink(path, "state file")
        refuse_symlink(RunLock(state).path, "lock file")


def mapper_for(job: JobConfig) -> RowMapper:
    """A mapper that refuses elements too large for one request of this job."""
    frame = 0 if job.api.endpoint == Endpoint.CUSTOMER else BULK_FRAME_BYTES
    kind = EventMapper if job.import_ == "events" else Mapper
    return kind(job.mapping, max_element_bytes=job.delivery.max_batch_bytes - frame)


def discover_sources(job: JobConfig) -> list[sources.DataFile]:
    if not job.source.path:
        raise ConfigError("source.path: no input given; set source.path or pass --input")
    return sources.discover(job.source.path, job.source.format, job.source.storage)


def check_sources(job: JobConfig, mapper: RowMapper, paths: list[sources.DataFile]) -> None:
    """Every mapped column is in some file (parts of an export may differ; a part lacking a
    column reads it as empty): refused before anything is sent."""
    where = (
        str(paths[0]) if len(paths) == 1 else f"any of the {len(paths)} files of {job.source.path}"
    )
    mapper.check_columns(sources.union_columns(paths, job.source), where)
    sources.check_mapped_columns(paths, job.source, mapper.columns)


def dry_run_sibling(path: Path) -> Path:
    return path.with_name(f"{path.name.removesuffix('.jsonl')}.dry-run.jsonl")


def has_saved_progress(state_path: Path) -> bool:
    if not state_path.exists():
        return False
    try:
        store = StateStore(state_path)
    except (StateError, StateFault):
        return True  # a file a rerun would have to deal with: keep the dry run apart
    try:
        return store.any_progress()
    except StateFault:
        return True
    finally:
        with contextlib.suppress(StateFault):
            store.close()


def prepare(job: JobConfig) -> tuple[list[sources.DataFile], RowMapper]:
    """Everything that can refuse a job before anything is sent (exit 2)."""
    paths = discover_sources(job)
    mapper = mapper_for(job)
    check_sources(job, mapper, paths)
    return paths, mapper
