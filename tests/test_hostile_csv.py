"""Issue 24, CSV: memory independent of unmapped width; an over-long record is one row."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, USERS_MAPPING, job_dict, read_dead_letters, read_report, write_job

# Runs the CLI and prints its own peak memory (KiB) on stderr's last line, whatever the exit.
PEAK = (
    "import resource, runpy, sys\n"
    "sys.argv = ['moe-import', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('importer', run_name='__main__')\n"
    "finally:\n"
    "    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def _peak_kib(tmp_path: Path, columns: int) -> int:
    source = tmp_path / f"wide{columns}.csv"
    extra = [f"c{i}" for i in range(columns)]
    with source.open("w") as out:
        out.write(",".join(["user_id", "first_name", "points", *extra]) + "\n")
        for row in range(1, 41):
            out.write(",".join([f"u{row:05d}", f"name{row}", str(row), *("1" * columns)]) + "\n")
    job = write_job(
        tmp_path,
        job_dict(tmp_path, "http://127.0.0.1:9", source, USERS_MAPPING),
        f"j{columns}.yaml",
    )
    result = subprocess.run(
        [sys.executable, "-c", PEAK, "run", str(job), "--dry-run", "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"rows read +40\n", result.stdout), result.stdout
    return int(result.stderr.strip().splitlines()[-1])


@pytest.mark.subprocess
@pytest.mark.slow
def test_unmapped_columns_cost_no_memory_to_speak_of(tmp_path: Path) -> None:
    narrow = _peak_kib(tmp_path, 0)
    wide = _peak_kib(tmp_path, 40_000)  # 40k unmapped columns: about 1 GB more before
    assert wide - narrow < 150 * 1024, f"{(wide - narrow) / 1024:.0f} MB more for the width"


@pytest.mark.subprocess
def test_an_over_long_record_is_one_row_and_the_rest_keep_their_numbers(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    lines = ["user_id,first_name,points", "u00001,name1,1", f"u00002,{'x' * 3_000_000},2"]
    lines += [f"u{i:05d},name{i},{i}" for i in range(3, 8)]
    source.write_text("\n".join(lines) + "\n")
    job = write_job(tmp_path, job_dict(tmp_path, "http://127.0.0.1:9", source, USERS_MAPPING))
    result = subprocess.run(
        [sys.executable, "-m", "importer", "run", str(job), "--dry-run", "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    report = read_report(tmp_path, dry_run=True)
    assert report["rows_read"] == 7 and report["rows_invalid"] == 1, report
    [letter] = read_dead_letters(tmp_path, dry_run=True)  # a dry run writes only its own
    assert letter["row"] == 2 and "max_record_bytes" in letter["error"]
