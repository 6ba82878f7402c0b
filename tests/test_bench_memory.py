"""The benchmark's measure of a command: its own peak memory, whatever its parent holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.measure import run_measured

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20
# `bytes * n` writes every page, so all 200 MiB are resident; the sleep lets the 50 ms
# sampler see the peak too. -S keeps the interpreter's own share to a few MiB.
ALLOCATE_200_MIB = "import time; block = b'x' * (200 * 2**20); time.sleep(0.3)"


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_child_reports_its_own_200_mib_from_a_parent_holding_1_gib() -> None:
    ballast = b"x" * (1024 * MIB)
    command = [sys.executable, "-S", "-c", ALLOCATE_200_MIB]

    # The set-up reproduces the artifact: wait4 straight from this parent sees its 1 GiB.
    naive = subprocess.Popen(command)
    _, _, usage = os.wait4(naive.pid, 0)
    assert usage.ru_maxrss / 1024 >= 1000, "the parent's 1 GiB did not show: test set-up broken"

    measured = run_measured(command, cwd=ROOT)

    assert len(ballast) == 1024 * MIB
    assert measured.exit_code == 0, measured.stderr
    assert 180 <= measured.peak_mib <= 220, measured
    assert measured.sampled_peak_mib is not None
    assert 180 <= measured.sampled_peak_mib <= 220, measured


@pytest.mark.subprocess
def test_exit_code_stderr_stdout_and_time_come_back(tmp_path: Path) -> None:
    script = "import sys, time; time.sleep(0.4); print('out'); sys.exit('failed: named')"
    stdout = tmp_path / "stdout.txt"

    measured = run_measured([sys.executable, "-c", script], cwd=tmp_path, stdout=stdout)

    assert measured.exit_code == 1
    assert "failed: named" in measured.stderr
    assert stdout.read_text() == "out\n"
    assert 0.4 <= measured.seconds < 10
    assert measured.cpu_seconds < measured.seconds


@pytest.mark.subprocess
def test_a_command_that_cannot_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="launcher failed"):
        run_measured([str(tmp_path / "no-such-program")], cwd=tmp_path)
