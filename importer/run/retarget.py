"""Whose lines a dead-letter file holds: `replay` sends only this job's lines for this job's
workspace (and project), unless `--retarget` says to send the others there too.

Every line is checked before anything is sent. A line names its job and target (lines
written before they did are taken as this job's, to this job's target).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from importer.outputs.deadletter import DeadLetter, DeadLetterError
from importer.state import Scope

log = logging.getLogger("importer")


def foreign_reason(letter: DeadLetter, scope: Scope) -> str | None:
    """Why the line is not this job's for this target (None: it is)."""
    if letter.job is None:
        return None  # written before lines carried their job: this job's
    if letter.job != scope.job:
        return f"job {letter.job}"
    target: dict[str, Any] = letter.target or {}
    ours = scope.target
    if target.get("workspace_id") != ours.get("workspace_id"):
        return f"workspace {target.get('workspace_id')}"
    if target.get("project_code") != ours.get("project_code"):
        return f"project {target.get('project_code')}"
    # Another URL or endpoint to the same workspace (a proxy, the one-user endpoint) is
    # the same place for the rows.
    return None


def check_origins(
    letters: Iterable[DeadLetter], scope: Scope, path: Path, *, retarget: bool
) -> int:
    """Refuse (exit 2) a file holding lines of another job or target, naming the counts by
    reason, unless `retarget`. Returns how many lines were of another job or target."""
    reasons = Counter(
        reason for letter in letters if (reason := foreign_reason(letter, scope)) is not None
    )
    if not reasons:
        return 0
    counts = ", ".join(
        f"{count:,} {'line' if count == 1 else 'lines'} of {reason}"
        for reason, count in reasons.most_common()
    )
    ours = f"job {scope.job or '(unnamed)'}, workspace {scope.target.get('workspace_id')}"
    if not retarget:
        raise DeadLetterError(
            f"{path} holds lines that are not this job's ({ours}): {counts}; nothing was sent."
            " Replay them with their own job file, or pass --retarget to send them to this"
            " job's workspace"
        )
    log.warning("--retarget: sending %s to this job's target (%s)", counts, ours)
    return sum(reasons.values())
