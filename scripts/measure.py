"""Measures one command by itself: wall time, CPU time, exit code and its own peak memory.

Why not `subprocess` plus `os.wait4`: a child's `ru_maxrss` includes what its parent held
when it was started (see peak_launcher.py), so this starts the command from a small
launcher process that holds no data and reports what the kernel says about the command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

LAUNCHER = Path(__file__).resolve().parent / "peak_launcher.py"
KIB_PER_MIB = 1024


@dataclass(frozen=True)
class Measured:
    """One run of one command, as the kernel accounted for it."""

    seconds: float
    exit_code: int
    peak_mib: float  # maximum resident set of the command after its exec (wait4)
    sampled_peak_mib: float | None  # the largest VmHWM read every 50 ms while it ran
    cpu_seconds: float
    stderr: str


def run_measured(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdout: Path | None = None,
) -> Measured:
    """Run `argv` in `cwd` and measure it; stdout goes to `stdout` (or nowhere)."""
    with tempfile.TemporaryDirectory(prefix="measure-") as scratch:
        stderr_path = Path(scratch) / "stderr"
        spec = {
            "argv": list(argv),
            "cwd": str(cwd),
            "env": dict(os.environ if env is None else env),
            "stdout": None if stdout is None else str(stdout),
            "stderr": str(stderr_path),
        }
        # -I -S: no site packages, no user paths, so the launcher stays about 10 MB.
        launched = subprocess.run(
            [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(spec)],
            capture_output=True,
            text=True,
            check=False,
        )
        if launched.returncode != 0:
            raise RuntimeError(f"the measuring launcher failed: {launched.stderr.strip()}")
        result = json.loads(launched.stdout)
        stderr = stderr_path.read_text(errors="replace") if stderr_path.exists() else ""
    sampled = result["sampled_peak_kib"]
    return Measured(
        seconds=result["seconds"],
        exit_code=result["exit_code"],
        peak_mib=result["peak_kib"] / KIB_PER_MIB,
        sampled_peak_mib=None if sampled is None else sampled / KIB_PER_MIB,
        cpu_seconds=result["cpu_seconds"],
        stderr=stderr,
    )
