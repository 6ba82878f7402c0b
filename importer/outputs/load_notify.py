"""Notifying a run that never started: the job file could not be loaded (exit 2).

A cron job's likeliest failure is at load (a variable missing, a key misspelt), before a
`JobConfig` exists to say where to notify. The webhook is taken from the raw job file
(`output.notify`, a URL or `{url, on}`; `${NAME}` in it read from the environment) or from
`--notify`. The message names the job and the error's class only: never the error's text,
which may quote values from the file.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from importer.errors import EXIT_USAGE
from importer.outputs.notify import notify

log = logging.getLogger("importer")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def webhook_in(job_path: Path, env: Mapping[str, str]) -> tuple[str, list[str]] | None:
    """The webhook URL and its `on` list the job file names, if it can be read at all."""
    try:
        tree = yaml.safe_load(job_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    output = tree.get("output") if isinstance(tree, dict) else None
    hook = output.get("notify") if isinstance(output, dict) else None
    if isinstance(hook, str):
        hook = {"url": hook}
    if not isinstance(hook, dict) or not isinstance(hook.get("url"), str):
        return None
    url = _ENV_REF.sub(lambda match: env.get(match.group(1), "\0"), hook["url"])
    if "\0" in url or not url.startswith(("http://", "https://")):
        return None  # a variable it names is missing too, or not a URL: nowhere to post
    on = hook.get("on")
    kinds = [str(kind) for kind in on] if isinstance(on, list) else ["failure", "success"]
    return url, kinds


def load_failure_payload(job_name: str, error: BaseException) -> dict[str, Any]:
    """The JSON body: the job's name, exit 2 and the error's class; no values."""
    kind = type(error).__name__
    return {
        "text": f"moe-import {job_name}: failure (exit {EXIT_USAGE}): the job could not be "
        f"loaded ({kind}); nothing was read or sent",
        "job": job_name,
        "status": "failure",
        "exit_code": EXIT_USAGE,
        "run_id": None,
        "dry_run": False,
        "error": kind,
        "host": socket.gethostname(),
    }


def notify_load_failure(job_path: Path, error: BaseException, cli_url: str | None = None) -> bool:
    """POST the load failure to `--notify`'s URL or the job file's; True if it answered 2xx."""
    found = webhook_in(job_path, os.environ)
    if cli_url:
        url, on = cli_url, found[1] if found else ["failure", "success"]
    elif found:
        url, on = found
    else:
        return False
    return notify(url, load_failure_payload(job_path.stem, error), on)
