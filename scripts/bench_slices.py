"""Customer-hash slices: `--workers 1` against `--workers 2`, and the snapshot per slice.

`python -m scripts.bench_slices [--rows N] [--folder DIR]` prints, on one export (the
incremental-sync bench's night 2, 1% changed):
- plain `validate` and the changed-mode diff (`validate`, sync.mode changed, against a
  snapshot of night 1) at `--workers 1` and `--workers 2`, and the speed-up of 2 over 1
  (target: at least 1.6x on 2 cores). Beside the wall-clock ratio, which other work on the
  machine distorts, the CPU-seconds model: the CPU of `--workers 1` over that of the
  costlier slice of `--workers 2` (as the parent logs it), the wall-clock ratio two idle
  cores would give (at most 2), and a bound below it that counts all the parent's CPU (its
  imports and checks before the forks, its watch) as serial;
- the snapshot's memory in one slice of N = 4 (the peak of `validate --slice 0/4` in
  changed mode above the same command in mode all) against the same at N = 1 (target: at
  most a third).
The machine's load average is printed with the figures: they are only as quiet as it is.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

from importer.config import load_job, with_overrides
from importer.run.preflight import job_scope
from importer.run.slices import sliced_outputs
from importer.sandbox.launcher import launched
from importer.state import peek_snapshot
from scripts.bench_sync import build_snapshot, write_exports, write_job_file
from scripts.measure import Measured, run_measured

ROOT = Path(__file__).resolve().parent.parent


def measured(args: list[str]) -> Measured:
    argv = [sys.executable, "-m", "importer", *args, "--no-progress"]
    result = run_measured(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if result.exit_code not in (0, 1):
        raise SystemExit(f"bench_slices: {' '.join(args)} exited {result.exit_code}\n"
                         f"{result.stderr[-3000:]}")  # fmt: skip
    return result


def snapshots(job: Path, night_1: Path, slicings: list[str | None]) -> None:
    """A night-1 snapshot for each slicing (None: unsliced), each in its own state file."""
    state = load_job(str(job), need_credentials=False).output.state
    for stale in state.parent.glob(f"{state.stem}*"):
        stale.unlink()
    for slicing in slicings:
        print(f"bench_slices: snapshot {slicing or 'unsliced'} ...", flush=True)
        build_snapshot(job, night_1, slicing)


def slice_args(job: Path, night_2: Path, n: int) -> list[str]:
    """validate of slice 0 of n (n = 1: unsliced)."""
    sliced = [] if n == 1 else ["--slice", f"0/{n}"]
    return ["validate", str(job), "--input", str(night_2), *sliced]


def speed(job: Path, night_2: Path, workers: int) -> Measured:
    return measured(["validate", str(job), "--input", str(night_2), "--workers", str(workers)])


def slice_cpu(run: Measured) -> list[float]:
    """The CPU seconds of each slice of a `--workers` run, from the parent's last log line
    (`slices: 0/2 exit 0 (3.1 s CPU), ...`)."""
    return [float(found) for found in re.findall(r"exit -?\d+ \(([\d.]+) s CPU\)", run.stderr)]


def modelled(one: Measured, two: Measured) -> str:
    """CPU(--workers 1) over the CPU of the costlier slice of --workers 2 (the wall-clock
    ratio of two idle cores, at most 2), and the same with the parent's CPU added to the
    slice's (its start before the forks is as serial as --workers 1's own start)."""
    slices = slice_cpu(two)
    if not slices:
        return "n/a (no slice CPU in the log)"
    parent = max(two.cpu_seconds - sum(slices), 0.0)
    ratio = min(one.cpu_seconds / max(slices), 2.0)
    with_parent = min(one.cpu_seconds / (parent + max(slices)), 2.0)
    shown = " + ".join(f"{cpu:.1f}" for cpu in slices)
    return (
        f"slices {shown} s: modelled {ratio:.2f}x on 2 idle cores"
        f" ({with_parent:.2f}x counting the parent's {parent:.1f} s as serial)"
    )


def loaded_snapshot_mib(job_path: Path, slicing: str | None) -> float:
    """What the changed-mode diff holds of the snapshot once loaded (its key and fingerprint
    arrays and the seen flags), read from the slice's state file the way a run reads it:
    the snapshot's own share of a run's memory, which the peaks above drown in noise."""
    job = load_job(str(job_path), need_credentials=False, overrides={"slice": slicing})
    if job.slice is not None:
        job = with_overrides(job, {"output": sliced_outputs(job)}, need_credentials=False)
    keys, prints, _ = peek_snapshot(Path(job.output.state), job_scope(job))
    return (keys.nbytes + prints.nbytes + len(keys)) / 2**20


def _share(part: float, whole: float) -> str:
    """part / whole, or why not: below ~20 MiB a peak's noise hides the snapshot."""
    return f"{part / whole:.2f}" if whole >= 20 else "n/a (N = 1 under 20 MiB: noise)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "bench_sync")
    options = parser.parse_args()
    folder: Path = options.folder
    folder.mkdir(parents=True, exist_ok=True)
    night_1, night_2, _ = write_exports(folder, options.rows, 0.01)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with launched(["--port", "0", "--no-schema-check"], cwd=ROOT, env=env) as (_, url):
        changed = write_job_file(folder, url, "changed", night_1)
        plain = write_job_file(folder, url, "all", night_1)
        snapshots(changed, night_1, [None, "0/2", "1/2", "0/4"])
        loaded = {n: loaded_snapshot_mib(changed, None if n == 1 else "0/4") for n in (1, 4)}
        times = {
            (mode, workers): speed(job, night_2, workers)
            for mode, job in (("plain validate", plain), ("changed-mode diff", changed))
            for workers in (1, 2)
        }
        memory = {
            (mode, n): measured(slice_args(job, night_2, n))
            for mode, job in (("all", plain), ("changed", changed))
            for n in (1, 4)
        }
    print(f"\nslices, {options.rows:,} rows; load average {os.getloadavg()[0]:.2f} at the end")
    for mode in ("plain validate", "changed-mode diff"):
        one, two = times[(mode, 1)], times[(mode, 2)]
        print(
            f"  {mode:<20} --workers 1 {one.seconds:6.1f} s ({one.cpu_seconds:5.1f} s CPU),"
            f" --workers 2 {two.seconds:6.1f} s ({two.cpu_seconds:5.1f} s CPU):"
            f" {one.seconds / two.seconds:.2f}x (target >= 1.6x)"
        )
        print(
            f"    CPU seconds: --workers 1 {one.cpu_seconds:.1f} (its mapping threads kept"
            f" {one.cpu_seconds / one.seconds:.1f} cores busy); --workers 2 {modelled(one, two)}"
        )
    above = {n: memory[("changed", n)].peak_mib - memory[("all", n)].peak_mib for n in (1, 4)}
    print(
        f"  snapshot memory: N = 1 {above[1]:,.0f} MiB, one slice of N = 4 {above[4]:,.0f} MiB"
        f" ({_share(above[4], above[1])} of N = 1; target <= 0.33)"
    )
    print(
        f"  snapshot loaded by the diff: N = 1 {loaded[1]:,.1f} MiB, one slice of N = 4"
        f" {loaded[4]:,.1f} MiB ({loaded[4] / loaded[1]:.2f} of N = 1; target <= 0.33)"
    )
    for n in (1, 4):
        print(
            f"    peak N = {n}: all {memory[('all', n)].peak_mib:,.0f} MiB,"
            f" changed {memory[('changed', n)].peak_mib:,.0f} MiB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
