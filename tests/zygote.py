"""A process that has imported the CLI once and forks a child per `python -m importer` run.

Most of what an end-to-end test costs on this 2-core machine is the second of imports
(pandas, pyarrow, aiohttp, pydantic) each CLI process pays before it does anything; a
child forked from here starts with them done. Each child is what `python -m importer ARGS`
would be: its own working directory, environment (TMPDIR included) and stdout/stderr
files, `importer.cli.main` run and its code the exit status. `tests.support.run_cli` talks
to one zygote per test process, one run at a time (a second run at the same moment is a
plain subprocess).

Protocol, a JSON line each way: {"argv", "cwd", "env", "stdout", "stderr"} in; {"pid"} as
the child starts, then {"code"} (negative: killed by that signal, as subprocess says).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import importer.api
import importer.cli
import importer.run.command
import importer.sandbox.cli
from importer.quota import local


def _child(request: dict[str, Any]) -> int:
    """In the forked child: become `python -m importer ARGV` and run it."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # TMPDIR is the test's own (see conftest)
    local.DEFAULT_DIRECTORY = Path(tempfile.gettempdir()) / f"moe-import-quota-{os.getuid()}"
    stdin = os.open(os.devnull, os.O_RDONLY)
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for source, target in ((stdin, 0), (out, 1), (err, 2)):
        os.dup2(source, target)
        os.close(source)
    sys.argv = [importer.cli.__file__, *request["argv"]]
    try:
        code: Any = importer.cli.main(request["argv"])
    except SystemExit as stop:
        code = stop.code
    except BaseException:
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return int(code)


def _status_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def serve() -> None:
    replies = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        replies.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            # A normal exit, as `python -m importer` has: its threads joined, atexit run.
            sys.exit(_child(request))
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"code": _status_code(status)}) + "\n")
        replies.flush()


if __name__ == "__main__":
    serve()
