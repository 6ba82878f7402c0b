"""Rules for clearing and deleting: `on_empty` (users only) and `sync.delete_absent`."""

from __future__ import annotations

from collections.abc import Iterator

from importer.config.models import JobConfig


def on_empty_problems(job: JobConfig) -> Iterator[str]:
    """`on_empty` clears a user attribute; an event has nothing to clear."""
    event = job.mapping.event
    if event is None:
        return
    specs = {"mapping.event.time": event.time}
    specs.update({f"mapping.event.attributes.{n}": s for n, s in event.attributes.items()})
    for path, spec in specs.items():
        if spec.on_empty is not None:
            yield f"{path}.on_empty: only user attributes can be cleared (an event sets none)"
    if job.mapping.on_empty != "omit":
        yield "mapping.on_empty: only user attributes can be cleared (an event sets none)"


def delete_absent_problems(job: JobConfig) -> Iterator[str]:
    """Deleting absent customers needs the snapshot of a changed-mode job that names its
    customers by customer_id (an Identity Resolution job has no id to delete by)."""
    deletes = job.sync.delete_absent
    if not deletes.enabled:
        return
    key = "sync.delete_absent.enabled"
    if job.import_ != "users":
        yield f"{key}: only a users job can delete customers"
    elif job.sync.mode != "changed":
        yield (
            f"{key}: needs sync.mode: changed (the snapshot of what this job delivered"
            " is what tells who is absent)"
        )
    if job.import_ == "users" and job.mapping.customer_id is None:
        yield (
            f"{key}: needs mapping.customer_id; an Identity Resolution job (no customer_id)"
            " cannot delete customers"
        )
