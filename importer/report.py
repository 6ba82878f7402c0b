"""The run report: counts that add up, written as JSON and printed as a summary."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Exit codes, as the contract fixes them.
EXIT_OK = 0
EXIT_DEAD_LETTERED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3
EXIT_INTERRUPTED = 130

# A value follows ": " in a row's reason; the column name before it stays.
_QUOTED_VALUE = re.compile(r"""(: )(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


def reason_key(error: str) -> str:
    """An error with its values blanked, so rows broken the same way group together."""
    return "; ".join(_QUOTED_VALUE.sub(r"\1'…'", part) for part in error.split("; "))


@dataclass
class Report:
    rows_read: int = 0
    rows_accepted: int = 0
    rows_skipped: int = 0
    rows_invalid: int = 0
    rows_rejected: int = 0
    rows_failed: int = 0
    rows_pending: int = 0
    rows_skipped_dead_lettered: int = 0  # of rows_skipped: in the dead-letter file already
    requests: int = 0
    retries: int = 0
    http_429: int = 0
    elapsed_seconds: float = 0.0
    updates_per_minute: float = 0.0
    dead_letter: str | None = None
    exit_code: int = EXIT_OK
    dry_run: bool = False
    requests_planned: int = 0
    sources: list[str] = field(default_factory=list)
    state: str | None = None
    aborted: str | None = None
    invalid_reasons: dict[str, int] = field(default_factory=dict)
    status_counts: dict[str, int] = field(default_factory=dict)
    # Users a minute the API accepted after its first 429: the workspace's real limit.
    rate_settled_per_minute: float | None = None
    outage_seconds: float = 0.0  # time spent paused because the API answered no one
    rate_limited_wait_seconds: float = 0.0  # time every sender waited on 429s' Retry-After

    def settle_pending(self) -> None:
        """Whatever was read and not settled is pending; keeps the sum the contract states."""
        settled = (
            self.rows_accepted
            + self.rows_skipped
            + self.rows_invalid
            + self.rows_rejected
            + self.rows_failed
        )
        self.rows_pending = self.rows_read - settled

    @property
    def rows_dead_lettered(self) -> int:
        return self.rows_invalid + self.rows_rejected + self.rows_failed

    def finish_exit_code(self, interrupted: bool, input_error: bool = False) -> int:
        if interrupted:
            self.exit_code = EXIT_INTERRUPTED
        elif input_error:
            self.exit_code = EXIT_USAGE  # bad input, found before anything was sent
        elif self.aborted:
            self.exit_code = EXIT_ABORTED
        elif self.rows_dead_lettered or self.rows_skipped_dead_lettered:
            # Also on a resume: rows an earlier (perhaps killed) run dead-lettered still
            # need someone's attention.
            self.exit_code = EXIT_DEAD_LETTERED
        else:
            self.exit_code = EXIT_OK
        return self.exit_code

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)  # never leave a half-written report


def count_reasons(errors: Counter[str], error: str) -> None:
    errors[reason_key(error)] += 1


def format_summary(report: Report) -> str:
    """The human summary printed at the end of a run."""
    verb = "would send" if report.dry_run else "pending"
    lines = [
        "moe-import " + ("dry run (nothing sent)" if report.dry_run else "run") + " summary",
        f"  rows read       {report.rows_read:>10,}",
        f"  accepted        {report.rows_accepted:>10,}",
        f"  skipped         {report.rows_skipped:>10,}   (settled by an earlier run"
        + (
            f"; {report.rows_skipped_dead_lettered:,} of them dead-lettered)"
            if report.rows_skipped_dead_lettered
            else ")"
        ),
        f"  invalid         {report.rows_invalid:>10,}   (dead-letter, stage validation)",
        f"  rejected        {report.rows_rejected:>10,}   (dead-letter, stage rejected)",
        f"  failed          {report.rows_failed:>10,}   (dead-letter, stage delivery)",
        f"  {verb:<15} {report.rows_pending:>10,}",
    ]
    if report.dry_run:
        lines.append(f"  requests        {report.requests_planned:>10,}   (would be sent)")
    else:
        lines += [
            f"  requests        {report.requests:>10,}   ({report.retries:,} retries, "
            f"{report.http_429:,} answered 429)",
            f"  elapsed         {report.elapsed_seconds:>10.1f} s  "
            f"({report.updates_per_minute:,.0f} updates/minute)",
        ]
    if report.rate_settled_per_minute is not None:
        lines.append(
            f"  rate limited    the API answered 429 and the run settled at about "
            f"{report.rate_settled_per_minute:,.0f} updates/minute: set rate_limit to that "
            f"to avoid the 429s ({report.rate_limited_wait_seconds:,.1f} s paused on them)"
        )
    if report.outage_seconds:
        lines.append(
            f"  outage          {report.outage_seconds:,.1f} s paused: the API answered no one"
        )
    if (report.rows_dead_lettered or report.rows_skipped_dead_lettered) and report.dead_letter:
        lines.append(f"  dead letters    {report.dead_letter}")
    if report.aborted:
        lines.append(f"  aborted         {report.aborted}")
    lines.append(f"  exit code       {report.exit_code}")
    return "\n".join(lines)


def format_reasons(reasons: dict[str, int], top: int = 10) -> str:
    if not reasons:
        return ""
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:top]
    width = max(len(f"{count:,}") for _, count in ranked)
    lines = ["invalid rows by rule (top reasons):"]
    lines += [f"  {count:>{width},}  {reason}" for reason, count in ranked]
    return "\n".join(lines)
