"""The end-of-run notification: one JSON POST a scheduler or a Slack webhook can take.

It carries counts, the exit code and where the dead letters are: never a cell value, never
the API key. Notifying is best effort: a webhook that is down is logged and the run's exit
code stays what the run decided.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from importer.errors import EXIT_OK
from importer.outputs.report import ROW_OUTCOMES, Report

log = logging.getLogger("importer")

# The whole notification (connect, send, the answer) gets this long, however slowly a
# webhook trickles its answer: the run's exit never waits longer on it.
NOTIFY_TIMEOUT_SECONDS = 10.0
# Messages are cut to this length: enough to act on, short enough for a chat line.
MAX_MESSAGE_CHARS = 500
# A webhook's answer is read no further than this (it only has to say 2xx).
MAX_ANSWER_BYTES = 64 * 1024

COUNTS = ("rows_read", *ROW_OUTCOMES, "customers_deleted", "deletes_failed", "unsets_sent")


def status_of(exit_code: int) -> str:
    """success only when every row was accepted (or skipped): exit 1 needs someone's attention."""
    return "success" if exit_code == EXIT_OK else "failure"


def where(url: str) -> str:
    """A webhook URL as it may be logged: its path is often the secret (Slack, Teams)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


def payload(
    report: Report,
    job_name: str,
    *,
    report_path: str | None = None,
    error: str | None = None,
    secrets: Iterable[str] = (),
) -> dict[str, Any]:
    """The JSON body: counts and paths only; `error` and abort reasons are scrubbed of secrets."""
    status = status_of(report.exit_code)
    reason = error or report.aborted
    if reason:
        for secret in secrets:
            if secret:
                reason = reason.replace(secret, "***")
        reason = reason[:MAX_MESSAGE_CHARS]
    counts = {name: getattr(report, name, 0) for name in COUNTS}
    dead_lettered = report.rows_invalid + report.rows_rejected + report.rows_failed
    summary = (
        f"{report.rows_accepted:,} accepted, {dead_lettered:,} dead-lettered,"
        f" {report.rows_pending:,} pending of {report.rows_read:,} read"
        f" in {report.elapsed_seconds:,.1f} s"
    )
    shown = status
    if status == "success" and report.rows_invalid_tolerated:
        shown = f"ok with {report.rows_invalid_tolerated:,} invalid rows"
    text = f"moe-import {job_name}: {shown} (exit {report.exit_code}): {summary}"
    if dead_lettered and report.dead_letter:
        text += f"; dead letters in {report.dead_letter}"
    if reason:
        text += f"; {reason}"
    return {
        "text": text,  # what a Slack incoming webhook shows
        "job": job_name,
        "status": status,
        "exit_code": report.exit_code,
        "rows_invalid_tolerated": report.rows_invalid_tolerated,
        "run_id": getattr(report, "run_id", None),
        "dry_run": report.dry_run,
        "counts": counts,
        "requests": report.requests,
        "retries": report.retries,
        "http_429": report.http_429,
        "dead_letter": report.dead_letter,
        "report": report_path,
        "elapsed_seconds": report.elapsed_seconds,
        "error": reason,
        "host": socket.gethostname(),
    }


def notify(
    url: str,
    body: dict[str, Any],
    on: Iterable[str] = ("failure", "success"),
    timeout: float = NOTIFY_TIMEOUT_SECONDS,
) -> bool:
    """POST `body` as JSON if its status is one of `on`; True if the hook answered 2xx.

    `timeout` bounds the whole call, not each socket read: the POST runs in a daemon thread
    given up on (and left to the process's exit) once the deadline passes.
    """
    if body["status"] not in set(on):
        return False
    outcome: list[bool] = []
    worker = threading.Thread(
        target=lambda: outcome.append(_post(url, body, timeout)), name="notify", daemon=True
    )
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        log.warning(
            "notification to %s got no full answer within %s s: given up; the run's outcome stands",
            where(url),
            f"{timeout:g}",
        )
        return False
    return bool(outcome and outcome[0])


def _post(url: str, body: dict[str, Any], timeout: float) -> bool:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "moe-import"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(MAX_ANSWER_BYTES)
        return True
    except urllib.error.HTTPError as failure:
        log.warning(
            "notification to %s answered %s; the run's outcome stands", where(url), failure.code
        )
    except (urllib.error.URLError, OSError, ValueError) as failure:
        reason = getattr(failure, "reason", failure)
        log.warning("could not notify %s (%s); the run's outcome stands", where(url), reason)
    return False
