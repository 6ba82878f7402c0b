"""What is settled before anything is sent: inputs found and checked, outputs vetted, scope."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

from importer import sources
from importer.config import ConfigError, JobConfig
from importer.mapping import Mapper, RowMapper
from importer.mapping.events import EventMapper
from importer.moengage import BULK_FRAME_BYTES, Endpoint
from importer.outputs.ownership import check_owner
from importer.outputs.report import dry_run_report_path, report_tmp
from importer.outputs.vetting import Kind, Output, OutputRefused, same_file, vet_outputs
from importer.run.carry_over import legacy_state
from importer.state import RunLock, Scope, job_identity, refuse_symlink
from importer.state.identity import job_target

log = logging.getLogger("importer")


def new_run_id() -> str:
    """Time-sortable and unique enough: 20261129T034512Z-3f9a1c."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def job_id_of(job: JobConfig) -> str:
    """The job's identity when it was read from a file (its stem, see state.identity); a job
    built in code, without a file, keeps the unnamed scope."""
    path = job.job_file()
    return job_identity(path, job) if path is not None else ""


def scope_of(job: JobConfig, job_id: str | None = None) -> Scope:
    """Whose saved progress a run reads and writes: the job, its target and its mapping.
    `job_id` defaults to the job file's identity, so every reader and writer agrees."""
    job_id = job_id_of(job) if job_id is None else job_id
    return Scope(job_id, job_target(job), job.mapping.model_dump(mode="json"))


def job_scope(job: JobConfig, job_id: str | None = None) -> str:
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
    """Where a dry run writes its dead letters: `X.dry-run.jsonl` beside the real `X.jsonl`."""
    return path.with_name(f"{path.name.removesuffix('.jsonl')}.dry-run.jsonl")


def is_dry_run_file(path: Path) -> bool:
    """A file only dry runs write (`X.dry-run.*`): rewritten freely, never a real run's."""
    return ".dry-run." in path.name


def job_outputs(job: JobConfig, *, dry_run: bool) -> list[Output]:
    """The files a run of `job` writes (a dry run reads the state and writes no metrics)."""
    out = job.output
    state = out.state
    outputs = [
        Output(
            "report file",
            "output.report / --report",
            out.report,
            Kind.REPORT,
            (report_tmp(out.report),),
        ),
        Output(
            "dead-letter file",
            "output.dead_letter / --dead-letter",
            out.dead_letter,
            Kind.DEAD_LETTER,
        ),
        Output(
            "state file",
            "output.state / --state",
            state,
            Kind.STATE,
            (*(state.with_name(state.name + s) for s in ("-wal", "-shm")), RunLock(state).path),
        ),
    ]
    if out.metrics is not None and not dry_run:
        outputs.append(Output("metrics file", "output.metrics", out.metrics, Kind.METRICS))
    return outputs


def vet_job_outputs(job: JobConfig, inputs: Sequence[Path], *, dry_run: bool) -> None:
    """Refused before anything is sent (exit 2): an output that is an input, the job file,
    another output, an existing file of another kind, or a file another job owns."""
    vet_outputs(job_outputs(job, dry_run=dry_run), inputs, job.job_file())
    check_owner(job.output.report, "report file", "output.report", job)
    check_owner(job.output.dead_letter, "dead-letter file", "output.dead_letter", job)


def dry_run_outputs(
    job: JobConfig, *, dead_letter: str | None, report: str | None
) -> dict[str, str]:
    """Where a dry run writes (output section overrides): exactly where `--dead-letter` /
    `--report` say, else `X.dry-run.*` beside the real files, never over them; the state
    is read (read-only) where a real run would find it, an old default one included."""
    real = {
        job.output.report: "report file",
        job.output.dead_letter: "dead-letter file",
        job.output.state: "state file",
    }
    for option, given in (("--report", report), ("--dead-letter", dead_letter)):
        for path, role in real.items():
            if given and same_file(Path(given), path):
                raise OutputRefused(
                    f"{option}: {given} is this job's {role}; a dry run never writes the real"
                    " run's files. Choose another path"
                )
    paths = {
        "report": report or str(dry_run_report_path(job.output.report)),
        "dead_letter": dead_letter or str(dry_run_sibling(job.output.dead_letter)),
    }
    old = legacy_state(job)
    if old is not None:
        log.info(
            "saved progress of this job is in %s; a real run carries it over to %s,"
            " this dry run reads it where it is",
            old,
            job.output.state,
        )
        paths["state"] = str(old)
    return paths


def prepare(job: JobConfig) -> tuple[list[sources.DataFile], RowMapper]:
    """Everything that can refuse a job before anything is sent (exit 2)."""
    paths = discover_sources(job)
    mapper = mapper_for(job)
    check_sources(job, mapper, paths)
    return paths, mapper
