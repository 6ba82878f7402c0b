"""Starts `python -m importer.sandbox` in a subprocess and reads its URL: for tests, demo, benches.

No pytest here: scripts/demo.py and the benches import it too.
"""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

# The first line `serve` prints (importer/sandbox/cli.py).
URL_LINE = re.compile(r"^sandbox listening on (http://127\.0\.0\.1:\d+) \(workspace (.*)\)$")
STARTUP_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 5.0


@contextmanager
def launched(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stderr: IO[str] | None = None,
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`python -m importer.sandbox --port 0 ARGS` in a subprocess: yields it and its URL,
    and stops it on exit. A sandbox that does not report its URL is a RuntimeError."""
    process = subprocess.Popen(
        [sys.executable, "-m", "importer.sandbox", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        cwd=cwd,
        env=None if env is None else dict(env),
    )
    try:
        yield process, _reported_url(process)
    finally:
        _stop_process(process)


def _reported_url(process: subprocess.Popen[str]) -> str:
    stdout = process.stdout
    assert stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    # readline has no timeout: a thread reads, the caller waits on the queue.
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=STARTUP_TIMEOUT_SECONDS)
    except queue.Empty:
        line = ""
    match = URL_LINE.match(line.strip())
    if match is None:
        _stop_process(process)
        raise RuntimeError(
            f"sandbox did not report its URL within {STARTUP_TIMEOUT_SECONDS:.0f} s "
            f"(exit code {process.returncode}, first line {line!r})"
        )
    return match.group(1)


def _stop_process(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
