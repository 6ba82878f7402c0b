"""verify, start to end: sample the job's customers from its input, read their profiles back
through the Get User API (paced at its own limit), compare, write the report.

Exit codes: 0 all match, 1 some differ, 2 usage (not a users job, bad sample), 3 could not
read back (refused credentials, unreachable API).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from importer import moengage, sources
from importer.config import ConfigError, JobConfig
from importer.errors import EXIT_DEAD_LETTERED, EXIT_OK
from importer.quota.window import WindowLimiter
from importer.run.preflight import prepare
from importer.run.slices import job_filter
from importer.run.transport import AiohttpTransport
from importer.run.users_api import UsersApiClient
from importer.verify.compare import Comparison, Outcome, compare
from importer.verify.delivered import delivered_ranges, within
from importer.verify.sample import CustomerSample

DEFAULT_SAMPLE = 100


@dataclass(frozen=True)
class VerifyOutcome:
    comparison: Comparison
    customer_ids: list[str]
    report_path: Path
    exit_code: int
    export_limit: str


def verify_report_path(report: Path) -> Path:
    """X.verify.json beside the job's report."""
    return report.with_name(f"{report.name.removesuffix('.json')}.verify.json")


def verify_job(
    job: JobConfig,
    *,
    sample: int = DEFAULT_SAMPLE,
    seed: int = 0,
    report: Path | None = None,
    slices: list[JobConfig] | None = None,
) -> VerifyOutcome:
    """Verify the job; a sliced job's sample is drawn across its `slices` (each slice's
    rows, among those its own state holds as accepted)."""
    if job.import_ != "users":
        raise ConfigError("verify reads user profiles back: it takes users jobs only")
    if sample < 1:
        raise ConfigError(f"--sample must be at least 1, not {sample}")
    picked = sample_customers(job, sample, seed, slices)
    stored = asyncio.run(read_back(job, sorted(picked.elements)))
    comparison = compare(picked.elements, stored)
    path = report or verify_report_path(job.output.report)
    code = EXIT_OK if comparison.all_match else EXIT_DEAD_LETTERED
    write_verify_report(path, job, comparison, sample=sample, seed=seed, exit_code=code)
    limit = f"{moengage.DEFAULT_EXPORT_USERS:,} users a minute"
    return VerifyOutcome(comparison, picked.customer_ids(), path, code, limit)


def sample_customers(
    job: JobConfig, size: int, seed: int, slices: list[JobConfig] | None = None
) -> CustomerSample:
    """One pass over the input (one a slice): map every chunk, keep the sampled customers'
    elements, among the rows the job's saved progress holds as accepted."""
    paths, mapper = prepare(job)
    picked = CustomerSample(size, seed)
    refused: list[ConfigError] = []
    for one in slices or [job]:
        try:
            delivered = delivered_ranges(one, paths)
        except ConfigError as error:  # a slice may have delivered nothing: the others count
            refused.append(error)
            continue
        row_filter = job_filter(one)
        for path in paths:
            accepted = delivered.get(str(path), [])
            for chunk in sources.iter_chunks(path, job.source, mapper.columns, 1, row_filter):
                valid = mapper.map_chunk(chunk).valid
                numbers = [number for row in valid for number in row.numbers]
                if not numbers:
                    continue
                mask = iter(within(numbers, accepted).tolist())
                # A merged row stands for several of one customer's rows: kept if any was sent.
                picked.add(row for row in valid if any([next(mask) for _ in row.numbers]))
    if len(refused) == len(slices or [job]):
        raise refused[0]
    return picked


async def read_back(job: JobConfig, customer_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Profiles in requests of at most 20, paced at the Get User API's own limit."""
    transport = AiohttpTransport(
        timeout_seconds=job.delivery.timeout_seconds, concurrency=1, ca_bundle=job.api.ca_bundle
    )
    limiter = WindowLimiter(moengage.DEFAULT_EXPORT_USERS, moengage.DEFAULT_RATE_PERIOD_SECONDS)
    client = UsersApiClient(
        job.api, transport, limiter=limiter, in_transit_seconds=job.delivery.timeout_seconds
    )
    stored: dict[str, dict[str, Any]] = {}
    try:
        for start in range(0, len(customer_ids), moengage.EXPORT_MAX_USERS):
            batch = customer_ids[start : start + moengage.EXPORT_MAX_USERS]
            stored.update(await client.export(batch))
    finally:
        await transport.close()
    return stored


def write_verify_report(
    path: Path, job: JobConfig, comparison: Comparison, *, sample: int, seed: int, exit_code: int
) -> None:
    """JSON, mode 0600 (it holds ids and values, as the dead-letter file does), atomically."""
    body = {
        "sample": sample,
        "seed": seed,
        "customers_checked": comparison.customers_checked,
        "customers_not_found": comparison.customers_not_found,
        "attributes": {
            name: dict(sorted(counts.items()))
            for name, counts in sorted(comparison.by_attribute.items())
        },
        "differences": [
            {
                "customer_id": d.customer_id,
                "attribute": d.attribute,
                "outcome": str(d.outcome),
                "sent": d.sent,
                "stored": d.stored,
            }
            for d in comparison.differences
        ],
        "exit_code": exit_code,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(json.dumps(body, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def format_table(comparison: Comparison) -> str:
    """By attribute, counts only: no ids, no values (the JSON report has those)."""
    header = ["attribute", *(TABLE_HEADINGS[outcome] for outcome in Outcome)]
    rows = [header]
    for name, counts in sorted(comparison.by_attribute.items()):
        rows.append([name, *(str(counts.get(outcome, 0)) for outcome in Outcome)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    found = comparison.customers_checked - comparison.customers_not_found
    lines.append(
        f"{comparison.customers_checked} customers checked, {found} found, "
        f"{len(comparison.differences)} differences"
    )
    return "\n".join(lines)


TABLE_HEADINGS = {
    Outcome.MATCH: "match",
    Outcome.MISSING: "missing",
    Outcome.DIFFERENT_VALUE: "different value",
    Outcome.DIFFERENT_TYPE: "different type",
    Outcome.NOT_CLEARED: "not cleared",
}
