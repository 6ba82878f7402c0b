"""The run report: counts that add up, written as JSON and printed as a summary."""

from __future__ import annotations

import errno
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from importer.exitcodes import (
    EXIT_ABORTED,
    EXIT_DEAD_LETTERED,
    EXIT_EMPTY,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
)

# Exit codes, as docs/REFERENCE.md ("Exit codes") gives them.
from importer.outputs.atomic import write_atomically

MAX_WARNINGS = 20  # the report stays small whatever the input
# The outcomes every row read ends in, exactly one each: they add up to rows_read.
SETTLED_OUTCOMES = (
    "rows_accepted",
    "rows_skipped",
    "rows_unchanged",
    "rows_invalid",
    "rows_rejected",
    "rows_failed",
    "rows_already_sent",
)
ROW_OUTCOMES = (*SETTLED_OUTCOMES, "rows_pending")

_QUOTED = r"""(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
# In a row's reason, a quoted literal after `column ` is the column's name (kept); any
# other quoted literal is a value, and a number may be one (a count, a length): blanked.
# A parenthesis (two levels deep at most) explains the rule ("expected ISO 8601
# (2024-03-01, ...)"): its numbers are the rule's own and stay; its quoted values do not.
_ASIDE = rf"\((?:[^()'\"]|{_QUOTED}|\((?:[^()'\"]|{_QUOTED})*\))*\)"
_REASON_TOKEN = re.compile(
    rf"(?P<column>column {_QUOTED})|(?P<aside>{_ASIDE})|{_QUOTED}|(?P<number>\d+)"
)
_VALUE = re.compile(_QUOTED)


def _blank(match: re.Match[str]) -> str:
    if match.group("column"):
        return match.group("column")
    if match.group("aside"):
        return _VALUE.sub("'…'", match.group("aside"))
    return "N" if match.group("number") else "'…'"


def reason_key(error: str) -> str:
    """An error grouped by column and rule: no cell value survives, so the report stays
    small however many distinct bad values the input holds (they live in the dead-letter
    file alone)."""
    return _REASON_TOKEN.sub(_blank, error)


@dataclass
class Report:
    rows_read: int = 0
    rows_accepted: int = 0
    rows_skipped: int = 0
    rows_invalid: int = 0
    rows_rejected: int = 0
    rows_failed: int = 0
    rows_pending: int = 0
    rows_unchanged: int = 0  # sync.mode changed: the element equals the last accepted one
    rows_already_sent: int = 0  # events the job's ledger holds as accepted before
    # Events accepted after a request of theirs got no answer (delivery.on_lost_answer
    # resend): MoEngage may hold them twice.
    events_possibly_duplicated: int = 0
    customers_absent: int = 0
    customers_deleted: int = 0  # sync.delete_absent: absent customers deleted (dry run: would be)
    deletes_failed: int = 0  # delete requests that failed (dead-letter, stage delete)
    unsets_sent: int = 0  # attributes cleared by on_empty: unset (dry run: would be)
    duplicate_customers: int = 0  # customers seen in more than one row of this run
    run_id: str | None = None
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
    # A limit below rate_limit that MoEngage's rate-limit headers gave (updates a minute)
    rate_limit_learned_per_minute: int | None = None
    outage_seconds: float = 0.0  # time spent paused because the API answered no one
    rate_limited_wait_seconds: float = 0.0  # time every sender waited on 429s' Retry-After
    warnings: list[str] = field(default_factory=list)  # never cell values
    dead_letter_previous: str | None = None  # where an earlier dead-letter file was kept
    replay_of: str | None = None  # replay: the dead-letter file whose rows were sent again
    # sync.mode changed with no snapshot of this target and mapping: every row is sent.
    first_sync: bool = False
    # Seconds the run spent held back, by what held it: rate_limit (our own limit),
    # http_429, outage, slow_answers (sampled once a second while sending).
    wait_seconds: dict[str, float] = field(default_factory=dict)
    # delivery.max_invalid_fraction, and the invalid rows a run exiting 0 tolerated under it.
    max_invalid_fraction: float = 0.0
    rows_invalid_tolerated: int = 0
    # A slice (`slice: K/N`): its K/N, and the input's rows of other slices (not in rows_read).
    slice: str | None = None
    other_slices_rows: int = 0

    def warn(self, warning: str) -> bool:
        """Keep a warning for the summary once; False if it was kept already (or too many)."""
        if warning in self.warnings or len(self.warnings) >= MAX_WARNINGS:
            return False
        self.warnings.append(warning)
        return True

    def mark_empty(self) -> None:
        """No data row was read: an export that failed upstream must not pass unnoticed."""
        self.warn("the input held no data rows (set source.allow_empty: true if that is expected)")
        if self.exit_code == EXIT_OK:
            self.exit_code = EXIT_EMPTY

    def close(self, elapsed: float, interrupted: bool, input_error: bool) -> None:
        """The run is over: its time, pace, pending rows and exit code."""
        self.elapsed_seconds = round(elapsed, 3)
        # Over at least a minute: a 4-second run's 5,000 updates are 5,000 in that minute,
        # not a pace of 75,000 a minute that no minute ever saw.
        minutes = max(elapsed, 60.0) / 60
        self.updates_per_minute = round(self.rows_accepted / minutes, 1)
        self.settle_pending()
        self.finish_exit_code(interrupted, input_error=input_error)

    def settle_pending(self) -> None:
        """Whatever was read and not settled is pending; keeps the sum docs/REFERENCE.md states."""
        self.rows_pending = self.rows_read - self.rows_settled

    @property
    def rows_settled(self) -> int:
        return sum(getattr(self, outcome) for outcome in SETTLED_OUTCOMES)

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
        elif self.invalid_tolerated() and not self.deletes_failed:
            self.exit_code = EXIT_OK
        elif self.rows_dead_lettered or self.rows_skipped_dead_lettered or self.deletes_failed:
            # Also on a resume: rows an earlier (perhaps killed) run dead-lettered still
            # need someone's attention.
            self.exit_code = EXIT_DEAD_LETTERED
        else:
            self.exit_code = EXIT_OK
        return self.exit_code

    def invalid_tolerated(self) -> bool:
        """Whether this run's only dead letters are invalid rows within max_invalid_fraction
        (nothing rejected, failed, nor dead-lettered by an earlier run); if so the
        count is kept in rows_invalid_tolerated and a warning says so."""
        if not self.rows_invalid or not self.rows_read:
            return False
        if self.rows_rejected or self.rows_failed or self.rows_skipped_dead_lettered:
            return False
        share = self.rows_invalid / self.rows_read
        if share > self.max_invalid_fraction:
            return False
        self.rows_invalid_tolerated = self.rows_invalid
        self.warn(
            f"ok with {self.rows_invalid:,} invalid rows ({share:.4%} of {self.rows_read:,} "
            f"read, within delivery.max_invalid_fraction {self.max_invalid_fraction:g}): "
            "exit 0; they are in the dead-letter file"
        )
        return True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2) + "\n").encode()

    def write(self, path: Path) -> None:
        """Atomically, mode 0600, never through a symlink (OSError naming the path)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = report_tmp(path)
        for refused in (path, tmp):
            if refused.is_symlink():
                raise OSError(
                    errno.ELOOP, "is a symbolic link; refusing to write through it", str(refused)
                )
        write_atomically(path, self.to_json(), mode=0o600, tmp=tmp)  # never a half-written


def dry_run_report_path(path: Path) -> Path:
    """Where a dry run writes its report: `X.dry-run.json` beside the real `X.json`."""
    return path.with_name(f"{path.stem}.dry-run{path.suffix}")


def report_tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def count_reasons(errors: Counter[str], error: str) -> None:
    errors[reason_key(error)] += 1


def _pace(report: Report) -> str:
    # Counted over at least a minute (see Report.close): under one, the rate would mislead.
    if report.elapsed_seconds < 60:
        return f"{report.rows_accepted:,} updates in under a minute"
    return f"{report.updates_per_minute:,.0f} updates/minute"


def format_summary(report: Report) -> str:
    """The human summary printed at the end of a run."""
    lines = [*_row_lines(report), *_request_lines(report), *_pause_lines(report)]
    lines += _note_lines(report)
    lines.append(f"  exit code       {report.exit_code}")
    return "\n".join(lines)


def _row_lines(report: Report) -> list[str]:
    """The title, then where every row read ended."""
    verb = "would send" if report.dry_run else "pending"
    command = "replay" if report.replay_of else "run"
    return [
        "moe-import "
        + (f"{command} dry run (nothing sent)" if report.dry_run else command)
        + " summary",
        *([f"  replay of       {report.replay_of}"] if report.replay_of else []),
        f"  rows read       {report.rows_read:>10,}",
        f"  accepted        {report.rows_accepted:>10,}",
        f"  skipped         {report.rows_skipped:>10,}   (settled by an earlier run"
        + (
            f"; {report.rows_skipped_dead_lettered:,} of them dead-lettered)"
            if report.rows_skipped_dead_lettered
            else ")"
        ),
        *(
            [f"  unchanged       {report.rows_unchanged:>10,}   (same as last accepted)"]
            if report.rows_unchanged
            else []
        ),
        *(
            [f"  already sent    {report.rows_already_sent:>10,}   (events accepted before)"]
            if report.rows_already_sent
            else []
        ),
        f"  invalid         {report.rows_invalid:>10,}   (dead-letter, stage validation)",
        f"  rejected        {report.rows_rejected:>10,}   (dead-letter, stage rejected)",
        f"  failed          {report.rows_failed:>10,}   (dead-letter, stage delivery)",
        f"  {verb:<15} {report.rows_pending:>10,}",
        *(
            [
                f"  events possibly duplicated {report.events_possibly_duplicated:,}"
                " (accepted after a lost answer: delivery.on_lost_answer resend)"
            ]
            if report.events_possibly_duplicated
            else []
        ),
    ]


def _request_lines(report: Report) -> list[str]:
    if report.dry_run:
        return [f"  requests        {report.requests_planned:>10,}   (would be sent)"]
    return [
        f"  requests        {report.requests:>10,}   ({report.retries:,} retries, "
        f"{report.http_429:,} answered 429)",
        f"  elapsed         {report.elapsed_seconds:>10.1f} s  ({_pace(report)})",
    ]


def _pause_lines(report: Report) -> list[str]:
    """What held the run back: 429s, an outage, other waits."""
    lines = []
    if report.rate_settled_per_minute is not None:
        lines.append(
            f"  rate limited    the API answered 429 and the run settled at about "
            f"{report.rate_settled_per_minute:,.0f} updates/minute: set rate_limit to that "
            f"to avoid the 429s ({report.rate_limited_wait_seconds:,.1f} s paused on them)"
        )
    if report.rate_limit_learned_per_minute is not None:
        lines.append(
            f"  limit learnt    MoEngage's rate-limit headers say "
            f"{report.rate_limit_learned_per_minute:,} updates/minute; the run paced under it"
        )
    if report.outage_seconds:
        lines.append(
            f"  outage          {report.outage_seconds:,.1f} s paused: the API answered no one"
        )
    waits = format_waits(report.wait_seconds)
    if waits:
        lines.append(f"  waited on       {waits}")
    return lines


def _note_lines(report: Report) -> list[str]:
    """Customers absent or repeated, the dead-letter files, the abort and the warnings."""
    lines = []
    if report.customers_absent:
        lines.append(
            f"  absent          {report.customers_absent:>10,}   (customers in the snapshot"
            " this input did not hold)"
        )
    lines += _delete_lines(report)
    if report.duplicate_customers:
        lines.append(
            f"  duplicates      {report.duplicate_customers:>10,}   (customers in more than one"
            " row; sent in file order)"
        )
    if (report.rows_dead_lettered or report.rows_skipped_dead_lettered) and report.dead_letter:
        lines.append(f"  dead letters    {report.dead_letter}")
    if report.dead_letter_previous:
        lines.append(f"  earlier letters {report.dead_letter_previous}   (kept, renamed)")
    if report.aborted:
        lines.append(f"  aborted         {report.aborted}")
    lines += [f"  warning         {warning}" for warning in report.warnings]
    return lines


def _delete_lines(report: Report) -> list[str]:
    """Attributes cleared and customers deleted (on_empty: unset, sync.delete_absent)."""
    lines = []
    if report.unsets_sent:
        verb = "would clear" if report.dry_run else "cleared"
        lines.append(f"  unsets          {report.unsets_sent:>10,}   (attributes {verb})")
    if report.customers_deleted:
        verb = "would be deleted" if report.dry_run else "deleted in MoEngage"
        deleted = report.customers_deleted
        lines.append(f"  deleted         {deleted:>10,}   (absent customers {verb})")
    if report.deletes_failed:
        lines.append(
            f"  deletes failed  {report.deletes_failed:>10,}   (dead-letter, stage delete)"
        )
    return lines


# How each kind of wait is named in the summary and on progress lines.
WAIT_NAMES = {
    "rate_limit": "the rate limit",
    "http_429": "429s",
    "outage": "an outage",
    "slow_answers": "slow answers",
}


def format_waits(waits: dict[str, float]) -> str:
    """`429s 31 s, the rate limit 12 s`: the longest first; waits under a second left out."""
    shown = sorted(((s, k) for k, s in waits.items() if s >= 1), reverse=True)
    return ", ".join(f"{WAIT_NAMES.get(kind, kind)} {seconds:,.0f} s" for seconds, kind in shown)


def format_reasons(reasons: dict[str, int], top: int = 10) -> str:
    if not reasons:
        return ""
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:top]
    width = max(len(f"{count:,}") for _, count in ranked)
    lines = ["invalid rows by rule (top reasons):"]
    lines += [f"  {count:>{width},}  {reason}" for reason, count in ranked]
    return "\n".join(lines)
