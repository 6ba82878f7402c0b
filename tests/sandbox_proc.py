"""Runs the sandbox server in a subprocess for tests, and reads what it recorded."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 5.0
URL_LINE = re.compile(r"^sandbox listening on (http://127\.0\.0\.1:\d+) \(workspace (.*)\)$")


@dataclass
class SandboxProcess:
    process: subprocess.Popen[str]
    url: str
    record_path: Path
    arrivals_path: Path
    stderr_path: Path

    def records(self) -> list[dict[str, Any]]:
        """Accepted users so far (the server flushes after each request)."""
        return read_json_lines(self.record_path)

    def arrivals(self) -> list[dict[str, Any]]:
        """Every request so far: t, path, users, bytes, status, dropped."""
        return read_json_lines(self.arrivals_path)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_sandbox/stats", timeout=5) as response:
            return orjson.loads(response.read())

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Complete lines only: a line still being written is left for the next read."""
    if not path.exists():
        return []
    return [
        orjson.loads(line)
        for line in path.read_bytes().splitlines(keepends=True)
        if line.endswith(b"\n")
    ]


@contextmanager
def start_sandbox(tmp_path: Path, *extra_args: str) -> Iterator[SandboxProcess]:
    """Start `python -m importer.sandbox --port 0` recording into tmp_path; stop it on exit."""
    record_path = tmp_path / "record.jsonl"
    arrivals_path = tmp_path / "arrivals.jsonl"
    stderr_path = tmp_path / "sandbox.stderr"
    command = [
        sys.executable, "-m", "importer.sandbox", "--port", "0",
        "--record", str(record_path), "--arrivals", str(arrivals_path), *extra_args,
    ]  # fmt: skip
    # The subprocess imports `importer` from this checkout, installed or not.
    python_path = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=REPO_ROOT
        )
    try:
        url = _wait_for_url(process, stderr_path)
        yield SandboxProcess(process, url, record_path, arrivals_path, stderr_path)
    finally:
        _stop(process)


def _wait_for_url(process: subprocess.Popen[str], stderr_path: Path) -> str:
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_first_line, args=(process.stdout, lines), daemon=True).start()
    try:
        line = lines.get(timeout=STARTUP_TIMEOUT_SECONDS)
    except queue.Empty:
        line = ""
    match = URL_LINE.match(line.strip())
    if match is None:
        _stop(process)
        raise RuntimeError(
            f"sandbox did not report its URL within {STARTUP_TIMEOUT_SECONDS:.0f} s "
            f"(exit code {process.returncode}, first line {line!r}); stderr:\n"
            + stderr_path.read_text(errors="replace")
        )
    return match.group(1)


def _first_line(stream: IO[str], lines: queue.Queue[str]) -> None:
    lines.put(stream.readline())


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def max_in_any_window(
    arrivals: Iterable[dict[str, Any]], period: float, statuses: Iterable[int | None] | None = None
) -> int:
    """The most users that arrived within any `period` seconds, however the window is placed.

    A window is half-open, [t, t + period), as the sandbox counts it: a request exactly
    `period` seconds after another falls in the next window. With `statuses`, only arrivals
    answered with one of them count (None is a cut connection).
    """
    wanted = None if statuses is None else set(statuses)
    points = sorted(
        (float(a["t"]), int(a["users"]))
        for a in arrivals
        if wanted is None or a.get("status") in wanted
    )
    best = in_window = start = 0
    # Sweep: each window starting at an arrival; the front moves forward as the start does.
    for end_time, users in points:
        in_window += users
        while points[start][0] <= end_time - period:
            in_window -= points[start][1]
            start += 1
        best = max(best, in_window)
    return best
