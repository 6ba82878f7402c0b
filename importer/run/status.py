"""`moe-import status JOB.yaml [--json]`: what the job's memory holds.

Its last runs (run id, command, exit code, counts), rows pending, dead letters by stage,
the snapshot's size and target, and the state file's path. It reads the state file
read-only (a run may hold it) and the job's dead-letter file; it needs no credentials and
shows no personal data: counts, paths, ids of runs.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from importer.config import JobConfig, load_job
from importer.outputs.deadletter import STAGES, DeadLetterError, read_dead_letter
from importer.outputs.location import shown
from importer.remote import remote_view
from importer.run.history import RUN_COUNTS
from importer.run.preflight import job_id_of, scope_of
from importer.run.retarget import foreign_reason
from importer.run.slices import slice_jobs, slicing_of
from importer.state import Scope, describe_target
from importer.state.database import read_only, tables
from importer.state.history import last_runs, scope_summary, version
from importer.state.scopes import scopes_of_job

log = logging.getLogger("importer")


def job_status(job: JobConfig, job_id: str) -> dict[str, Any]:
    """The job's memory as plain data (what `--json` prints); s3:// outputs are read from a
    downloaded copy."""
    with remote_view(job) as view:
        status = _local_status(view.job, job_id)
    status["state"] = shown(job.output.state)
    status["dead_letters"]["path"] = shown(job.output.dead_letter)
    return status


def _local_status(job: JobConfig, job_id: str) -> dict[str, Any]:
    scope = scope_of(job, job_id)
    status: dict[str, Any] = {
        "job": job_id,
        "state": str(job.output.state),
        "state_exists": job.output.state.exists(),
        "target": scope.target,
        "runs": [],
        "progress": {"sources": [], "snapshot_customers": 0},
        "other_targets": [],
    }
    with read_only(job.output.state) as db:
        if db is not None:
            status["schema_version"] = version(db)
            if "source_files" in tables(db):
                status["runs"] = last_runs(db, job_id)
                status["progress"] = _progress(db, scope)
                if "scopes" in tables(db):
                    status["other_targets"] = [
                        s["target"]
                        for s in scopes_of_job(db, job_id)
                        if s["scope"] != scope.key and s["target"] != scope.target
                    ]
    last = status["runs"][0]["counts"] if status["runs"] else {}
    sources = status["progress"]["sources"]
    status["rows_pending"] = int(last.get("rows_pending", 0))
    status["rows_to_resend"] = sum(s["rows_to_resend"] for s in sources)
    status["dead_letters"] = _dead_letters(job.output.dead_letter, scope)
    return status


def _progress(db: Any, scope: Scope) -> dict[str, Any]:
    summary = scope_summary(db, scope.key)
    if not summary["sources"] and not summary["snapshot_customers"]:
        # Saved before jobs were part of the key: the job's next run claims it.
        legacy = scope_summary(db, scope.legacy)
        if legacy["sources"] or legacy["snapshot_customers"]:
            return {**legacy, "unclaimed": True}
    return dict(summary)


def _dead_letters(path: Path, scope: Scope) -> dict[str, Any]:
    """Lines of the job's dead-letter file by stage (and of other jobs or workspaces)."""
    found: dict[str, Any] = {"path": str(path), "exists": path.exists(), "by_stage": {}}
    if not path.exists():
        return found
    stages: Counter[str] = Counter()
    others: Counter[str] = Counter()
    try:
        for letter in read_dead_letter(path):
            stages[letter.stage] += 1
            reason = foreign_reason(letter, scope)
            if reason is not None:
                others[reason] += 1
    except DeadLetterError as error:
        found["error"] = str(error)
    # In the order rows meet them: validation, rejected, delivery (then any later stage).
    order = [*STAGES, *sorted(set(stages) - set(STAGES))]
    found["by_stage"] = {stage: stages[stage] for stage in order if stages[stage]}
    found["lines"] = sum(stages.values())
    if others:
        found["other_jobs_or_workspaces"] = dict(others)
    return found


def format_status(status: dict[str, Any]) -> str:
    """The text `moe-import status` prints."""
    state = status["state"]
    if "schema_version" in status:
        state += f" (schema {status['schema_version']})"
    elif not status["state_exists"]:
        state += " (none yet: no run has saved progress)"
    lines = [
        f"job             {status['job']}",
        f"state file      {state}",
        f"target          {describe_target(status['target'])}",
        *_runs_lines(status["runs"]),
        f"rows pending    {status['rows_pending']:,} (left unsettled by the last run)"
        f"; {status['rows_to_resend']:,} to resend (delivery failures)",
        *_dead_letter_lines(status["dead_letters"]),
        *_snapshot_lines(status),
    ]
    return "\n".join(lines) + "\n"


def _runs_lines(runs: list[dict[str, Any]]) -> list[str]:
    if not runs:
        return ["last runs       none recorded"]
    lines = ["last runs"]
    for run in runs:
        counts = run["counts"]
        shown = ", ".join(
            f"{name.removeprefix('rows_')} {counts[name]:,}"
            for name in RUN_COUNTS
            if counts.get(name)
        )
        lines.append(
            f"  {run['run_id']}  {run['command']:<8} {run['finished_at']}"
            f"  exit {run['exit_code']}  {shown or 'no rows'}"
        )
    return lines


def _dead_letter_lines(found: dict[str, Any]) -> list[str]:
    if not found["exists"]:
        return [f"dead letters    none ({found['path']} does not exist)"]
    stages = ", ".join(f"{stage} {count:,}" for stage, count in found["by_stage"].items())
    lines = [f"dead letters    {found['lines']:,} in {found['path']}: {stages or 'empty'}"]
    for reason, count in found.get("other_jobs_or_workspaces", {}).items():
        lines.append(f"                {count:,} of them lines of {reason}")
    if "error" in found:
        lines.append(f"                (read stopped: {found['error']})")
    return lines


def _snapshot_lines(status: dict[str, Any]) -> list[str]:
    progress = status["progress"]
    lines = [
        f"snapshot        {progress['snapshot_customers']:,} customers"
        f" ({describe_target(status['target'])})"
    ]
    if progress.get("unclaimed"):
        lines.append(
            "                saved by an earlier version; the next run makes it this job's"
        )
    for target in status["other_targets"]:
        lines.append(f"                this job also has memory for {describe_target(target)}")
    return lines


def show_status(job: JobConfig, job_id: str, *, as_json: bool) -> str:
    status = job_status(job, job_id)
    if as_json:
        return json.dumps(status, indent=2, sort_keys=True) + "\n"
    return format_status(status)


def status_command(job_path: str, *, as_json: bool) -> int:
    """`moe-import status`: print the job's memory; exit 0 (2 for a bad job file). A sliced
    job's memory is each slice's state: each is shown, and their total."""
    job = load_job(Path(job_path), need_credentials=False)
    n = slicing_of(job)
    if n is None:
        print(show_status(job, job_id_of(job), as_json=as_json), end="")
        return 0
    status = sliced_status([job_status(one, job_id_of(one)) for one in slice_jobs(job, n)])
    if as_json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_sliced(status), end="")
    return 0


def sliced_status(slices: list[dict[str, Any]]) -> dict[str, Any]:
    """The status of each slice (as `--json` prints one job's) and their total."""
    stages: Counter[str] = Counter()
    for one in slices:
        stages.update(one["dead_letters"]["by_stage"])
    total = {
        "rows_pending": sum(one["rows_pending"] for one in slices),
        "rows_to_resend": sum(one["rows_to_resend"] for one in slices),
        "snapshot_customers": sum(one["progress"]["snapshot_customers"] for one in slices),
        "dead_letters": dict(stages),
        "last_run_counts": {
            name: sum(int(one["runs"][0]["counts"].get(name) or 0) for one in slices if one["runs"])
            for name in RUN_COUNTS
        },
    }
    return {"job": slices[0]["job"], "slices": len(slices), "total": total, "by_slice": slices}


def format_sliced(status: dict[str, Any]) -> str:
    """The text of a sliced job's status: each slice's, then the total."""
    parts = []
    for k, one in enumerate(status["by_slice"]):
        parts.append(f"slice {k}/{status['slices']}\n" + format_status(one))
    total = status["total"]
    counts = ", ".join(
        f"{name.removeprefix('rows_')} {total['last_run_counts'][name]:,}"
        for name in RUN_COUNTS
        if total["last_run_counts"].get(name)
    )
    stages = ", ".join(f"{stage} {count:,}" for stage, count in total["dead_letters"].items())
    parts.append(
        f"total of {status['slices']} slices\n"
        f"last runs       {counts or 'none recorded'}\n"
        f"rows pending    {total['rows_pending']:,}; {total['rows_to_resend']:,} to resend\n"
        f"dead letters    {sum(total['dead_letters'].values()):,}: {stages or 'none'}\n"
        f"snapshot        {total['snapshot_customers']:,} customers\n"
    )
    return "\n".join(parts)
